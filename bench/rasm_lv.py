"""Benchmark: R-ASM ground-truth correspondence error on a synthetic LV cohort, vs a baseline.

`--organ kidney` runs the same bench on the synthetic kidney cohort (`data.synthetic_kidney`), the
second organ with ground truth.

1. Synthesise N LVs (1k-4k vertices, random poses, healthy + dilated) or kidneys,
   `shapeatlas fit` on the raw folder (it grooms them itself), then correspond every original
   file in the pose `shapeatlas correspond` gives a training file: its groomed pose, refined by a
   local ICP on the atlas (`--groom-poses`: the groomed pose as it is). The points come back in
   each file's frame.
2. Ground-truth error: for each pair (A, B) = (shape i, shape i+1), atlas vertex k gives the point
   P_A[k] on A and P_B[k] on B; the truth says which point of B corresponds to P_A[k] (its domain
   coordinate on A, located on B). Error = |P_B[k] - truth|, mean over k and pairs, in mm and in %
   of the mean long axis.
3. Baseline, same pairs: rigid alignment (the groom transforms without grooming's cap turn,
   `baseline_rigid_gt_error_mm`), then for every vertex of A the nearest point of B's surface;
   error against the truth the same way. Also given in the groomed poses with the cap turn
   (`baseline_gt_error_mm`) and in the poses R-ASM matched in
   (`baseline_in_matching_poses_gt_error_mm`).
4. Matching accuracy: Chamfer / Hausdorff between each input and its refined normalised shape,
   vertex to vertex (as the paper) and vertex to triangle (`surface_*`).
   Also the turn of each pose about the long axis against the truth (`twist_about_long_axis`:
   median |turn| and SD about the cohort's mean turn, groomed poses and matching poses).
5. `--oracle-pose` (a diagnostic, not a method): groom as `fit` would, then re-pose every groomed
   shape by generalised Procrustes on its TRUE correspondences before fitting, to measure what
   the model reaches when the pose is right (`common.true_correspondence_poses`).
6. `--rematch`: no new cohort and no fit; load OUT/run-TAG and measure steps 2-4 again with the
   matching settings given (`--transport-iterations`, `--transport-sharpness`,
   `--transport-relaxation`, `--deformation-smoothing`, `--pose-iterations`, `--refine-motion`,
   `--normal-refine-steps`, `--surface-cpd`), which change no training: the run's
   `config.matching` with those fields replaced, passed to `correspond` as its `match`.
   Without `--rematch` the same flags set the fit's `matching` section.

The figures go to `--json` (default OUT/result-TAG.json, or OUT/result-TAG-rematch-*.json with
`--rematch`), with the commit and machine under "provenance".

    python bench/rasm_lv.py --out OUT [--organ lv|kidney] [--seed 0] [--n 50] [--epochs 25]
                            [--features hybrid] [--sharpness 1e4] [--no-refine-too]
                            [--oracle-pose] [--groom-poses]
                            [--rematch --tag TAG --transport-iterations 30]
                            [--refine-motion free|normal] [--normal-refine-steps N]
                            [--surface-cpd N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import shutil
import time
from pathlib import Path

import numpy as np
from common import rotation_residual, true_correspondence_poses, write_json

from shapeatlas.data import load_cohort_truth, write_kidney_cohort, write_lv_cohort
from shapeatlas.mesh.groom import (
    GroomOptions,
    groom_cohort,
    load_groomed,
    load_manifest,
    rigid_transforms,
)
from shapeatlas.mesh.io import read_mesh, write_mesh
from shapeatlas.metrics.ground_truth import (
    atlas_pair_errors,
    baseline_pair_errors,
    surface_matching,
)
from shapeatlas.models.atlas import AtlasModel
from shapeatlas.models.inputs import refine_pose_on_atlas
from shapeatlas.runs.fit import fit_run
from shapeatlas.runs.folder import training_sources
from shapeatlas.training.config import FitConfig, MatchConfig

#: The matching flags: argparse dest -> `MatchConfig` field. All set a fit's `matching`;
#: `--rematch` takes all but --pose-relaxation (its result's file name does not record it).
MATCHING_FLAGS = {"transport_iterations": "transport_iterations",
                  "transport_sharpness": "transport_sharpness",
                  "transport_relaxation": "transport_relaxation",
                  "deformation_smoothing": "deformation_smoothing",
                  "pose_iterations": "pose_iterations", "pose_relaxation": "pose_relaxation",
                  "refine_motion": "refine_motion", "normal_refine_steps": "normal_refine_steps",
                  "surface_cpd": "surface_cpd_iterations"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--organ", default="lv", choices=["lv", "kidney"],
                   help="synthetic cohort: LVs (healthy + dilated) or kidneys")
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--seed", type=int, default=0, help="cohort seed")
    p.add_argument("--fit-seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--features", default="hybrid", choices=["hybrid", "spatial"])
    p.add_argument("--sharpness", type=float, default=None)
    p.add_argument("--transport-iterations", type=int, default=None,
                   help="Sinkhorn iterations when matching (0: the paper's softmax)")
    p.add_argument("--transport-sharpness", type=float, default=None)
    p.add_argument("--transport-relaxation", type=float, default=None,
                   help="over-relaxation omega of the Sinkhorn steps (1: plain)")
    p.add_argument("--deformation-smoothing", type=int, default=None,
                   help="smoothing iterations of the matched shape's displacement from the atlas "
                   "(matching.deformation_smoothing; 0: off)")
    p.add_argument("--refine-motion", default=None, choices=["free", "normal"],
                   help="how the test-time pull moves the points (matching.refine_motion)")
    p.add_argument("--normal-refine-steps", type=int, default=None,
                   help="steps of the normal-only pull (matching.normal_refine_steps)")
    p.add_argument("--surface-cpd", type=int, default=None, metavar="N",
                   help="iterations of the CPD refinement of each match "
                   "(matching.surface_cpd_iterations; 0: off)")
    p.add_argument("--atlas-vertices", type=int, default=None)
    p.add_argument("--no-refine-too", action="store_true", help="also evaluate without refinement")
    p.add_argument("--groom-poses", action="store_true",
                   help="match in the groomed poses as they are, without the local refinement on "
                   "the atlas that 'shapeatlas correspond' gives a training file")
    p.add_argument("--out", required=True,
                   help="working folder: the cohort, the run (run-TAG) and the results")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="where to write the figures (default OUT/result-TAG.json, or "
                   "OUT/result-TAG-rematch-*.json with --rematch)")
    p.add_argument("--reuse-cohort", action="store_true")
    p.add_argument("--atlas-init", default=None, help="medoid (default), random, or a mesh path")
    p.add_argument("--tag", default=None, help="name of this run inside --out")
    p.add_argument("--normalisation", default=None, choices=["cohort", "shape", "whiten"])
    p.add_argument("--consensus-rounds", type=int, default=None,
                   help="grooming.consensus_rounds of the fit (its grooming of the raw "
                   "cohort)")
    p.add_argument("--pose-iterations", type=int, default=None,
                   help="pose refinement rounds when corresponding (matching.pose_iterations)")
    p.add_argument("--pose-relaxation", type=float, default=None,
                   help="over-relaxation of each pose-refinement step "
                   "(matching.pose_relaxation; fit only)")
    p.add_argument("--ssm-modes", type=int, default=None,
                   help="point-distribution model refinement (model.ssm_modes; with "
                   "--rematch it is fitted as fit does, on the original files in their fit "
                   "poses, and nothing else is refitted)")
    p.add_argument("--ssm-always", action="store_true",
                   help="with --rematch --ssm-modes: keep the point model even where it raises "
                   "the training Chamfer by more than 5%% (AtlasModel.fit_point_model)")
    p.add_argument("--oracle-pose", action="store_true",
                   help="diagnostic: fit on shapes re-posed by Procrustes on true correspondences")
    p.add_argument("--rematch", action="store_true",
                   help="no fit: re-measure OUT/run-TAG with the matching flags given")
    return p


def matching_fields(args: argparse.Namespace, *, rematch: bool = False) -> dict:
    """The matching flags given, as `MatchConfig` fields (`MATCHING_FLAGS`; None: not given, which
    `replace` ignores)."""
    return {field: getattr(args, dest) for dest, field in MATCHING_FLAGS.items()
            if not (rematch and dest == "pose_relaxation")}


def fit_config(args: argparse.Namespace) -> FitConfig:
    """The fit's configuration: the defaults with the flags given."""
    return FitConfig(seed=args.fit_seed, model={"features": args.features}).replace(
        model={"sharpness": args.sharpness, "atlas_vertices": args.atlas_vertices,
               "atlas_init": args.atlas_init, "normalisation": args.normalisation,
               "ssm_modes": args.ssm_modes},
        training={"epochs": args.epochs, "atlas_rounds": args.rounds},
        matching=matching_fields(args),
        grooming={"consensus_rounds": args.consensus_rounds})


