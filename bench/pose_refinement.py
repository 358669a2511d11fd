"""Benchmark: `correspond`'s pose refinement on a finished `bench/rasm_lv.py` run (issue 3).

Re-corresponds every original file of OUT/cohort with the fitted model of OUT/run-TAG, starting
from the groom manifest's transforms, for each number of pose-refinement rounds asked for
(0 = off), and prints the ground-truth error (consecutive pairs, as `rasm_lv.py`), Chamfer and
Hausdorff, with and without the test-time pull. No retraining: the model is the run's.
With `--livers`, OUT is the --out folder of `bench/rasm_liver.py` and the held-out livers of its
split (groomed frame) are re-corresponded instead; there is no ground truth, so Chamfer and
Hausdorff only, and how far the refinement turned each liver.

    python bench/pose_refinement.py OUT --tag TAG [--iterations 0,16] [--relaxation 1] [--livers]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from shapeatlas.data import load_cohort_truth
from shapeatlas.mesh.groom import load_groomed, load_manifest
from shapeatlas.mesh.io import read_mesh
from shapeatlas.models.atlas import AtlasModel
from shapeatlas.pipeline import atlas_pair_errors


def livers(model: AtlasModel, out: Path, iterations: list[int]) -> None:
    """The held-out split of bench/rasm_liver.py (every fifth groomed liver), refined."""
    meshes, _ = load_groomed(out / "groomed")
    test = [m for i, m in enumerate(meshes) if not i % 5]
    print("pose rounds | Chamfer mm | Hausdorff mm | turned median / max deg | s/shape")
    for it in iterations:
        t0 = time.perf_counter()
        corr = model.correspond(test, transforms=[np.eye(4)] * len(test), pose_iterations=it)
        dt = (time.perf_counter() - t0) / len(test)
        turned = np.degrees([Rotation.from_matrix(c.transform[:3, :3]).magnitude() for c in corr])
        print(f"{it} | {np.mean([c.chamfer_mm for c in corr]):.3f} | "
              f"{np.mean([c.hausdorff_mm for c in corr]):.2f} | {np.median(turned):.1f} / "
              f"{turned.max():.1f} | {dt:.2f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="the --out folder of bench/rasm_lv.py")
    p.add_argument("--tag", required=True, help="the run's tag (folder run-TAG)")
    p.add_argument("--iterations", default="0,16", help="comma-separated pose_iterations")
    p.add_argument("--relaxation", type=float, default=None,
                   help="pose_relaxation (default: the run's)")
    p.add_argument("--livers", action="store_true", help="OUT is a bench/rasm_liver.py folder")
    args = p.parse_args()
    out = Path(args.out)
    run = out / f"run-{args.tag}"
    model = AtlasModel.load(run)
    if args.relaxation is not None:
        model.config = model.config.replace(pose_relaxation=args.relaxation)
    if args.livers:
        livers(model, out, [int(x) for x in args.iterations.split(",")])
        return
    truth = load_cohort_truth(out / "cohort")
    manifest = load_manifest(run / "groomed")
    names = [s["name"] for s in manifest["shapes"]]
    transforms = [np.asarray(s["transform"]) for s in manifest["shapes"]]
    meshes = [read_mesh(out / "cohort" / f"{n}.ply") for n in names]
    print(f"run-{args.tag}, pose_relaxation {model.config.pose_relaxation:g}")
    print("pose rounds | pull | GT error mm | Chamfer mm | Hausdorff mm | s/shape")
    for it in (int(x) for x in args.iterations.split(",")):
        for refine in (False, True):
            t0 = time.perf_counter()
            corr = model.correspond(meshes, transforms=transforms, refine=refine,
                                    pose_iterations=it)
            dt = (time.perf_counter() - t0) / len(meshes)
            err = np.concatenate(atlas_pair_errors(
                {n: c.points for n, c in zip(names, corr)}, truth, names)).mean()
            print(f"{it} | {'yes' if refine else 'no'} | {err:.2f} | "
                  f"{np.mean([c.chamfer_mm for c in corr]):.3f} | "
                  f"{np.mean([c.hausdorff_mm for c in corr]):.2f} | {dt:.2f}", flush=True)


if __name__ == "__main__":
    main()
