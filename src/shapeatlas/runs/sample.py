"""`shapeatlas sample`: virtual cohorts on disk.

Samples live in the run's aligned (groomed) frame, in mm, with the atlas faces. They are
decoded and written in blocks, so a cohort larger than memory streams to disk; every file is
written atomically and `samples.json` is written last.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from shapeatlas.atomic import write_text_atomic
from shapeatlas.errors import MeshError, ShapeAtlasError
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.io import write_mesh
from shapeatlas.mesh.validity import mesh_validity
from shapeatlas.mesh.volume import Tetrahedralizer, require_mesher, write_vtu
from shapeatlas.models.generative import latent_sizes
from shapeatlas.outputs import check_output, staged_output
from shapeatlas.runs.load import model_device, open_run

log = logging.getLogger(__name__)


#: Samples decoded, checked and written at a time (bounds memory for very large cohorts).
SAMPLE_BLOCK = 500


#: The file formats of the shapes (every format `mesh.io.write_mesh` writes).
FORMATS = ("ply", "vtk", "vtp", "obj", "stl")


def sample_validity(model, vertices: np.ndarray,
                    progress: Callable[[int], None] | None = None) -> list[dict]:
    """Volume and validity flags of shapes with the model's atlas faces. (S, K, 3) -> S dicts.

    Each dict: volume_ml, valid, problems and the counts of `Validity.as_dict` (watertight,
    self_intersecting_faces, inverted_faces against the atlas, boundary/non-manifold/misoriented
    edges, non-manifold vertices, degenerate faces). progress(1) after each shape."""
    faces = np.asarray(model.atlas_faces_)
    vols = model.sample_volumes(vertices)
    rows = []
    for v, vol in zip(vertices, vols):
        ok = mesh_validity(v, faces, reference=model.atlas_vertices_)
        extra = {k: x for k, x in ok.as_dict().items() if k not in ("valid", "signed_volume")}
        rows.append({"volume_ml": round(float(vol), 4), "watertight": ok.watertight,
                     "self_intersecting_faces": ok.n_self_intersecting,
                     "inverted_faces": ok.n_inverted,
                     "valid": bool(ok.valid and vol > 0), **extra})
        if progress:
            progress(1)
    return rows


def sample_run(run_dir: str | Path, out_dir: str | Path, *, n: int, seed: int = 0,
               fmt: Literal["ply", "vtk", "vtp", "obj", "stl"] = "ply", traverse: int = 0,
               traverse_steps: int = 5, relax: int | None = None, device: str = "auto",
               overwrite: bool = False, volume_mesh: bool = False,
               progress: Callable[[int], None] | None = None) -> dict:
    """Write n virtual shapes (NAME.FMT) and `samples.json` into out_dir; returns the summary.

    Every shape is checked (`mesh_validity`) and written even when it fails; its row in
    samples.json says why. volume_mesh: also write a tetrahedral mesh of each shape (NAME.vtu)
    with the optional mesher TetGen (AGPL; `pip install 'shapeatlas[volume]'`); a shape the
    mesher refuses gets no .vtu, `volume_mesh: false` and the mesher's reason in its row.

    out_dir must be new or empty unless `overwrite` (then it is replaced whole); it is built
    beside it and moved into place at the end (`shapeatlas.outputs`).

    traverse: also write shapes along the first `traverse` latent directions into
    out_dir/traverse/ (dir{r}_step{s}.FMT, from -2 to +2 sd).
    relax: tangential relaxation steps (None: the run's `generator.relax`; 0: raw decoder output).
    """

    if fmt not in FORMATS:
        raise ShapeAtlasError(f"format must be one of {FORMATS}, got {fmt!r}")
    if n < 1:
        raise ShapeAtlasError(f"the number of samples must be at least 1, got {n}")

    if volume_mesh:

        require_mesher("volume_mesh=True")
    check_output(out_dir, overwrite=overwrite, inputs=[run_dir])
    model = open_run(run_dir, device=device, generator=True)
    with staged_output(out_dir, verb="sample", overwrite=overwrite, inputs=[run_dir],
                       device=model_device(model)) as staging:
        return _sample_into(model, run_dir, staging.path, n=n, seed=seed, fmt=fmt,
                            traverse=traverse, traverse_steps=traverse_steps, relax=relax,
                            volume_mesh=volume_mesh, progress=progress)


def _sample_into(model, run_dir: str | Path, out_dir: Path, *, n: int, seed: int, fmt: str,
                 traverse: int, traverse_steps: int, relax: int | None,
                 progress: Callable[[int], None] | None, volume_mesh: bool = False,
                 mesher=None) -> dict:
    """`sample_run`'s work, in the staging folder `out_dir`."""

    if volume_mesh and mesher is None:  # one mesher process for the whole cohort

        with Tetrahedralizer() as mesher:
            return _sample_into(model, run_dir, out_dir, n=n, seed=seed, fmt=fmt,
                                traverse=traverse, traverse_steps=traverse_steps, relax=relax,
                                progress=progress, volume_mesh=True, mesher=mesher)

    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    z_all, c_all = model.sample_codes(n, rng)  # (n, D), (n,): small even for millions
    t_latent = time.perf_counter() - t0
    t_decode = t_check = t_write = t_tet = 0.0
    rows = []
    for start in range(0, n, SAMPLE_BLOCK):
        z = z_all[start:start + SAMPLE_BLOCK]
        cl = None if c_all is None else c_all[start:start + SAMPLE_BLOCK]
        t = time.perf_counter()
        decoded = model.decode(z, relax=relax, cluster=cl, progress=progress)  # per shape
        verts = decoded.vertices
        moved = decoded.projection or [None] * len(verts)
        t_decode += time.perf_counter() - t
        t = time.perf_counter()
        checks = sample_validity(model, verts)
        t_check += time.perf_counter() - t
        t = time.perf_counter()
        for k, (v, c, p) in enumerate(zip(verts, checks, moved)):
            name = f"sample_{start + k:05d}"
            write_mesh(Mesh(v, model.atlas_faces_, name=name), out_dir / f"{name}.{fmt}")
            rows.append({"name": name, "file": f"{name}.{fmt}",
                         **({} if cl is None else {"cluster": int(cl[k])}),
                         "latent": [round(float(x), 6) for x in z[k]], **c,
                         **({} if p is None else {"projection": p.as_dict()})})
        t_write += time.perf_counter() - t
        if mesher is not None:
            t = time.perf_counter()
            for row, v in zip(rows[start:], verts):
                row.update(_volume_mesh(mesher, Mesh(v, model.atlas_faces_, name=row["name"]),
                                        out_dir / f"{row['name']}.vtu"))
            t_tet += time.perf_counter() - t
    if traverse:
        tdir = out_dir / "traverse"
        tdir.mkdir(exist_ok=True)
        for r, s in model.traverse(directions=traverse, steps=traverse_steps).items():
            for j, v in enumerate(s.vertices):
                write_mesh(Mesh(v, model.atlas_faces_, name=f"dir{r}_step{j}"),
                           tdir / f"dir{r}_step{j}.{fmt}")
    valid = [r["valid"] for r in rows]
    vols = np.array([r["volume_ml"] for r in rows])
    summary = {
        "format": "shapeatlas-samples", "run": str(Path(run_dir).resolve()), "n": n, "seed": seed,
        "file_format": fmt, "frame": "the run's aligned (groomed) frame, mm",
        "generator": model.generator_.kind, **latent_sizes(model.generator_),
        "relax_steps": model.config.relax_steps if relax is None else relax,
        "seconds": {"sampling": t_latent + t_decode, "validity": t_check, "writing": t_write,
                    **({} if mesher is None else {"volume_meshing": t_tet})},
        "valid_share": float(np.mean(valid)),
        "n_invalid": int(n - sum(valid)),
        "n_projected": sum(bool(r.get("projection", {}).get("changed_vertices")) for r in rows),
        "volume_mesh": None if mesher is None else {
            "mesher": "TetGen", "meshed": sum(r["volume_mesh"] for r in rows),
            "refused": sum(not r["volume_mesh"] for r in rows)},
        "volume_ml": {"mean": float(vols.mean()), "sd": float(vols.std(ddof=1)) if n > 1 else 0.0},
        "traverse_directions": traverse,
        "samples": rows,
    }
    write_text_atomic(out_dir / "samples.json", json.dumps(summary, indent=1) + "\n")
    return summary


def _volume_mesh(mesher, mesh: Mesh, path: Path) -> dict:
    """Tetrahedralise one shape into `path` (.vtu) -> its samples.json fields."""

    try:
        points, tets = mesher(mesh)
    except MeshError as exc:
        log.info("no volume mesh for %s", exc)
        return {"volume_mesh": False, "volume_mesh_reason": exc.problem}
    write_vtu(path, points, tets)
    return {"volume_mesh": True, "volume_mesh_file": path.name, "tetrahedra": int(len(tets))}
