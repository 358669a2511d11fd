"""Benchmark: how `--atlases auto` should choose M, on descriptors with a known answer.

The descriptors are those `MultiAtlasModel` clusters (every training shape's normalised shape on
the shared atlas, rigidly aligned to their consensus), from `bench/compare.py`'s hGCN fits
(OUT/COHORT/hgcn, fitted first if missing). Cohorts with a known number of groups: the 45
two-phenotype training LVs (2), the healthy LVs alone (1), the dilated LVs alone (1); the 61
training livers (unknown; one organ, so 1 is expected); and, with `--mirrored RUN`, the
livers of `bench/mirrored_livers.py`'s run folder (2: as they are and mirrored) and each of its
groups alone (1). For each, M in 1..6 by:
- the bimodality test (the package's choice, `choose_atlases`), seeds 0, 1, 2, with the
  adjusted Rand index of its groups against the known ones, and the p-value of the whole set
  even where it is too small to be tested;
- prediction strength (`prediction_strength`), seeds 0, 1, 2;
- the gap statistic (uniform references in the principal box, one-standard-error rule);
- BIC of scikit-learn Gaussian mixtures, every covariance type, in 2, 3, 5 and 8 principal modes
  (with the adjusted Rand index of the chosen mixture against the known groups).
Then the bimodality test alone on smaller cohorts drawn from these (`subsets`): 10 draws of 40
of the 61 livers, and of 20 livers + 20 mirrored ones. Prints one line per set and writes the
choices to `--json` (default OUT/select-atlases.json), with the commit and machine under
"provenance".

    python bench/select_atlases.py [--out OUT] [--livers LIVERS] [--mirrored RUN] [--json PATH]

OUT is `bench/compare.py`'s --out folder (default: shapeatlas-compare in the system's temporary
folder); `--livers` is needed only if its liver cohort has not been groomed there yet.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
from common import write_json
from compare import fitted, prepare
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture

from shapeatlas.data.synthetic_lv import load_truth
from shapeatlas.mesh.groom import load_groomed
from shapeatlas.models.clustering import (
    ClusterWarning,
    bimodality_test,
    choose_atlases,
    group_scores,
    prediction_strength,
    principal_scores,
    rigid_consensus,
    soft_cluster,
)
from shapeatlas.runs.load import load_model

EPOCHS = {"lv": 30, "liver": 15}
TEMPERATURE, RESTARTS = 0.25, 10


def gap_statistic(shapes: np.ndarray, max_clusters: int, seed: int, references: int = 20) -> int:
    """Tibshirani, Walther & Hastie (2001) with the package's clustering; -> the chosen M."""
    scores = principal_scores(shapes)
    rng = np.random.default_rng(seed)
    lo, hi = scores.min(axis=0), scores.max(axis=0)
    refs = [rng.uniform(lo, hi, scores.shape) for _ in range(references)]

    def log_w(x, m):
        c = soft_cluster(x, m, temperature=TEMPERATURE, restarts=RESTARTS, seed=seed)
        return np.log(max(c.distortion, 1e-300))

    gap, se = [], []
    for m in range(1, max_clusters + 1):
        ref = np.array([log_w(x, m) for x in refs])
        gap.append(ref.mean() - log_w(scores, m))
        se.append(ref.std() * np.sqrt(1.0 + 1.0 / references))
    return next((m + 1 for m in range(max_clusters - 1) if gap[m] >= gap[m + 1] - se[m + 1]),
                max_clusters)


