"""Benchmark: matching-time settings of a finished `bench/rasm_lv.py` run, by ground-truth error.

Loads OUT/run-TAG (no fit) and corresponds every original file of OUT/cohort in the poses
`bench/rasm_lv.py` uses (the groomed pose refined by a local ICP on the atlas and turned about
the cap), once per setting, printing the mean ground-truth error (mm, % of the mean long axis),
the mean Chamfer distance and seconds per shape. Nothing here changes training, so every row is
the same network and atlas. The settings (`--only` picks some):

- `transport`: Sinkhorn iterations x sharpness (`transport_iterations`, `transport_sharpness`);
- `smoothing`: graph-smoothing iterations at transport 30 (`smooth_iterations`; training used 2);
- `pose`: 3 rounds of pose refinement at transport 30 (`pose_iterations`);
- `subdivide`: every input split 1-to-4 (trimesh's midpoint subdivision, the surface unchanged)
  before matching, with transport 0 and the free pull (the paper's matching) and at transport
  30 with the normal-only pull.

Rows without the test-time pull unless the name says `pull`. Written to
OUT/matching-TAG.json.

    python bench/rasm_lv_matching.py --out /tmp/rasm-s0 --tag v23 [--only transport smoothing]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from shapeatlas.data import load_cohort_truth
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.groom import load_manifest
from shapeatlas.mesh.io import read_mesh
from shapeatlas.models.atlas import AtlasModel
from shapeatlas.models.inputs import refine_pose_on_atlas
from shapeatlas.pipeline import atlas_pair_errors

GROUPS = ("transport", "smoothing", "pose", "subdivide")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the --out of a finished bench/rasm_lv.py run")
    p.add_argument("--tag", required=True)
    p.add_argument("--only", nargs="+", choices=GROUPS, default=list(GROUPS))
    return p


def subdivided(mesh: Mesh) -> Mesh:
    """1-to-4 midpoint subdivision (the original vertices first, the surface unchanged)."""
    import trimesh

    v, f = trimesh.remesh.subdivide(np.asarray(mesh.vertices), np.asarray(mesh.faces))
    return Mesh(v, f, name=mesh.name)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = parser().parse_args()
    out = Path(args.out)
    run = out / f"run-{args.tag}"
    truth = load_cohort_truth(out / "cohort")
    manifest = load_manifest(run / "groomed")
    names = [s["name"] for s in manifest["shapes"]]
    groomed = {s["name"]: np.asarray(s["transform"]) for s in manifest["shapes"]}
    meshes = [read_mesh(out / "cohort" / f"{n}.ply") for n in names]
    long_axis = float(np.mean([truth[n].long_axis_mm for n in names]))
    # plain Sinkhorn and no deformation smoothing, as measured (config versions 8 and 9)
    model = AtlasModel.load(run).set_transport(relaxation=1.0).set_deformation_smoothing(0)
    poses = [refine_pose_on_atlas(m, model.atlas_mesh, groomed[n], cap=model.cap_reference_)
             for m, n in zip(meshes, names)]
    rows = {}

    def measure(label: str, inputs=meshes, *, refine: bool = False, pose_iterations: int = 0):
        t0 = time.perf_counter()
        corr = model.correspond(inputs, transforms=poses, refine=refine,
                                pose_iterations=pose_iterations)
        seconds = (time.perf_counter() - t0) / len(inputs)
        err = float(np.concatenate(atlas_pair_errors(
            {n: c.points for n, c in zip(names, corr)}, truth, names)).mean())
        rows[label] = {"gt_error_mm": err, "gt_error_pct_long_axis": 100 * err / long_axis,
                       "chamfer_mm": float(np.mean([c.chamfer_mm for c in corr])),
                       "s_per_shape": seconds}
        print(f"{label}: {err:.3f} mm ({100 * err / long_axis:.2f}%), Chamfer "
              f"{rows[label]['chamfer_mm']:.2f} mm, {seconds:.2f} s/shape", flush=True)

    if "transport" in args.only:
        for iterations, sharpness in ((30, 100.0), (30, 200.0), (30, 300.0), (30, 600.0),
                                      (100, 300.0), (200, 300.0), (300, 300.0)):
            model.set_transport(iterations, sharpness)
            measure(f"transport {iterations} at lambda {sharpness:g}")
        model.set_transport(200, 300.0).set_refine_motion("normal")
        measure("transport 200 at lambda 300, normal-only pull", refine=True)
        model.set_refine_motion("free")
    model.set_transport(30, 300.0)
    if "smoothing" in args.only:
        trained = model.net_.smooth_iterations
        for iterations in (0, 1, 2, 4, 8):
            model.net_.smooth_iterations = iterations
            measure(f"transport 30, {iterations} smoothing iterations")
        model.net_.smooth_iterations = trained
    if "pose" in args.only:
        measure("transport 30, 3 pose-refinement rounds", pose_iterations=3)
    if "subdivide" in args.only:
        split = [subdivided(m) for m in meshes]
        for transport, motion in ((0, "free"), (30, "normal")):
            model.set_transport(transport).set_refine_motion(motion)
            for refine in (False, True):
                for what, inputs in (("as they are", meshes), ("subdivided", split)):
                    pull = f", {motion} pull" if refine else ""
                    measure(f"transport {transport}{pull}, inputs {what}", inputs, refine=refine)
    (out / f"matching-{args.tag}.json").write_text(json.dumps(
        {"run": str(run), "mean_long_axis_mm": long_axis, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
