"""Benchmark: R-ASM matching accuracy on the 77 AMOS livers, fixed train/test split.

Grooms the livers of `--data` (a folder of the 77 AMOS liver surfaces; watertight, 2,000
vertices, aligned), fits on the training split (every file whose index in sorted order is not a
multiple of 5: 61 shapes) and corresponds the 16 held-out livers, reporting Chamfer and
Hausdorff (mm) between each input and its refined normalised shape, with and without the
test-time refinement: vertex to vertex (`chamfer_mm`, `hausdorff_mm`, as the paper) and vertex
to triangle (`surface_chamfer_mm`, `surface_hausdorff_mm`, `metrics.ground_truth.surface_matching`).

    python bench/rasm_liver.py --data LIVERS --out OUT [--features hybrid] [--epochs 15]
                               [--sharpness L] [--normalisation shape] [--tag T] [--json PATH]
                               [--rematch --transport-iterations 30 --ssm-modes 4
                                [--ssm-always] [--refine-motion free|normal]]

The figures go to `--json` (default OUT/result-TAG.json), with the commit and machine under
"provenance".

`--rematch` fits nothing: it loads OUT/run-TAG and measures the test split again with the matching
settings given (`--transport-iterations`, `--transport-sharpness`, `--transport-relaxation`,
`--deformation-smoothing`, `--refine-motion`, `--normal-refine-steps`), which change no training
(the run's `config.matching` with those fields replaced, passed to `correspond` as its `match`);
written by default to OUT/result-TAG-rematch-tN-lL[-wW][-dD][-normalS][-ssmD][-always].json.
Without `--rematch` the same flags set the fit's `matching` section.
`--ssm-modes D` first fits a point-distribution model on the training split; as in `fit`, one
that raises the training shapes' mean Chamfer by more than 5% is not kept (`--ssm-always` keeps
it, to measure it).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
from common import write_json

from shapeatlas.mesh.groom import GroomOptions, groom_cohort, load_groomed
from shapeatlas.metrics.ground_truth import surface_matching
from shapeatlas.models.atlas import AtlasModel
from shapeatlas.training.config import FitConfig, MatchConfig


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, metavar="DIR",
                   help="folder of the 77 AMOS liver surfaces (mm)")
    p.add_argument("--features", default="hybrid", choices=["hybrid", "spatial"])
    p.add_argument("--epochs", type=int, default=15)
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
    p.add_argument("--normalisation", default=None, choices=["cohort", "shape", "whiten"])
    p.add_argument("--tag", default=None, help="name of this run inside --out")
    p.add_argument("--out", required=True,
                   help="working folder: the groomed livers, the run (run-TAG) and the results")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="where to write the figures (default OUT/result-TAG.json, or "
                   "OUT/result-TAG-rematch-*.json with --rematch)")
    p.add_argument("--ssm-modes", type=int, default=None,
                   help="with --rematch: fit a point-distribution model of this many modes on "
                   "the training split first (model.ssm_modes)")
    p.add_argument("--ssm-always", action="store_true",
                   help="keep that model even where it raises the training Chamfer by more "
                   "than 5%% (AtlasModel.fit_point_model)")
    p.add_argument("--rematch", action="store_true",
                   help="no fit: re-measure OUT/run-TAG with the matching flags given")
    return p


def matching_fields(args: argparse.Namespace) -> dict:
    """The matching flags given, as `MatchConfig` fields (None: not given, which `replace`
    ignores)."""
    return {"transport_iterations": args.transport_iterations,
            "transport_sharpness": args.transport_sharpness,
            "transport_relaxation": args.transport_relaxation,
            "deformation_smoothing": args.deformation_smoothing,
            "refine_motion": args.refine_motion, "normal_refine_steps": args.normal_refine_steps}


def fit_config(args: argparse.Namespace) -> FitConfig:
    """The fit's configuration: the defaults with the flags given."""
    return FitConfig(model={"features": args.features}, training={"epochs": args.epochs}).replace(
        model={"sharpness": args.sharpness, "normalisation": args.normalisation},
        matching=matching_fields(args))


