"""Ground-truth files of the synthetic cohorts: one layout for every organ.

A cohort folder holds the meshes (`NAME.ply`, file frame), `truth/NAME.npz` (`domain` (V, 3),
`vertices_domain` (V, 3), `faces` (F, 3), `region` (V,)) and, written last, `truth.json`, whose
`generator` names the module that wrote it and whose `shapes` holds one record per mesh
(`volume_ml`, `long_axis_mm`, `pose`, `params`, `n_vertices`, `mesh`, `truth`, ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from shapeatlas.errors import ShapeAtlasError

#: Arrays stored per shape in truth/NAME.npz.
TRUTH_ARRAYS = ("domain", "vertices_domain", "faces", "region")


@dataclass(frozen=True, kw_only=True)
class ShapeTruth:
    """Ground truth of one cohort shape; each organ's subclass adds its `params`.

    domain: (V, 3) unit domain coordinates of the mesh's vertices.
    vertices_domain: (V, 3) vertices in the domain frame (mm).
    faces: (F, 3) the mesh's triangles. region: (V,) region codes (organ-specific).
    pose: (4, 4) domain frame -> file frame.
    """

    name: str
    mesh_path: Path
    volume_ml: float
    long_axis_mm: float
    n_vertices: int
    pose: np.ndarray
    domain: np.ndarray
    vertices_domain: np.ndarray
    faces: np.ndarray
    region: np.ndarray

    @property
    def vertices_file(self) -> np.ndarray:
        """(V, 3) the mesh's vertices in its file frame (pose applied)."""
        return self.vertices_domain @ self.pose[:3, :3].T + self.pose[:3, 3]


T = TypeVar("T", bound=ShapeTruth)


def read_cohort_truth(directory: str | Path, *, generator: str, writer: str, organ: str,
                      build: Callable[[dict[str, Any], dict[str, Any]], T]) -> dict[str, T]:
    """Read a cohort written by `generator`: shape name -> `build(fields, record)`, name order.

    `fields` holds the `ShapeTruth` fields (arrays loaded, record values converted); `record`
    is the shape's raw truth.json record, for the organ's own fields.
    """
    directory = Path(directory)
    index = directory / "truth.json"
    if not index.is_file():
        raise ShapeAtlasError(f"{index}: no such file; is {directory} a cohort written by "
                              f"{writer} (it writes truth.json last)?")
    try:
        meta = json.loads(index.read_text())
    except ValueError as exc:
        raise ShapeAtlasError(f"{index}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("generator") != generator:
        found = meta.get("generator") if isinstance(meta, dict) else None
        raise ShapeAtlasError(f"{index}: not a synthetic {organ} truth file "
                              f"(generator {found!r})")
    out = {}
    for name in sorted(meta.get("shapes", {})):
        rec = meta["shapes"][name]
        try:
            npz_path = directory / rec["truth"]
            if not npz_path.is_file():
                raise ShapeAtlasError(f"{npz_path}: missing ground truth for {name}")
            with np.load(npz_path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in TRUTH_ARRAYS}
            fields = dict(name=name, mesh_path=directory / rec["mesh"],
                          volume_ml=float(rec["volume_ml"]),
                          long_axis_mm=float(rec["long_axis_mm"]),
                          n_vertices=int(rec["n_vertices"]),
                          pose=np.asarray(rec["pose"], dtype=np.float64), **arrays)
            out[name] = build(fields, rec)
        except (KeyError, TypeError, ValueError) as exc:
            raise ShapeAtlasError(f"{index}: the record of {name} is incomplete or malformed "
                                  f"({type(exc).__name__}: {exc})") from exc
    return out
