"""Benchmark: does `fit --atlases auto` tell left kidneys from right ones?

A left and a right kidney are mirror images of each other, more or less: no rigid motion turns
one into the other, so the two sides are two groups that differ in shape, not in pose. From a
folder of kidney label maps (e.g. KiTS23, where both kidneys share label 1), with every
default but the two options that keep each kidney as its own shape:

    shapeatlas groom KITS --out OUT/groomed --components each --target-vertices 2000
    shapeatlas fit OUT/groomed --out OUT/run --atlases auto

then the number of atlases chosen, the tests behind that choice, and the adjusted Rand index
of the training shapes' labels against their side (grooming names each shape `..._left` or
`..._right`).

    python bench/kidney_sides.py --kits KITS --out OUT [--json PATH]

Prints a Markdown row and writes it to `--json` (default OUT/kidney_sides.json), with the
commit and machine under "provenance". OUT must be new or this benchmark's own; a groomed
OUT/groomed is reused.
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

from common import write_json
from mirrored_livers import print_row, score_run

log = logging.getLogger("kidney_sides")


def shapeatlas(*args: str) -> float:
    """Run one shapeatlas command; -> its wall time (s)."""
    cmd = [sys.executable, "-m", "shapeatlas", "-q", *args]
    log.info("%s", " ".join(cmd))
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kits", type=Path, required=True, help="folder of kidney label maps")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    groomed, run = args.out / "groomed", args.out / "run"
    groom_s = None
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
    result = {**score_run(run, names, [side == "right" for side in sides]),
              "groom_s": groom_s, "fit_s": fit_s}
    print_row("kidneys (left + right)", result)
    path = write_json(args.json or args.out / "kidney_sides.json", result)
    print(f"rows in {path}")


if __name__ == "__main__":
    main()
