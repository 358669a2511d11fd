"""Ablation of R-ASM on one synthetic LV cohort, like the paper's: sGCN vs hGCN, with vs without
refinement, training sharpness lambda in {10, 100, 1e3, 1e4}, and the initial atlas (medoid vs
a random training shape, 3 seeds). Prints a markdown table.

A reduced budget keeps it to about 15 minutes on a 2-core CPU (default: 12 shapes, 6 epochs x 2
rounds); the 50-shape figures come from `bench/rasm_lv.py`.

    python bench/rasm_ablation.py [--n 12] [--epochs 6] [--out /tmp/shapeatlas-ablation]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from rasm_lv import parser as lv_parser
from rasm_lv import run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=12)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--out", default="/tmp/shapeatlas-ablation")
    p.add_argument("--skip-init", action="store_true", help="skip the initial-atlas study")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    base = ["--n", str(a.n), "--epochs", str(a.epochs), "--out", a.out, "--no-refine-too"]
    runs = [(f, lam, "medoid", 0) for f in ("hybrid", "spatial") for lam in (1e4, 1e3, 1e2, 1e1)]
    if not a.skip_init:
        runs += [("hybrid", 1e4, "random", s) for s in (1, 2, 3)]
    lines = ["| features | lambda | atlas init | refinement | GT error mm | % long axis | "
             "Chamfer mm | Hausdorff mm | baseline mm |", "|---|---|---|---|---|---|---|---|---|"]
    first = True
    for features, lam, init, seed in runs:
        tag = f"{features}-l{lam:g}-{init}{seed}"
        argv = base + ["--features", features, "--sharpness", str(lam), "--atlas-init", init,
                       "--fit-seed", str(seed), "--tag", tag]
        if not first:
            argv.append("--reuse-cohort")
        first = False
        r = run(lv_parser().parse_args(argv))
        for name, row in r["rows"].items():
            lines.append(
                f"| {'hGCN' if features == 'hybrid' else 'sGCN'} | {lam:g} | {init}"
                f"{'' if init == 'medoid' else f' (seed {seed})'} | "
                f"{'yes' if name == 'refined' else 'no'} | {row['gt_error_mm']:.2f} | "
                f"{row['gt_error_pct_long_axis']:.2f} | {row['chamfer_mm']:.2f} | "
                f"{row['hausdorff_mm']:.2f} | {r['baseline_gt_error_mm']:.2f} |")
        print(lines[-2], lines[-1], sep="\n", flush=True)
    table = "\n".join(lines)
    Path(a.out, "ablation.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