def rematch_config(args: argparse.Namespace, model: AtlasModel) -> MatchConfig:
    """`--rematch`'s matching: the run's own with the flags given."""
    return model.config.matching.replace(**matching_fields(args, rematch=True))


def groom_oracle(cohort: Path, out: Path, cfg: FitConfig, truth: dict) -> Path:
    """Groom `cohort` into `out` as `fit` would, then re-pose every groomed mesh (and its
    manifest transform) by generalised Procrustes on the true correspondences."""
    groom_cohort(cohort, out, GroomOptions(target_vertices=cfg.grooming.target_vertices,
                                           watertight="auto",
                                           consensus_rounds=cfg.grooming.consensus_rounds))
    meshes, manifest = load_groomed(out)
    names = [s["name"] for s in manifest["shapes"]]
    groomed = {s["name"]: np.asarray(s["transform"]) for s in manifest["shapes"]}
    oracle = true_correspondence_poses(names, truth, groomed)
    for mesh, entry in zip(meshes, manifest["shapes"]):
        extra = oracle[entry["name"]] @ np.linalg.inv(groomed[entry["name"]])
        write_mesh(mesh.transformed(extra), out / entry["output"])
        entry["transform"] = oracle[entry["name"]].tolist()
    (out / "groom.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return out


def run(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    tag = args.tag or f"{args.features}-s{args.fit_seed}"
    cohort, run = out / "cohort", out / f"run-{tag}"
    if args.rematch:
        return rematch(args, out, run, tag)
    if not args.reuse_cohort or not cohort.is_dir():
        shutil.rmtree(cohort, ignore_errors=True)
        if args.organ == "kidney":
            write_kidney_cohort(cohort, n=args.n, seed=args.seed)
        else:
            write_lv_cohort(cohort, n=args.n, seed=args.seed, phenotypes="mixed")
    shutil.rmtree(run, ignore_errors=True)
    cfg = fit_config(args)
    truth = load_cohort_truth(cohort)
    t0 = time.perf_counter()
    data = groom_oracle(cohort, run / "groomed", cfg, truth) if args.oracle_pose else cohort
    fit_run(data, run, cfg)
    fit_s = time.perf_counter() - t0
    model = AtlasModel.load(run)
    rows, extra = measure(args, model, run, cohort, truth)
    metrics = json.loads((run / "fit_metrics.json").read_text())
    result = {
        "organ": args.organ, "n": extra.pop("n"), "features": args.features,
        "config": cfg.to_dict(), "fit_seconds": fit_s, "epochs_run": metrics["epochs_run"],
        "shapes_per_second_per_epoch": metrics["shapes_per_second_per_epoch"],
        **extra, "rows": rows,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    write_json(args.json or out / f"result-{tag}.json", result)
    return result


def rematch(args: argparse.Namespace, out: Path, run: Path, tag: str) -> dict:
    """Re-measure a finished run with other matching settings (no new cohort, no fit)."""
    if not (run / "model.json").is_file() or not (out / "cohort").is_dir():
        raise SystemExit(f"--rematch needs a finished run {run} and its cohort {out / 'cohort'}")
    model = AtlasModel.load(run)
    match = rematch_config(args, model)
    point_model_s = None
    if args.ssm_modes is not None:
        t0 = time.perf_counter()
        if args.ssm_modes:  # as `fit` does: the original files, in their fit poses
            sources = training_sources(run / "groomed")
            if sources is None:
                groomed, _ = load_groomed(run / "groomed")
                sources = (groomed, [np.eye(4)] * len(groomed))
            model.fit_point_model(*sources, modes=args.ssm_modes, match=match,
                                  **({"max_chamfer_rise": None} if args.ssm_always else {}))
        else:
            model.point_model_ = None
        point_model_s = time.perf_counter() - t0
    rows, extra = measure(args, model, run, out / "cohort", load_cohort_truth(out / "cohort"),
                          match=match)
    c = model.config.replace(matching=match)
    m = c.matching
    result = {"organ": args.organ, "n": extra.pop("n"), "rematch_of": str(run),
              "config": c.to_dict(), "point_model_seconds": point_model_s,
              "point_model": getattr(model, "point_model_report_", None), **extra, "rows": rows,
              "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    name = (f"result-{tag}-rematch-t{m.transport_iterations}-l{m.transport_sharpness:g}"
            f"{f'-w{m.transport_relaxation:g}' if m.transport_relaxation != 1 else ''}"
            f"{f'-d{m.deformation_smoothing}' if m.deformation_smoothing else ''}"
            f"-p{m.pose_iterations}{'-groom' if args.groom_poses else ''}"
            f"{f'-normal{m.normal_refine_steps}' if m.refine_motion == 'normal' else ''}"
            f"{f'-ssm{args.ssm_modes}' if args.ssm_modes is not None else ''}"
            f"{'-always' if args.ssm_always else ''}"
            f"{f'-cpd{m.surface_cpd_iterations}' if args.surface_cpd is not None else ''}.json")
    write_json(args.json or out / name, result)
    return result


def measure(args: argparse.Namespace, model: AtlasModel, run: Path, cohort: Path,
            truth: dict, match: MatchConfig | None = None) -> tuple[dict, dict]:
    """Steps 2-4 on every original file of the cohort, matched with `match` (None: the run's
    own `config.matching`). -> (rows, cohort-level figures)"""
    manifest = load_manifest(run / "groomed")
    names = [s["name"] for s in manifest["shapes"]]
    transforms = {s["name"]: np.asarray(s["transform"]) for s in manifest["shapes"]}
    meshes = [read_mesh(cohort / f"{n}.ply") for n in names]
    long_axis = float(np.mean([truth[n].long_axis_mm for n in names]))
    # The poses `shapeatlas correspond` gives these training files: the fit's, refined locally
    # on the atlas (`--groom-poses`: the groomed poses as they are; `--oracle-pose` keeps its
    # true poses exact).
    t0 = time.perf_counter()
    poses = [transforms[n] if args.groom_poses or args.oracle_pose
             else refine_pose_on_atlas(m, model.atlas_mesh, transforms[n],
                                       cap=getattr(model, "cap_reference_", None))
             for m, n in zip(meshes, names)]
    pose_s = (time.perf_counter() - t0) / len(meshes)
    rows = {}
    for refine in ([True, False] if args.no_refine_too else [True]):
        t1 = time.perf_counter()
        corr = model.correspond(meshes, transforms=poses, refine=refine, match=match)
        per_shape_s = (time.perf_counter() - t1) / len(meshes)
        pts = {n: c.points for n, c in zip(names, corr)}
        errs = np.concatenate(atlas_pair_errors(pts, truth, names))
        rows["refined" if refine else "attention+smoothing"] = {
            "gt_error_mm": float(errs.mean()),
            "gt_error_pct_long_axis": float(100 * errs.mean() / long_axis),
            "chamfer_mm": float(np.mean([c.chamfer_mm for c in corr])),
            "hausdorff_mm": float(np.mean([c.hausdorff_mm for c in corr])),
            **surface_matching(meshes, corr, model.atlas_faces_),
            "correspond_s_per_shape": per_shape_s + pose_s,
        }
    base = np.concatenate(baseline_pair_errors(transforms, truth, names))
    # The "rigid alignment" baseline: the groomed poses without grooming's cap turn, which is
    # not part of a plain rigid alignment.
    base_rigid = np.concatenate(baseline_pair_errors(rigid_transforms(manifest), truth, names))
    # The baseline again in the poses R-ASM matched in, so neither side has the better alignment.
    base_same = np.concatenate(baseline_pair_errors(dict(zip(names, poses)), truth, names))
    # How far each pose is turned about the organ's long axis from the cohort's mean turn,
    # against the truth (the cap twist's job).
    axis = type(truth[names[0]]).LONG_AXIS
    twist = {}
    for what, pose in (("groomed", transforms), ("matching", dict(zip(names, poses)))):
        t = rotation_residual(names, truth, pose)[:, axis]
        twist[what] = {"median_abs_deg": float(np.median(np.abs(t))), "sd_deg": float(t.std())}
    return rows, {"n": len(names), "mean_long_axis_mm": long_axis,
                  "twist_about_long_axis": twist,
                  "baseline_gt_error_mm": float(base.mean()),
                  "baseline_gt_error_pct_long_axis": float(100 * base.mean() / long_axis),
                  "baseline_rigid_gt_error_mm": float(base_rigid.mean()),
                  "baseline_in_matching_poses_gt_error_mm": float(base_same.mean())}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = run(parser().parse_args())
    print(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=1))


if __name__ == "__main__":
    main()
