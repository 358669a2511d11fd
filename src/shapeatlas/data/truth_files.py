"""Ground-truth files of the synthetic cohorts: one layout for every organ.

A cohort folder holds the meshes (`NAME.ply`, file frame), `truth/NAME.npz` (`domain` (V, 3),
`vertices_domain` (V, 3), `faces` (F, 3), `region` (V,)) and, written last, `truth.json`, whose
`generator` names the module that wrote it and whose `shapes` holds one record per mesh
(`volume_ml`, `long_axis_mm`, `pose`, `params`, `n_vertices`, `mesh`, `truth`, ...). Both
generators write them with `write_shape_truth` and `write_cohort_index`, and read them with
`read_cohort_truth`.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

import numpy as np

from shapeatlas import validate
from shapeatlas.atomic import write_npz_atomic, write_text_atomic
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.ply import write_ply

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

    #: Domain axis (0: x, 1: y, 2: z) along the organ's long axis.
    LONG_AXIS: ClassVar[int]

    def surface(self, domain_points: np.ndarray) -> np.ndarray:
        """The organ's shape map at domain points: (K, 3) unit vectors -> (K, 3) mm, domain
        frame (each subclass evaluates its own generator's map with its `params`)."""
        raise NotImplementedError

    @property
    def vertices_file(self) -> np.ndarray:
        """(V, 3) the mesh's vertices in its file frame (pose applied)."""
        return self.vertices_domain @ self.pose[:3, :3].T + self.pose[:3, 3]


T = TypeVar("T", bound=ShapeTruth)

#: How `pose` maps the domain frame to the file frame, written into every truth.json.
POSE_CONVENTION = "4x4 homogeneous; file vertices = pose @ [vertices_domain, 1]"


def cohort_vertex_range(n: int, n_vertices: tuple[int, int], min_vertices: int) -> tuple[int, int]:
    """Check a cohort writer's shape count `n` and vertex-count range; -> (lo, hi) as ints."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    lo, hi = (int(v) for v in n_vertices)
    if not min_vertices <= lo <= hi:
        raise ValueError(f"n_vertices must be a range (lo, hi) with {min_vertices} <= lo <= hi, "
                         f"got {n_vertices}")
    return lo, hi


def write_shape_truth(out_dir: Path, name: str, *, domain: np.ndarray,
                      vertices_domain: np.ndarray, faces: np.ndarray, region: np.ndarray,
                      pose: np.ndarray, head: dict[str, Any],
                      params: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Write one shape: `NAME.ply` (file frame, no point data) and `truth/NAME.npz`.

    domain, vertices_domain: (V, 3); faces: (F, 3); region: (V,); pose: (4, 4).
    -> (mesh path, its truth.json record: the organ's `head` fields, then pose, params,
    n_vertices, mesh and truth).
    """
    mesh = Mesh(vertices_domain, faces, name=name).transformed(pose)
    path = write_ply(out_dir / f"{name}.ply", mesh.vertices, mesh.faces)
    write_npz_atomic(out_dir / "truth" / f"{name}.npz", {
        "domain": domain, "vertices_domain": vertices_domain, "faces": faces, "region": region})
    return path, {**head, "pose": pose.tolist(), "params": params,
                  "n_vertices": int(len(domain)), "mesh": f"{name}.ply",
                  "truth": f"truth/{name}.npz"}


def write_cohort_index(out_dir: Path, *, head: dict[str, Any], tail: dict[str, Any],
                       shapes: dict[str, Any]) -> None:
    """Write `truth.json` last (atomically): the organ's `head` fields (generator, version,
    seed, ...), the units and pose convention, its `tail` fields (domain, ...), the records."""
    meta = {**head, "units": {"length": "mm", "volume": "mL"},
            "pose_convention": POSE_CONVENTION, **tail, "shapes": shapes}
    write_text_atomic(out_dir / "truth.json", json.dumps(meta, indent=1) + "\n")


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
    meta = validate.read_json(index)
    if not isinstance(meta, dict) or meta.get("generator") != generator:
        found = meta.get("generator") if isinstance(meta, dict) else None
        raise ShapeAtlasError(f"{index}: not a synthetic {organ} truth file "
                              f"(generator {found!r})")
    shapes = validate.mapping(meta.get("shapes", {}), index, "shapes")
    out = {}
    for name in sorted(shapes):
        rec = validate.mapping(shapes[name], index, f"shapes.{name}")
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
        except (KeyError, TypeError, ValueError, OverflowError, OSError, zipfile.BadZipFile) as exc:
            raise ShapeAtlasError(f"{index}: the record of {name} is incomplete or malformed "
                                  f"({type(exc).__name__}: {exc})") from exc
    return out
