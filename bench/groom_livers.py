"""Benchmark: does grooming keep each liver's volume and give a valid surface?

Grooms a folder of meshes with `--watertight --target-vertices N` (forced: failed shapes are kept
so every one can be measured; alignment off, it moves no volume) and prints, per shape:

- the input's volume: the generalised winding number (libigl) > 1/2 on a 1 mm grid, which for a
  nearly closed surface agrees with its signed volume within 0.1%;
- the groomed surface's volume and the difference in %;
- validity by the package's own check (closed 2-manifold, one component, no self-intersecting
  faces: `mesh.validity.self_intersecting_faces`) and, when the optional `tetgen` package is
  importable, whether TetGen tetrahedralises it;
- groom's own verdict (`volume_check` in groom.json).

Then a summary, and a JSON (`--json`, default groom_livers.json in the working folder) with the
figures, and the commit and machine under "provenance".

    python bench/groom_livers.py DATA_FOLDER [--target-vertices 2500] [--jobs 1]
        [--json groom_livers.json] [--limit N]

The input volumes take about 10 s a liver; they are cached by file content (--cache).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from common import write_json

from shapeatlas.mesh.groom import GroomOptions, find_mesh_files, groom_cohort
from shapeatlas.mesh.io import read_mesh
from shapeatlas.mesh.validity import self_intersecting_faces

#: Grid spacing (mm) of the input's winding-number volume.
VOLUME_PITCH_MM = 1.0
#: Points evaluated at once (bounds memory).
CHUNK = 2_000_000


def winding_volume_ml(path: str) -> float:
    """Volume (mL) of {generalised winding number > 1/2} of the file's surface on a 1 mm grid."""
    import igl

    m = read_mesh(path)
    v, f = np.asarray(m.vertices, dtype=np.float64), np.asarray(m.faces, dtype=np.int64)
    lo, hi = v.min(0) - 2 * VOLUME_PITCH_MM, v.max(0) + 2 * VOLUME_PITCH_MM
    axes = [np.arange(a, b, VOLUME_PITCH_MM) for a, b in zip(lo, hi)]
    # One x-slab at a time keeps the point arrays small.
    yz = np.stack(np.meshgrid(axes[1], axes[2], indexing="ij"), -1).reshape(-1, 2)
    per = max(1, CHUNK // len(yz))
    inside = 0
    for s in range(0, len(axes[0]), per):
        xs = axes[0][s:s + per]
        pts = np.concatenate([np.repeat(xs, len(yz))[:, None], np.tile(yz, (len(xs), 1))], 1)
        inside += int((igl.fast_winding_number(v, f, pts) > 0.5).sum())
    return inside * VOLUME_PITCH_MM**3 / 1000.0


def tetgen_accepts(path: str) -> bool | None:
    """Does TetGen tetrahedralise the surface? None when tetgen is not installed."""
    try:
        import tetgen
    except ImportError:
        return None
    m = read_mesh(path)
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # TetGen writes scratch files into the working folder on failure
        try:
            tetgen.TetGen(np.asarray(m.vertices), np.asarray(m.faces)).tetrahedralize(quality=False)
            return True
        except Exception:  # noqa: BLE001 - TetGen raises RuntimeError and others on refusal
            return False
        finally:
            os.chdir(cwd)


def check_output(path: str) -> dict:
    m = read_mesh(path)
    n_si = len(self_intersecting_faces(m.vertices, m.faces))
    return {"volume_ml": m.volume / 1000.0 if m.is_watertight else None,
            "closed": bool(m.is_watertight), "components": int(m.n_components),
            "self_intersecting_faces": n_si,
            "valid": bool(m.is_watertight and m.n_components == 1 and n_si == 0),
            "tetgen": tetgen_accepts(path)}


def _digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def _pmap(fn, items, jobs):
    if jobs <= 1:
        return [fn(x) for x in items]
    with ProcessPoolExecutor(max_workers=jobs) as ex:
        return list(ex.map(fn, items, chunksize=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", help="folder of input meshes (mm)")
    p.add_argument("--target-vertices", type=int, default=2500)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--limit", type=int, default=0, help="only the first N files")
    p.add_argument("--json", default="groom_livers.json", help="where to write the figures")
    p.add_argument("--cache", help="cache of the input volumes, by file content",
                   default=str(Path(tempfile.gettempdir()) / "groom_livers_volumes.json"))
    args = p.parse_args()
    files = find_mesh_files(args.data)
    if args.limit:
        files = files[:args.limit]

    cache_path = Path(args.cache)
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    keys = [_digest(f) for f in files]
    todo = [f for f, k in zip(files, keys) if k not in cache]
    if todo:
        print(f"input volumes: {len(todo)} to compute")
        for f, vol in zip(todo, _pmap(winding_volume_ml, [str(f) for f in todo], args.jobs)):
            cache[_digest(f)] = vol
        cache_path.write_text(json.dumps(cache, indent=1))
    volume_in = {f.stem: cache[k] for f, k in zip(files, keys)}

    with tempfile.TemporaryDirectory() as tmp:
        forced = {"keep_failed": True} if "keep_failed" in GroomOptions.__dataclass_fields__ else {}
        opts = GroomOptions(watertight=True, target_vertices=args.target_vertices,
                            n_jobs=args.jobs, align="none", **forced)
        t0, c0 = time.perf_counter(), time.process_time()
        result = groom_cohort(files, Path(tmp) / "out", opts)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        outs = [str(Path(tmp) / "out" / s["output"]) for s in result.shapes]
        checks = _pmap(check_output, outs, args.jobs)

    rows = []
    print(f"{'shape':<12}{'in mL':>9}{'out mL':>9}{'diff %':>8}{'valid':>7}{'tetgen':>8}  verdict")
    for s, c in zip(result.shapes, checks):
        vin = volume_in[s["name"]]
        diff = None if c["volume_ml"] is None else 100.0 * (c["volume_ml"] / vin - 1.0)
        verdict = s.get("volume_check", {}).get("verdict", "-")
        rows.append({"name": s["name"], "volume_in_ml": vin, "diff_percent": diff,
                     "verdict": verdict, **c})
        print(f"{s['name']:<12}{vin:9.1f}"
              + (f"{c['volume_ml']:9.1f}{diff:+8.2f}" if diff is not None else f"{'open':>17}")
              + f"{c['valid']!s:>7}{c['tetgen']!s:>8}  {verdict}")
    for f in result.failed:
        print(f"FAILED {f['name']}: {f['error']}")
    diffs = np.array([r["diff_percent"] if r["diff_percent"] is not None else np.nan
                      for r in rows])
    worst = int(np.nanargmax(np.abs(diffs))) if np.isfinite(diffs).any() else None
    tet = [r["tetgen"] for r in rows if r["tetgen"] is not None]
    summary = {
        "n_inputs": len(files), "n_groomed": len(rows), "n_failed": len(result.failed),
        "within_1_percent": int(np.sum(np.abs(diffs) <= 1.0)),
        "worst": None if worst is None else {"name": rows[worst]["name"],
                                             "diff_percent": float(diffs[worst])},
        "valid_own_check": int(sum(r["valid"] for r in rows)),
        "tetgen_accepted": int(sum(tet)) if tet else None,
        "flagged_by_groom": [r["name"] for r in rows if r["verdict"] not in ("ok", "-")],
        "groom_seconds": seconds, "groom_seconds_per_shape": seconds / max(len(files), 1),
        # CPU time of this process: the grooming's own with --jobs 1 (workers' is not counted)
        "groom_cpu_seconds_per_shape": cpu / max(len(files), 1),
        "jobs": args.jobs,
    }
    print(f"\n{summary['n_groomed']} of {len(files)} groomed; within 1% of the input's volume: "
          f"{summary['within_1_percent']}; worst {summary['worst']}")
    print(f"valid (own check): {summary['valid_own_check']}; accepted by TetGen: "
          f"{summary['tetgen_accepted'] if tet else 'tetgen not installed'}; flagged by groom: "
          f"{summary['flagged_by_groom'] or 'none'}")
    print(f"groom time: {seconds:.1f} s, {summary['groom_seconds_per_shape']:.2f} s per shape "
          f"with {args.jobs} job(s)"
          + (f"; CPU {summary['groom_cpu_seconds_per_shape']:.2f} s per shape" if args.jobs <= 1
             else ""))
    write_json(args.json, {"target_vertices": args.target_vertices, "summary": summary,
                           "shapes": rows})


if __name__ == "__main__":
    main()
