"""`shapeatlas demo`: the whole pipeline on a built-in synthetic LV cohort, in one folder.

It sits above the other verbs' modules of `shapeatlas.runs` and is the only one that uses all
of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from shapeatlas.data.synthetic_lv import load_truth, write_lv_cohort
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh.groom import GroomOptions, groom_cohort, rigid_transforms
from shapeatlas.metrics.ground_truth import atlas_pair_errors, baseline_pair_errors
from shapeatlas.outputs import staged_output
from shapeatlas.runs.correspond import correspond_files
from shapeatlas.runs.evaluate import evaluate_run
from shapeatlas.runs.fit import fit_run
from shapeatlas.runs.sample import sample_run
from shapeatlas.training.config import FitConfig

#: The demo's fit: small enough for a laptop CPU in about a minute, big enough to beat the baseline.
DEMO_CONFIG = FitConfig(model={"atlas_vertices": 800}, training={"epochs": 8, "atlas_rounds": 2},
                        matching={"refine_steps": 40})
#: Virtual shapes the demo samples (and uses for specificity), and new LVs it evaluates on.
DEMO_SAMPLES = 200
DEMO_TEST = 6


def run_demo(out: str | Path, *, n: int = 12, seed: int = 0, target_vertices: int = 1500,
             overwrite: bool = False,
             progress: Callable[[str, int, int], None] | None = None,
             step_progress: Callable[[dict], None] | None = None,
             announce: Callable[[str], None] | None = None) -> dict:
    """The whole pipeline on a built-in synthetic LV cohort; returns a summary.

    synth (healthy + dilated) -> groom -> fit (R-ASM + β-VAE) -> correspond every original file
    (ground-truth correspondence error of the atlas method and of the rigid + nearest-point
    baseline on consecutive pairs) -> sample a virtual cohort -> evaluate on new LVs.
    The folder `out` (new or empty, or replaced whole with `overwrite`) is built beside it, in
    `outputs.work_dir(out)`, and moved into place at the end.
    progress(stage, increment, total): every stage but the fit's training; step_progress: the
    fit's (`fit_run`'s `progress`); announce(line): one line as each of the six steps starts.
    """
    with staged_output(out, verb="demo", overwrite=overwrite) as staging:
        summary = _demo_in(staging.path, n=n, seed=seed, target_vertices=target_vertices,
                           progress=progress, step_progress=step_progress, announce=announce)
        staging.record(device=summary.pop("device"))
    summary["out"] = str(Path(out).resolve())
    return summary


def _demo_in(out: Path, *, n: int, seed: int, target_vertices: int,
             progress: Callable[[str, int, int], None] | None,
             step_progress: Callable[[dict], None] | None,
             announce: Callable[[str], None] | None) -> dict:
    """`run_demo`'s work, in the staging folder `out`."""
    say = announce or (lambda s: None)
    cohort, groomed, run, corr_dir = (out / "cohort", out / "groomed", out / "run",
                                      out / "correspond")
    virtual, test, evaluation = out / "virtual", out / "test-cohort", out / "evaluation"
    say(f"[1/6] synthesising {n} left ventricles (healthy + dilated) in {cohort}")
    write_lv_cohort(cohort, n=n, seed=seed, phenotypes="mixed",
                    progress=(lambda d, t: progress("synth", 1, t)) if progress else None)
    say(f"[2/6] grooming them (clean, align, {target_vertices} vertices) into {groomed}")
    result = groom_cohort(cohort, groomed, GroomOptions(target_vertices=target_vertices),
                          progress=progress)
    say(f"[3/6] fitting Atlas-R-ASMG (R-ASM atlas of {DEMO_CONFIG.model.atlas_vertices} vertices + "
        f"β-VAE) into {run}")
    model = fit_run(groomed, run, DEMO_CONFIG.replace(seed=seed), progress=step_progress)
    say(f"[4/6] corresponding the original files (any pose) into {corr_dir}")
    done, errors = correspond_files(run, [cohort], corr_dir, progress=(
        (lambda k: progress("match", k, n)) if progress else None))
    if errors:
        raise ShapeAtlasError("demo: " + "; ".join(errors))
    truth = load_truth(cohort)
    names = [s["name"] for s in result.shapes]
    pts = {nm: np.load(corr_dir / f"{nm}.npz")["points"] for nm in names}
    ours = [e.mean() for e in atlas_pair_errors(pts, truth, names)]
    # The baseline's alignment is the plain rigid one, without grooming's cap turn.
    base = [e.mean() for e in baseline_pair_errors(rigid_transforms(result.manifest), truth,
                                                   names)]
    say(f"[5/6] sampling a virtual cohort of {DEMO_SAMPLES} shapes into {virtual}")
    sampled = sample_run(run, virtual, n=DEMO_SAMPLES, seed=seed, traverse=2, progress=(
        (lambda k: progress("sample", k, DEMO_SAMPLES)) if progress else None))
    say(f"[6/6] evaluating on {DEMO_TEST} new LVs (another seed) into {evaluation}")
    write_lv_cohort(test, n=DEMO_TEST, seed=seed + 1000, phenotypes="mixed")
    ev = evaluate_run(run, test, evaluation, n_samples=DEMO_SAMPLES, seed=seed,
                      progress=progress)
    metrics = json.loads((run / "fit_metrics.json").read_text())
    return {
        "out": str(out.resolve()),
        "device": str(model.device_),
        "shapes": [{"name": s["name"], "phenotype": truth[s["name"]].phenotype,
                    "truth_ml": truth[s["name"]].volume_ml, "groomed_ml": s["volume_ml"],
                    "align_rms_mm": s["align_rms_mm"]} for s in result.shapes],
        "correspond": done,
        "fit_seconds": metrics["fit_seconds"],
        "long_axis_mm": float(np.mean([truth[nm].long_axis_mm for nm in names])),
        "gt_error_mm": float(np.mean(ours)),
        "baseline_gt_error_mm": float(np.mean(base)),
        "samples": {k: sampled[k] for k in ("n", "seconds", "valid_share", "volume_ml")},
        "evaluation": {k: ev[k] for k in ("n_test", "matching", "generalization_mm",
                                          "specificity_mm", "plausibility", "figures")},
    }
