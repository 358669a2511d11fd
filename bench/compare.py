"""Benchmark: Atlas-R-ASMG (hGCN, sGCN) vs CPD-PCA, same data, same metrics.

Cohorts, each groomed once (watertight, aligned) and split in a fixed way:
- `lv`: 60 synthetic LVs (healthy + dilated, seed 0); every 4th shape (sorted names) is a test
  shape: 45 train / 15 test.
- `liver`: the 77 AMOS livers of `--livers DIR`; every 5th file is a test shape: 61 train /
  16 test. (Once OUT/liver/groomed exists, `--livers` is read no more.)
For every (cohort, method) row: `fit` on the training folder, then `evaluate` on the test folder
(1,000 samples). A finished fit (OUT/COHORT/METHOD/fit_metrics.json) and a finished evaluation
(OUT/COHORT/METHOD-evaluation/metrics.json) are reused, so an interrupted benchmark resumes (delete
`METHOD-evaluation/` to re-evaluate only); the table is printed at the end (Markdown), and the rows
are written to `--json` (default OUT/compare.json) with the commit and machine under
"provenance".

`hgcn` matches the results with the defaults (balanced transport, 30 over-relaxed Sinkhorn
iterations since config version 9, 100 plain ones in version 8, the deformation smoothing since
version 10, and the normal-only pull); `hgcn-paper` with the paper's plain softmax and free pull
(the defaults before config version 8), `hgcn-transport` with 30 plain iterations and the free
pull (neither with the deformation smoothing), `hgcn-v9` with the defaults but no deformation
smoothing (config version 9's matching); the generator learns from the shapes so matched
(each run's `matching` section). `hgcn-joint` trains the β-VAE end to end with the
correspondence network (`generator.mode` "joint"). `hgcn-ssm` refines the correspondences with
the point-distribution model (`model.ssm_modes` 4) before the generator learns from them.

    python bench/compare.py --out OUT [--cohorts lv liver] [--livers LIVERS]
                            [--methods hgcn sgcn cpd-pca hgcn-joint hgcn-transport hgcn-ssm
                                       hgcn-paper hgcn-v9]
                            [--lv-epochs 30] [--liver-epochs 15] [--json PATH]

`--livers` is required when the liver cohort is asked for (the default asks for both).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

from common import write_json

from shapeatlas.data.synthetic_lv import write_lv_cohort
from shapeatlas.mesh.groom import GroomOptions, groom_cohort, load_manifest
from shapeatlas.runs.evaluate import evaluate_run
from shapeatlas.runs.fit import fit_run
from shapeatlas.training.config import FitConfig

log = logging.getLogger("compare")
#: Each method's FitConfig fields (sections as dicts of their fields); `row` adds the epochs.
HGCN = {"method": "rasm", "model": {"features": "hybrid"}}
METHODS = {"hgcn": HGCN,
           "sgcn": {"method": "rasm", "model": {"features": "spatial"}},
           "cpd-pca": {"method": "cpd-pca"},
           # the β-VAE trained end to end with the correspondence network
           "hgcn-joint": {**HGCN, "generator": {"mode": "joint"}},
           # hGCN with 30 transport iterations when matching (the generator learns from those
           # shapes; the default is 30 over-relaxed ones, the deformation smoothing and the
           # normal-only pull)
           "hgcn-transport": {**HGCN, "matching": {"transport_iterations": 30,
                                                   "transport_relaxation": 1.0,
                                                   "deformation_smoothing": 0,
                                                   "refine_motion": "free"}},
           # hGCN matched as in the paper and before config version 8: plain softmax, free pull
           "hgcn-paper": {**HGCN, "matching": {"transport_iterations": 0,
                                               "deformation_smoothing": 0,
                                               "refine_motion": "free"}},
           # hGCN matched as in config version 9: the defaults without the deformation smoothing
           "hgcn-v9": {**HGCN, "matching": {"deformation_smoothing": 0}},
           # hGCN with the point-distribution model (4 modes) refining the correspondences
           "hgcn-ssm": {"method": "rasm", "model": {"features": "hybrid", "ssm_modes": 4}}}


def split_groomed(groomed: Path, out: Path, every: int) -> tuple[Path, Path]:
    """Copy a groomed folder into train/ and test/ (every `every`-th shape is a test shape)."""
    manifest = load_manifest(groomed)
    shapes = sorted(manifest["shapes"], key=lambda s: s["name"])
    parts = {"train": [s for i, s in enumerate(shapes) if i % every],
             "test": [s for i, s in enumerate(shapes) if not i % every]}
    for part, rows in parts.items():
        d = out / part
        if (d / "groom.json").is_file():
            continue
        d.mkdir(parents=True, exist_ok=True)
        for s in rows:
            shutil.copy(groomed / s["output"], d / s["output"])
        (d / "groom.json").write_text(json.dumps({**manifest, "shapes": rows}, indent=1))
    return out / "train", out / "test"


#: The message when the liver cohort must be groomed and no folder was given.
NO_LIVERS = "the liver cohort needs --livers DIR, a folder of the 77 AMOS liver surfaces"


def prepare(cohort: str, out: Path, livers: str | Path | None = None) -> tuple[Path, Path]:
    """Groom the cohort into OUT/COHORT/groomed once (the livers from the folder `livers`) and
    split it. -> (train folder, test folder)"""
    root = out / cohort
    groomed = root / "groomed"
    if not (groomed / "groom.json").is_file():
        if cohort == "lv":
            write_lv_cohort(root / "raw", n=60, seed=0, phenotypes="mixed")
            src = root / "raw"
        else:
            if livers is None:
                raise SystemExit(NO_LIVERS)
            if not Path(livers).is_dir():
                raise SystemExit(f"--livers {livers}: not a folder")
            src = Path(livers)
        groom_cohort(src, groomed, GroomOptions(watertight="auto", target_vertices=2000))
    return split_groomed(groomed, root, every=4 if cohort == "lv" else 5)


def fitted(cohort: str, method: str, out: Path, epochs: int,
           livers: str | Path | None = None) -> Path:
    """OUT/COHORT/METHOD, fitted first if it is not there yet."""
    train, _ = prepare(cohort, out, livers)
    run = out / cohort / method
    if not (run / "fit_metrics.json").is_file():
        shutil.rmtree(run, ignore_errors=True)
        cfg = FitConfig(**METHODS[method]).replace(training={"epochs": epochs})
        fit_run(train, run, cfg)
    return run


def row(cohort: str, method: str, out: Path, epochs: int,
        livers: str | Path | None = None) -> dict:
    run = fitted(cohort, method, out, epochs, livers)
    _, test = prepare(cohort, out, livers)
    ev = out / cohort / f"{method}-evaluation"  # beside the run: a run folder is an input
    if not (ev / "metrics.json").is_file():
        t0 = time.perf_counter()
        evaluate_run(run, test, ev, n_samples=1000, seed=0)
        log.info("%s %s: evaluated in %.0f s", cohort, method, time.perf_counter() - t0)
    m = json.loads((ev / "metrics.json").read_text())
    fit = json.loads((run / "fit_metrics.json").read_text())
    p = m["plausibility"]
    return {
        "cohort": cohort, "method": method, "n_train": m["n_train"], "n_test": m["n_test"],
        "D": m["latent_dim"],
        "cd": m["matching"]["chamfer_mm"]["mean"], "hd": m["matching"]["hausdorff_mm"]["mean"],
        "gen": m["generalization_mm"][-1]["mean"], "gen_se": m["generalization_mm"][-1]["se"],
        "spec": m["specificity_mm"]["vertex_mean"], "spec_se": m["specificity_mm"]["vertex_se"],
        "spec_surf": m["specificity_mm"]["surface_mean"],
        "compact3": m["compactness"][2] if len(m["compactness"]) > 2 else None,
        "ks": p.get("volume_ks"), "accept": p.get("acceptance_rate"),
        "valid": p["validity"]["valid"],
        "closed": min(p["validity"]["watertight"], p["validity"]["no_self_intersections"]),
        "fit_s": fit["fit_seconds"],
        "sample_s": m["sampling_seconds"],
    }


def table(rows: list[dict]) -> str:
    head = ("| cohort | method | train/test | D | matching CD / HD (mm) | generalization (mm) | "
            "specificity (mm) | compactness (3 modes) | volume KS | acceptance | watertight, no "
            "self-intersection | valid | fit (s) | sample 1000 (s) |")
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        lines.append(
            f"| {r['cohort']} | {r['method']} | {r['n_train']}/{r['n_test']} | {r['D']} | "
            f"{r['cd']:.2f} / {r['hd']:.2f} | {r['gen']:.2f} ± {r['gen_se']:.2f} | "
            f"{r['spec']:.2f} ± {r['spec_se']:.2f} | {r['compact3']:.3f} | "
            f"{r['ks']:.3f} | {100 * r['accept']:.1f}% | {100 * r['closed']:.1f}% | "
            f"{100 * r['valid']:.1f}% | "
            f"{r['fit_s']:.0f} | {r['sample_s']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cohorts", nargs="+", default=["lv", "liver"], choices=["lv", "liver"])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--lv-epochs", type=int, default=30)
    p.add_argument("--liver-epochs", type=int, default=15)
    p.add_argument("--livers", metavar="DIR",
                   help="folder of the 77 AMOS liver surfaces (mm); required for --cohorts liver")
    p.add_argument("--out", required=True,
                   help="working folder: cohorts, fits and evaluations (reused when present)")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="where to write the rows (default OUT/compare.json)")
    args = p.parse_args()
    if "liver" in args.cohorts and args.livers is None:
        p.error(NO_LIVERS)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    rows = []
    for cohort in args.cohorts:
        for method in args.methods:
            rows.append(row(cohort, method, out,
                            args.lv_epochs if cohort == "lv" else args.liver_epochs,
                            args.livers))
            write_json(args.json or out / "compare.json", {"rows": rows})
    print(table(rows))


if __name__ == "__main__":
    main()