def rematch_config(args: argparse.Namespace, model: AtlasModel) -> MatchConfig:
    """`--rematch`'s matching: the run's own with the flags given."""
    return model.config.matching.replace(**matching_fields(args))


def run(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    groomed = out / "groomed"
    if not (groomed / "groom.json").is_file():
        if not Path(args.data).is_dir():
            raise SystemExit(f"--data {args.data}: not a folder")
        groom_cohort(args.data, groomed, GroomOptions(watertight=True, target_vertices=2000))
    meshes, _ = load_groomed(groomed)
    train = [m for i, m in enumerate(meshes) if i % 5]
    test = [m for i, m in enumerate(meshes) if not i % 5]
    cfg = fit_config(args)
    tag = args.tag or args.features
    run_dir = out / f"run-{tag}"
    if args.rematch:
        if not (run_dir / "model.json").is_file():
            raise SystemExit(f"--rematch needs a finished run {run_dir}")
        model = AtlasModel.load(run_dir)
        match = rematch_config(args, model)
        t0 = time.perf_counter()
        if args.ssm_modes:  # as fit does, on the training shapes (groomed: the test ones are too)
            model.fit_point_model(train, [np.eye(4)] * len(train), modes=args.ssm_modes,
                                  match=match,
                                  **({"max_chamfer_rise": None} if args.ssm_always else {}))
        point_model_s = time.perf_counter() - t0 if args.ssm_modes else None
        c = model.config.replace(matching=match)
        m = c.matching
        result = {"n_train": len(train), "n_test": len(test), "rematch_of": str(run_dir),
                  "point_model_seconds": point_model_s,
                  "point_model": getattr(model, "point_model_report_", None),
                  "rows": measure(model, test, match), "config": c.to_dict()}
        name = (f"result-{tag}-rematch-t{m.transport_iterations}-l{m.transport_sharpness:g}"
                f"{f'-w{m.transport_relaxation:g}' if m.transport_relaxation != 1 else ''}"
                f"{f'-d{m.deformation_smoothing}' if m.deformation_smoothing else ''}"
                f"{f'-normal{m.normal_refine_steps}' if m.refine_motion == 'normal' else ''}"
                f"{f'-ssm{args.ssm_modes}' if args.ssm_modes else ''}"
                f"{'-always' if args.ssm_always else ''}.json")
        write_json(args.json or out / name, result)
        return result
    shutil.rmtree(run_dir, ignore_errors=True)
    t0 = time.perf_counter()
    model = AtlasModel(cfg).fit(train, run_dir=run_dir)
    fit_s = time.perf_counter() - t0
    model.save(run_dir)
    result = {"n_train": len(train), "n_test": len(test), "features": args.features,
              "fit_seconds": fit_s, "epochs_run": len(model.history_),
              "rows": measure(model, test), "config": cfg.to_dict()}
    write_json(args.json or out / f"result-{tag}.json", result)
    return result


def measure(model: AtlasModel, test: list, match: MatchConfig | None = None) -> dict:
    """Chamfer / Hausdorff (mm) and seconds per shape on the test split, with and without the
    test-time pull, matched with `match` (None: the run's own `config.matching`)."""
    rows = {}
    for refine in (True, False):
        t1 = time.perf_counter()
        corr = model.correspond(test, transforms=[np.eye(4)] * len(test), refine=refine,
                                match=match)
        dt = (time.perf_counter() - t1) / len(test)
        rows["refined" if refine else "attention+smoothing"] = {
            "chamfer_mm": float(np.mean([c.chamfer_mm for c in corr])),
            "hausdorff_mm": float(np.mean([c.hausdorff_mm for c in corr])),
            **surface_matching(test, corr, model.atlas_faces_),
            "correspond_s_per_shape": dt,
        }
    return rows


def main() -> None:
    args = parser().parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = run(args)
    print(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=1))


if __name__ == "__main__":
    main()
