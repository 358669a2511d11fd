"""Benchmark: mAtlas-R-ASMG with M atlases vs one, on `bench/compare.py`'s cohorts and splits.

Reuses the shared correspondence network of `bench/compare.py`'s hGCN fits (OUT/COHORT/hgcn,
fitted first if missing), so every M is compared on the same network, the same data and the
same metrics:
- `lv`: the 60 synthetic LVs of two phenotypes (healthy / dilated), 45 train / 15 test:
  M = 1, 2, 3 and auto; cluster recovery (adjusted Rand index of the training labels, and of
  the predicted test labels, against the true phenotype).
- `liver`: the 77 AMOS livers, 61 / 16: M = 1, 3, 5 and auto.
Each M is fitted (clustering + per-cluster β-VAEs) and evaluated (`evaluate`, 1,000 samples;
on the LVs the virtual volumes are also compared with the known population, `population_ks`);
M = 1 and the first M > 1 are refitted with seeds 1 and 2 (initialisation of the clustering
and of the β-VAEs) to show how much the result depends on them. Prints a Markdown table per
cohort and writes the rows to `--json` (default OUT/multi_atlas.json), with the commit and
machine under "provenance".

    python bench/multi_atlas.py --out OUT [--cohorts lv liver] [--livers LIVERS] [--json PATH]

OUT is `bench/compare.py`'s --out folder; `--livers` is needed only if its liver cohort has not
been groomed there yet.
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
from compare import METHODS, prepare, row
from scipy.stats import kstest, uniform
from sklearn.metrics import adjusted_rand_score

from shapeatlas.data.synthetic_lv import PHENOTYPES, load_truth
from shapeatlas.mesh.groom import load_groomed
from shapeatlas.models.multi_atlas import MultiAtlasModel
from shapeatlas.runs.evaluate import evaluate_run
from shapeatlas.runs.load import load_model

ATLASES = {"lv": [1, 2, 3, "auto"], "liver": [1, 3, 5, "auto"]}
EPOCHS = {"lv": 30, "liver": 15}


def phenotypes(cohort: str, out: Path, meshes) -> np.ndarray | None:
    if cohort != "lv":
        return None
    truth = load_truth(out / "lv" / "raw")
    return np.array([truth[Path(m.name).stem].phenotype == "dilated" for m in meshes], int)


def evaluation_dir(run: Path) -> Path:
    """A run's evaluation folder, beside it (a run folder is an input and is never written)."""
    return run.with_name(run.name + "-evaluation")


def population_ks(cohort: str, run: Path) -> float | None:
    """KS distance between the virtual volumes and the LV population they imitate: the mixed
    cohort is half healthy, half dilated, each phenotype's volume uniform in its range. A
    reference without the sampling noise of the 45 training volumes (KS against those moves in
    steps of 0.022, and two samples of one distribution differ by about 0.13 on average)."""
    if cohort != "lv":
        return None
    table = np.genfromtxt(evaluation_dir(run) / "samples.csv", delimiter=",", names=True)
    vol = table["volume_ml"][np.isfinite(table["volume_ml"])]
    ranges = [PHENOTYPES[p]["edv_ml"] for p in ("healthy", "dilated")]

    def cdf(v):
        return np.mean([uniform(lo, hi - lo).cdf(v) for lo, hi in ranges], axis=0)

    return float(kstest(vol, cdf).statistic)


def scores(cohort: str, run: Path, test: Path) -> dict:
    m = evaluate_run(run, test, evaluation_dir(run), n_samples=1000, seed=0)
    p = m["plausibility"]
    gen = m["generalization_mm"][-1]
    return {"gen": gen["mean"], "gen_se": gen["se"],
            "spec": m["specificity_mm"]["vertex_mean"],
            "spec_se": m["specificity_mm"]["vertex_se"],
            "ks": p.get("volume_ks"), "ks_population": population_ks(cohort, run),
            "accept": p.get("acceptance_rate"),
            "closed": min(p["validity"]["watertight"], p["validity"]["no_self_intersections"]),
            "sample_s": m["sampling_seconds"], "clusters": m.get("clusters")}


