"""Benchmark: does `fit --atlases auto` find two groups of real organs that differ in shape?

The cohort: 2 x `--per-group` AMOS livers drawn at random (`--seed`) from `--livers DIR`; the
first group as they are (L_NAME.ply), the second mirrored across the sagittal plane (x -> -x,
faces reversed so that they stay outward: R_NAME.ply). A mirrored liver is a liver of the other
chirality: no rigid motion turns one group into the other, so grooming's alignment cannot hide
the difference, and the groups differ in shape as much as the livers differ from their own
mirror images, not in pose. (Each liver is in one group only.)

Then, with every default: `shapeatlas fit OUT/cohort --out OUT/run --atlases auto` (which
grooms the raw folder first), and from its fit_metrics.json the number of atlases chosen, the
tests behind that choice, and the adjusted Rand index of the training shapes' labels against
the groups (1: the groups recovered exactly; 0: no better than chance).

`--reuse-shared` keeps a finished OUT/run and fits only what follows its shared network (the
choice of M, the clusters and their β-VAEs) again, into OUT/rerun: `shapeatlas fit
OUT/run/groomed --out OUT/rerun --resume` with OUT/run's shared network and configuration.
The shared network does not depend on how M is chosen, so this measures a new choice of M
without the hour of grooming and training.

    python bench/mirrored_livers.py --livers LIVERS --out OUT [--per-group 30] [--seed 0]
                                    [--reuse-shared] [--json PATH]

Prints a Markdown table and writes it to `--json` (default OUT/mirrored_livers.json), with the
commit and machine under "provenance". OUT must be new or this benchmark's own.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import write_json
from sklearn.metrics import adjusted_rand_score

from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.io import read_mesh, write_mesh

log = logging.getLogger("mirrored_livers")


def make_cohort(livers: Path, out: Path, per_group: int, seed: int) -> list[str]:
    """Write the two groups into `out`; -> the names (L_... then R_...)."""
    files = sorted(p for p in livers.iterdir() if p.suffix.lower() == ".obj")
    if len(files) < 2 * per_group:
        raise SystemExit(f"{livers}: {len(files)} livers, {2 * per_group} needed")
    order = np.random.default_rng(seed).permutation(len(files))
    out.mkdir(parents=True)
    names = []
    for k, i in enumerate(order[:2 * per_group]):
        mesh = read_mesh(files[i])
        if k < per_group:
            name = f"L_{files[i].stem}"
            moved = mesh
        else:
            name = f"R_{files[i].stem}"
            moved = Mesh(np.asarray(mesh.vertices) * [-1.0, 1.0, 1.0],
                         np.asarray(mesh.faces)[:, ::-1], name=name)
        write_mesh(moved, out / f"{name}.ply")
        names.append(name)
    return names


def shapeatlas(*args: str) -> float:
    """Run one shapeatlas command quietly, as a user would; -> its wall time (s)."""
    cmd = [sys.executable, "-m", "shapeatlas", "-q", *args]
    log.info("%s", " ".join(cmd))
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def score_run(run: Path, names: list[str], truth: list[bool]) -> dict:
    """The atlases a finished `fit --atlases auto` run chose and how its training labels match
    the known groups (`truth`, one per name in `names`)."""
    atlases = json.loads((run / "fit_metrics.json").read_text()).get("atlases") or {}
    labels = atlases.get("labels") or {}
    found = [labels.get(name, 0) for name in names]
    return {"n_groomed": len(names), "groups": [int(len(truth) - sum(truth)), int(sum(truth))],
            "atlases_chosen": int(atlases.get("n_atlases", 1)),
            "selection": atlases.get("selection") or {},
            "adjusted_rand_index": float(adjusted_rand_score(truth, found))}


def print_row(cohort: str, result: dict) -> None:
    """One Markdown row (with its header) of a scored run."""
    tests = "; ".join(f"{t['shapes']} shapes: p = {t['p']:.2f}"
                      + (" (split)" if t["split"] else "")
                      for t in result["selection"].get("tests", []))
    print(f"| {cohort} | atlases chosen | bimodality tests | adjusted Rand index | fit (s) |")
    print("|---|---|---|---|---|")
    print(f"| {' + '.join(map(str, result['groups']))} | {result['atlases_chosen']} | {tests} | "
          f"{result['adjusted_rand_index']:.3f} | "
          f"{'–' if result['fit_s'] is None else format(result['fit_s'], '.0f')} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--livers", type=Path, required=True, help="folder of the AMOS liver OBJs")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--per-group", type=int, default=30, help="livers per group (default 30)")
    p.add_argument("--seed", type=int, default=0, help="which livers go to which group")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--reuse-shared", action="store_true",
                   help="keep OUT/run's shared network; fit the clusters again into OUT/rerun")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    cohort, run = args.out / "cohort", args.out / "run"
    groomed = run / "groomed"
    if args.reuse_shared:
        if not (run / "shared" / "fit_summary.json").is_file():
            raise SystemExit(f"--reuse-shared: {run} has no trained shared network; run "
                             "without --reuse-shared first")
        first, run = run, args.out / "rerun"
        for old in (run, run.with_name("rerun.partial")):
            shutil.rmtree(old, ignore_errors=True)
        shutil.copytree(first / "shared", run / "shared")
        shutil.copy2(first / "config.json", run / "config.json")
        fit_s = shapeatlas("fit", str(groomed), "--out", str(run), "--resume")
    else:
        if args.out.exists():
            shutil.rmtree(cohort, ignore_errors=True)
            for old in (run, run.with_name("run.partial")):
                shutil.rmtree(old, ignore_errors=True)
        make_cohort(args.livers, cohort, args.per_group, args.seed)
        fit_s = shapeatlas("fit", str(cohort), "--out", str(run), "--atlases", "auto")
    names = [s["name"] for s in json.loads((groomed / "groom.json").read_text())["shapes"]]
    result = {"per_group": args.per_group, "seed": args.seed, "reuse_shared": args.reuse_shared,
              **score_run(run, names, [name.startswith("R_") for name in names]), "fit_s": fit_s}
    print_row("livers (as they are + mirrored)", result)
    path = write_json(args.json or args.out / "mirrored_livers.json", result)
    print(f"rows in {path}")


if __name__ == "__main__":
    main()
