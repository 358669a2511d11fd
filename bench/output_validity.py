"""Benchmark: are the shapes a fitted run writes ready for simulation?

For a finished run and a folder of held-out test meshes, this measures, with and without the
projection onto valid meshes (`shapeatlas.mesh.projection`):

- virtual shapes (`model.sample`): the package's mesh check, TetGen's acceptance, the volume
  distribution (mean, sd, KS against the test meshes' volumes), the specificity (mean distance of
  each sample to its nearest test shape, vertex to vertex after correspondence), how many
  vertices the projection moved and how far, and the time it took;
- correspondences (`model.correspond`) and reconstructions (`model.reconstruct`) of the test
  meshes: the mesh check and TetGen's acceptance.

Usage:
    python bench/output_validity.py RUN TEST_DIR [--n 200] [--seed 0] --json OUT.json

The figures go to `--json`, with the commit and machine under "provenance". TetGen is the
optional `tetgen` package (`pip install 'shapeatlas[volume]'`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from common import write_json
from scipy.stats import ks_2samp

from shapeatlas.errors import MeshError
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.groom import load_manifest
from shapeatlas.mesh.io import read_mesh
from shapeatlas.mesh.validity import mesh_validity
from shapeatlas.mesh.volume import Tetrahedralizer
from shapeatlas.runs.load import load_model


def accepted(mesher, v: np.ndarray, f: np.ndarray, name: str) -> bool:
    try:
        mesher(Mesh(v, f, name=name))
        return True
    except MeshError:
        return False


def share(flags) -> float:
    flags = list(flags)
    return float(np.mean(flags)) if flags else float("nan")


def sample_figures(model, n: int, seed: int, test_vols: np.ndarray, test_shapes: np.ndarray,
                   mesher, project: bool) -> dict:
    f = np.asarray(model.atlas_faces_)
    t0 = time.perf_counter()
    s = model.sample(n, seed=seed, project=project)
    seconds = time.perf_counter() - t0
    ok = [mesh_validity(v, f, reference=model.atlas_vertices_).valid for v in s.vertices]
    tet = [accepted(mesher, v, f, f"sample_{i}") for i, v in enumerate(s.vertices)]
    vols = model.sample_volumes(s.vertices)
    d = np.linalg.norm(s.vertices[:, None] - test_shapes[None], axis=3).mean(axis=2)  # (S, T)
    moved = [r.changed for r in (s.projection or ())]
    return {
        "n": n, "seconds": round(seconds, 2), "valid": share(ok), "tetgen": share(tet),
        "volume_ml": {"mean": float(vols.mean()), "sd": float(vols.std(ddof=1))},
        "volume_ks_test": float(ks_2samp(vols, test_vols).statistic),
        "specificity_mm": float(d.min(axis=1).mean()),
        "projected": int(sum(m > 0 for m in moved)),
        "moved_vertices_mean": float(np.mean(moved)) if moved else 0.0,
        "max_move_mm": max((r.max_move_mm for r in (s.projection or ())), default=0.0),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run")
    p.add_argument("test_dir", help="held-out meshes (a groomed folder: its poses are used)")
    p.add_argument("--n", type=int, default=200, help="virtual shapes (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", required=True, help="where to write the figures")
    args = p.parse_args()

    model = load_model(args.run)
    test = Path(args.test_dir)
    manifest = load_manifest(test)
    meshes = [read_mesh(test / s["output"]) for s in manifest["shapes"]]
    test_vols = np.array([m.volume / 1000.0 for m in meshes])
    f = np.asarray(model.atlas_faces_)
    out: dict = {"run": str(Path(args.run).resolve()), "test_dir": str(test.resolve()),
                 "test_shapes": len(meshes)}
    with Tetrahedralizer() as mesher:
        for project in (False, True):
            key = "projected" if project else "raw"
            corr = model.correspond(meshes, transforms=[np.eye(4)] * len(meshes),
                                    project=project)
            test_shapes = np.stack([c.aligned_points for c in corr])
            out.setdefault("samples", {})[key] = sample_figures(
                model, args.n, args.seed, test_vols, test_shapes, mesher, project)
            out.setdefault("correspond", {})[key] = {
                "valid": share(mesh_validity(c.points, f).valid for c in corr),
                "tetgen": share(accepted(mesher, c.points, f, c.name) for c in corr),
                "chamfer_mm": float(np.mean([c.chamfer_mm for c in corr]))}
            if project:
                rec = model.reconstruct(meshes, transforms=[np.eye(4)] * len(meshes))
            else:
                recon = model.generator_.reconstruct(test_shapes)
                rec = [Mesh(r, f, name=m.name) for r, m in zip(recon, meshes)]
            out.setdefault("reconstruct", {})[key] = {
                "valid": share(mesh_validity(r.vertices, f).valid for r in rec),
                "tetgen": share(accepted(mesher, np.asarray(r.vertices), f, r.name)
                                for r in rec)}
            print(key, json.dumps({k: out[k][key] for k in ("samples", "correspond",
                                                              "reconstruct")}), flush=True)
    write_json(args.json, out)


if __name__ == "__main__":
    main()
