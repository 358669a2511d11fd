"""Benchmark: groom the 77 AMOS livers to watertight ~2,500-vertex aligned meshes.

Prints wall time, failures, watertightness, vertex counts and the volume of each output against
the volume of its voxelised input (the {winding number >= 1/2} cells), and with --twice checks
that grooming again gives byte-identical files.

    python bench/groom_livers.py [--data ../shared/data/liver-amos77] [--out /tmp/groom-bench] [--twice]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import shutil
import time
from pathlib import Path

import numpy as np

from shapeatlas.mesh.groom import GroomOptions, groom_cohort

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(HERE.parents[1] / "shared" / "data" / "liver-amos77"))
    p.add_argument("--out", default="/tmp/shapeatlas-groom-bench")
    p.add_argument("--target-vertices", type=int, default=2500)
    p.add_argument("--jobs", type=int, default=0)
    p.add_argument("--twice", action="store_true", help="groom again and compare the bytes")
    args = p.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    opts = GroomOptions(watertight=True, target_vertices=args.target_vertices, n_jobs=args.jobs)
    t0 = time.perf_counter()
    result = groom_cohort(args.data, out / "a", opts)
    dt = time.perf_counter() - t0
    shapes = result.shapes
    rel = np.array([s["volume_ml"] / s["voxel_volume_ml"] - 1 for s in shapes])
    nv = np.array([s["n_vertices"] for s in shapes])
    rms = np.array([s["align_rms_mm"] for s in shapes])
    print(f"inputs: {result.manifest['n_inputs']}, groomed: {len(shapes)}, failed: {len(result.failed)}")
    print(f"wall time: {dt:.1f} s ({dt / max(len(shapes), 1):.2f} s per shape)")
    print(f"watertight: {sum(s['watertight'] for s in shapes)}/{len(shapes)}")
    print(f"vertices: min {nv.min()}, max {nv.max()}")
    print(f"volume vs voxelised input: mean {100 * rel.mean():+.2f}%, "
          f"worst {100 * rel[np.argmax(np.abs(rel))]:+.2f}% "
          f"({shapes[int(np.argmax(np.abs(rel)))]['name']}), "
          f"within 3%: {(np.abs(rel) <= 0.03).sum()}/{len(shapes)}")
    print(f"alignment RMS to reference ({result.manifest['reference']}): "
          f"median {np.median(rms):.2f} mm, max {rms.max():.2f} mm")
    if args.twice:
        groom_cohort(args.data, out / "b", opts)
        files = sorted(f.name for f in (out / "a").iterdir())
        same = all(filecmp.cmp(out / "a" / f, out / "b" / f, shallow=False) for f in files)
        print(f"groomed twice, byte-identical: {same} ({len(files)} files)")
    (out / "summary.json").write_text(json.dumps({
        "seconds": dt, "n": len(shapes), "failed": len(result.failed),
        "volume_rel_err": rel.tolist()}, indent=1))


if __name__ == "__main__":
    main()
