"""Benchmark: does `fit --atlases auto` tell left kidneys from right ones?

A left and a right kidney are mirror images of each other, more or less: no rigid motion turns
one into the other, so the two sides are two groups that differ in shape, not in pose. From a
folder of kidney label maps (e.g. KiTS23, where both kidneys share label 1), with every
default but the two options that keep each kidney as its own shape:

    shapeatlas groom KITS --out OUT/groomed --components each --target-vertices 2000
    shapeatlas fit OUT/groomed --out OUT/run --atlases auto

then the number of atlases chosen, the tests behind that choice, and the adjusted Rand index
of the training shapes' labels against their side (grooming names each shape `..._left` or
`..._right`). How far apart the sides are in the descriptors `auto` clusters (the training
shapes' normalised shapes, rigidly aligned to their consensus) is given too: the 6-fold
cross-validated accuracy of a logistic regression told each shape's side, on 2, 5 and up to
10 principal modes (those that keep 90% of the variance; 0.5: no better than chance; near 1:
the sides are separable, though not necessarily into two clusters), and the adjusted Rand
index of the descriptors' 2-means clusters against the sides.
`--skip-fit` scores a finished OUT/run again.

    python bench/kidney_sides.py --kits KITS --out OUT [--skip-fit] [--json PATH]

Prints a Markdown row and writes it to `--json` (default OUT/kidney_sides.json), with the
commit and machine under "provenance". OUT must be new or this benchmark's own; a groomed
OUT/groomed is reused.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import numpy as np
from common import write_json
from mirrored_livers import print_row, score_run, shapeatlas
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import cross_val_score

from shapeatlas.models.clustering import principal_scores, rigid_consensus, soft_cluster
from shapeatlas.runs.load import load_model


def separability(run: Path, right: list[bool]) -> dict:
    """How far apart the sides are in the descriptors: the cross-validated accuracy of telling
    them apart with their labels, by modes, and the adjusted Rand index of their 2-means
    clusters (the package's soft k-means, as `--atlases 2` seeds it)."""
    model = load_model(run, device="cpu")
    aligned, _, _ = rigid_consensus(getattr(model, "base_", model).training_shapes_)
    accuracy = {}
    for modes in (2, 5, 10):
        scores = principal_scores(aligned, max_modes=modes)[:, 0]
        accuracy[str(scores.shape[1])] = float(np.mean(cross_val_score(
            LogisticRegression(max_iter=5000), scores, np.asarray(right, int), cv=6)))
    two = soft_cluster(aligned, 2, temperature=0.25, restarts=10, seed=0)
    return {"side_accuracy_by_modes": accuracy, "two_means_ari": float(
        adjusted_rand_score(right, two.memberships.argmax(axis=1)))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kits", type=Path, required=True, help="folder of kidney label maps")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--skip-fit", action="store_true", help="score a finished OUT/run again")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    groomed, run = args.out / "groomed", args.out / "run"
    groom_s = fit_s = None
    if args.skip_fit:
        if not (run / "fit_metrics.json").is_file():
            raise SystemExit(f"--skip-fit: {run} is not a finished run")
    else:
        if not (groomed / "groom.json").is_file():
            shutil.rmtree(groomed, ignore_errors=True)
            groom_s = shapeatlas("groom", str(args.kits), "--out", str(groomed), "--components",
                                 "each", "--target-vertices", "2000")
        for old in (run, run.with_name("run.partial")):
            shutil.rmtree(old, ignore_errors=True)
        fit_s = shapeatlas("fit", str(groomed), "--out", str(run), "--atlases", "auto")
    names = [s["name"] for s in json.loads((groomed / "groom.json").read_text())["shapes"]]
    sides = [name.rsplit("_", 1)[-1] for name in names]
    if set(sides) != {"left", "right"}:
        raise SystemExit(f"{groomed}: expected shapes named ..._left and ..._right, got "
                         f"{sorted(set(sides))}")
    right = [side == "right" for side in sides]
    result = {**score_run(run, names, right), "groom_s": groom_s, "fit_s": fit_s,
              **separability(run, right)}
    print_row("kidneys (left + right)", result)
    print("sides told apart, knowing them (6-fold accuracy by modes): "
          + ", ".join(f"{k}: {v:.2f}" for k, v in result["side_accuracy_by_modes"].items())
          + f"; 2-means clusters against the sides: adjusted Rand index "
          f"{result['two_means_ari']:.2f}")
    path = write_json(args.json or args.out / "kidney_sides.json", result)
    print(f"rows in {path}")


if __name__ == "__main__":
    main()