def bic_choices(shapes: np.ndarray, max_clusters: int, truth) -> list[dict]:
    flat = shapes.reshape(len(shapes), -1)
    u, sv, _ = np.linalg.svd(flat - flat.mean(axis=0), full_matrices=False)
    out = []
    for modes in (2, 3, 5, 8):
        x = u[:, :modes] * sv[:modes]
        for cov in ("spherical", "diag", "tied", "full"):
            fits = [GaussianMixture(m, covariance_type=cov, n_init=10, random_state=0).fit(x)
                    for m in range(1, max_clusters + 1)]
            best = int(np.argmin([f.bic(x) for f in fits]))
            ari = (float(adjusted_rand_score(truth, fits[best].predict(x)))
                   if truth is not None else None)
            out.append({"modes": modes, "covariance": cov, "chosen": best + 1, "ari": ari})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "shapeatlas-compare"),
                   help="bench/compare.py's --out folder (its hgcn fits are reused; default "
                   "%(default)s)")
    p.add_argument("--livers", metavar="DIR",
                   help="folder of the 77 AMOS liver surfaces, if OUT/liver is not groomed yet")
    p.add_argument("--mirrored", type=Path, default=None, metavar="RUN",
                   help="bench/mirrored_livers.py's run folder (OUT/run there): adds its livers")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="where to write the choices (default OUT/select-atlases.json)")
    args = p.parse_args()
    out = Path(args.out)
    sets = {}
    for cohort in ("lv", "liver"):
        base = load_model(fitted(cohort, "hgcn", out, EPOCHS[cohort], args.livers),
                          device="cpu")
        aligned, _, _ = rigid_consensus(base.training_shapes_)
        if cohort == "lv":
            train, _ = prepare(cohort, out)
            meshes, _ = load_groomed(train)
            truth = load_truth(out / "lv" / "raw")
            y = np.array([truth[Path(m.name).stem].phenotype == "dilated" for m in meshes], int)
            sets["lv (2 phenotypes)"] = (2, aligned, y)
            sets["lv healthy only"] = (1, aligned[y == 0], None)
            sets["lv dilated only"] = (1, aligned[y == 1], None)
        else:
            sets["liver"] = (1, aligned, None)
    if args.mirrored:
        base = load_model(args.mirrored / "shared", device="cpu")
        aligned, _, _ = rigid_consensus(base.training_shapes_)
        meshes, _ = load_groomed(args.mirrored / "groomed")
        y = np.array([Path(m.name).stem.startswith("R_") for m in meshes], int)
        sets["livers as they are + mirrored"] = (2, aligned, y)
        sets["livers as they are"] = (1, aligned[y == 0], None)
        sets["livers mirrored"] = (1, aligned[y == 1], None)
    rows = []
    warnings.simplefilter("ignore", ClusterWarning)
    for name, (answer, shapes, truth) in sets.items():
        top = min(6, len(shapes) // 3)
        ps = [prediction_strength(shapes, top, seed=s, temperature=TEMPERATURE,
                                  restarts=RESTARTS) for s in (0, 1, 2)]
        bimodal = [choose_atlases(shapes, top, seed=s) for s in (0, 1, 2)]
        # the test of the whole set: choose_atlases's first, or, in a set smaller than
        # SELECT_MIN_GROUP, run here
        whole = [sel["tests"][0]["p"] if sel["tests"]
                 else bimodality_test(group_scores(shapes), seed=s)["p"]
                 for s, (sel, _) in enumerate(bimodal)]
        rows.append({"set": name, "n": len(shapes), "answer": answer,
                     "bimodality": [{"seed": s, "chosen": sel["chosen"],
                                     "p": [t["p"] for t in sel["tests"]],
                                     "ari": (float(adjusted_rand_score(truth, labels))
                                             if truth is not None else None)}
                                    for s, (sel, labels) in enumerate(bimodal)],
                     "bimodality_p_whole_set": whole,
                     "prediction_strength": [{"seed": s, "chosen": r["chosen"],
                                              "curve": [c["strength"] for c in r["curve"]]}
                                             for s, r in enumerate(ps)],
                     "gap": [gap_statistic(shapes, top, s) for s in (0, 1, 2)],
                     "bic": bic_choices(shapes, top, truth)})
        r = rows[-1]
        print(f"{name} (n={r['n']}, answer {answer}): bimodality test chose "
              f"{[x['chosen'] for x in r['bimodality']]}, p of the first test "
              f"{[x['p'][0] if x['p'] else None for x in r['bimodality']]} (p of the whole "
              f"set {whole})"
              + (f", ARI {[round(x['ari'], 2) for x in r['bimodality']]}" if truth is not None
                 else "") + "; prediction strength chose "
              f"{[x['chosen'] for x in r['prediction_strength']]}, strength at M = 2: "
              f"{[round(x['curve'][1], 2) for x in r['prediction_strength']]}; gap statistic "
              f"chose {r['gap']}; BIC chose "
              f"{sorted({b['chosen'] for b in r['bic']})} over the mixtures"
              + (f" (best ARI {max(b['ari'] for b in r['bic']):.2f})" if truth is not None
                 else ""), flush=True)
    draws = subsets(sets)
    write_json(args.json or out / "select-atlases.json", {"sets": rows, "subsets": draws})


def subsets(sets: dict, draws: int = 10) -> list[dict]:
    """The bimodality test on smaller cohorts drawn from the sets: 40 of the 61 livers (no
    groups: how often it splits anyway) and, when the mirrored livers are there, 20 as they are
    + 20 mirrored (how often it finds the groups at that size). Draw k uses seed k."""
    out = []
    rng = np.random.default_rng(0)
    cases = [("40 of the 61 livers", sets["liver"][1], None)]
    if "livers as they are + mirrored" in sets:
        cases.append(("20 livers + 20 mirrored", *sets["livers as they are + mirrored"][1:]))
    for name, shapes, truth in cases:
        found = []
        for k in range(draws):
            if truth is None:
                idx = rng.choice(len(shapes), 40, replace=False)
            else:
                idx = np.concatenate([rng.choice(np.flatnonzero(truth == g), 20, replace=False)
                                      for g in (0, 1)])
            sel, labels = choose_atlases(shapes[idx], 6, seed=k)
            found.append({"chosen": sel["chosen"],
                          "ari": (float(adjusted_rand_score(truth[idx], labels))
                                  if truth is not None else None)})
        out.append({"cohort": name, "draws": found})
        print(f"{name}, {draws} draws: bimodality test chose "
              f"{[f['chosen'] for f in found]}"
              + (f", ARI {[round(f['ari'], 2) for f in found]}" if truth is not None else ""),
              flush=True)
    return out


if __name__ == "__main__":
    main()