def one(cohort: str, out: Path, atlases, seed: int, base, base_seconds: float,
        evaluate: bool) -> dict:
    train, test = prepare(cohort, out)
    run = out / cohort / f"multi-M{atlases}-s{seed}"
    done = run / "bench.json"
    if done.is_file() and (not evaluate or (evaluation_dir(run) / "metrics.json").is_file()):
        res = json.loads(done.read_text())
        if evaluate and cohort == "lv" and res.get("ks_population") is None:
            res.update(scores(cohort, run, test))  # evaluated before samples.csv existed
            done.write_text(json.dumps(res, indent=1))
        return res
    meshes, _ = load_groomed(train)
    test_meshes, _ = load_groomed(test)
    shutil.rmtree(run, ignore_errors=True)
    base.fit_seconds_ = base_seconds
    cfg = base.config.replace(seed=seed, clustering={"atlases": atlases})
    t0 = time.perf_counter()
    model = MultiAtlasModel(cfg).fit(meshes, base=base)
    extra = time.perf_counter() - t0
    model.save(run)
    res = {"cohort": cohort, "atlases": atlases, "seed": seed, "M": model.n_atlases_,
           "weights": model.weights_.tolist(), "selection": model.selection_,
           "extra_fit_s": extra, "shared_fit_s": base_seconds,
           "labels": model.labels_.tolist()}
    truth = phenotypes(cohort, out, meshes)
    if truth is not None:
        res["ari_train"] = float(adjusted_rand_score(truth, model.labels_))
        res["ari_test"] = float(adjusted_rand_score(phenotypes(cohort, out, test_meshes),
                                                    model.predict(test_meshes)))
    if evaluate:
        res.update(scores(cohort, run, test))
    done.write_text(json.dumps(res, indent=1))
    return res


def _num(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def table(rows: list[dict]) -> str:
    lines = [("| cohort | atlases | seed | M | π | ARI train / test | same clusters as seed 0 "
             "(ARI) | generalization (mm) | specificity (mm) | volume KS (training) | volume KS "
             "(population) | acceptance | closed | fit beyond the shared network (s) |"),
             "|" + "---|" * 14]
    for r in rows:
        ari = (f"{r['ari_train']:.2f} / {r['ari_test']:.2f}" if "ari_train" in r else "–")
        ev = (f"{r['gen']:.2f} ± {r['gen_se']:.2f} | {r['spec']:.2f} ± {r['spec_se']:.2f} | "
              f"{r['ks']:.3f} | {_num(r.get('ks_population'))} | {100 * r['accept']:.1f}% | "
              f"{100 * r['closed']:.1f}%" if "gen" in r else "– | – | – | – | – | –")
        lines.append(f"| {r['cohort']} | {r['atlases']} | {r['seed']} | {r['M']} | "
                     f"{', '.join(f'{w:.2f}' for w in r['weights'])} | {ari} | "
                     f"{_num(r.get('ari_vs_seed0'), 2)} | {ev} | "
                     f"{r['extra_fit_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cohorts", nargs="+", default=["lv", "liver"], choices=["lv", "liver"])
    p.add_argument("--out", required=True,
                   help="bench/compare.py's --out folder (its hgcn fits are reused)")
    p.add_argument("--livers", metavar="DIR",
                   help="folder of the 77 AMOS liver surfaces, if OUT/liver is not groomed yet")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="where to write the rows (default OUT/multi_atlas.json)")
    p.add_argument("--seed-eval", nargs="*", default=["lv", "liver"], choices=["lv", "liver"],
                   help="cohorts whose seed 1 and 2 refits are also evaluated (default both)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    json_path = args.json or out / "multi_atlas.json"
    results: dict[str, list] = {}
    for cohort in args.cohorts:
        assert "hgcn" in METHODS
        # the shared network (reused when present)
        row(cohort, "hgcn", out, EPOCHS[cohort], args.livers)
        base_dir = out / cohort / "hgcn"
        base = load_model(base_dir, device="cpu")
        base_seconds = json.loads((base_dir / "fit_metrics.json").read_text())["fit_seconds"]
        rows = results[cohort] = []
        for atlases in ATLASES[cohort]:
            rows.append(one(cohort, out, atlases, 0, base, base_seconds, evaluate=True))
            write_json(json_path, {"cohorts": results})
        first = next(a for a in ATLASES[cohort] if a != 1)
        for atlases in (1, first):  # seeds 1, 2: how much M = 1 and the first M > 1 vary
            ref = next(r for r in rows if r["atlases"] == atlases)
            for seed in (1, 2):
                r = one(cohort, out, atlases, seed, base, base_seconds,
                        evaluate=cohort in args.seed_eval)
                r["ari_vs_seed0"] = float(adjusted_rand_score(ref["labels"], r["labels"]))
                rows.append(r)
                write_json(json_path, {"cohorts": results})
        print(table(rows))


if __name__ == "__main__":
    main()
