"""Benchmark: how `fit` scales with the number of processes and with the size of the cohort.

Cohorts are synthetic LVs (`write_lv_cohort`, healthy and dilated, seed 0), groomed once as
`fit` grooms them (`groom_cohort`, every core) into OUT/groomed-N; each fit runs as its own
command (`python -m shapeatlas fit`, or `torchrun --nproc_per_node=P -m shapeatlas fit`) with
the default configuration except `training.epochs` (`--epochs`), one atlas round and no early
stopping, so that an epoch is a fixed amount of work.

- Processes (`--procs`, on `--procs-n` shapes): shapes per second of the correspondence
  training (the mean of train_log.csv's `shapes_per_second` over the epochs after the first)
  for 1 process with all the machine's threads, 1 process with one thread, and P processes
  with (threads / P) threads each (torchrun), so that the comparison is at equal total threads;
  also each run's whole fit time and the speed-up over 1 process.
- Cohort size (`--sizes`): for N shapes, one process: seconds per training epoch and per shape,
  the matching of the training shapes, the β-VAE, the whole fit and the fit's peak resident
  memory (the child process's maximum RSS, from `os.wait4`). The largest size is generated and
  groomed (its grooming time is recorded as `groom_s_largest`, 0 when OUT already held it);
  each smaller cohort is its first N shapes.

    python bench/scaling.py --out OUT [--procs 1 2] [--procs-n 100] [--sizes 100 500 1000]
                            [--epochs 3] [--json PATH]

Prints a Markdown table per part and writes the rows to `--json` (default OUT/scaling.json),
with the commit and machine under "provenance". Fits already finished in OUT are not reused.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import write_json

from shapeatlas.data.synthetic_lv import write_lv_cohort
from shapeatlas.mesh.groom import GroomOptions, groom_cohort
from shapeatlas.training.config import FitConfig

log = logging.getLogger("scaling")


def cohort(out: Path, n: int) -> tuple[Path, float]:
    """OUT/groomed-N (made once); -> (folder, grooming seconds, 0 when it was there)."""
    groomed = out / f"groomed-{n}"
    if (groomed / "groom.json").is_file():
        return groomed, 0.0
    raw = out / f"raw-{n}"
    shutil.rmtree(raw, ignore_errors=True)
    shutil.rmtree(groomed, ignore_errors=True)
    t0 = time.perf_counter()
    write_lv_cohort(raw, n=n, seed=0, phenotypes="mixed")
    cfg = FitConfig()
    groom_cohort(raw, groomed, GroomOptions(
        target_vertices=cfg.grooming.target_vertices, watertight="auto",
        consensus_rounds=cfg.grooming.consensus_rounds, n_jobs=os.cpu_count() or 1))
    return groomed, time.perf_counter() - t0


def run_fit(data: Path, run: Path, config: Path, *, procs: int, threads: int) -> dict:
    """One fit as its own command; -> wall seconds, peak RSS (MiB, the largest process) and
    the run's metrics and training log."""
    shutil.rmtree(run, ignore_errors=True)
    shutil.rmtree(run.parent / f"{run.name}.partial", ignore_errors=True)
    fit = ["-m", "shapeatlas", "-q", "fit", str(data), "--out", str(run), "--config",
           str(config)]
    cmd = ([sys.executable, *fit] if procs == 1 else
           [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={procs}", *fit])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"fit failed: {' '.join(cmd)}")
    metrics = json.loads((run / "fit_metrics.json").read_text())
    with open(run / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    # ru_maxrss of a waited-for child is the largest of it and its own waited-for children
    # (KiB on Linux): under torchrun, the largest process.
    return {"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024, "metrics": metrics,
            "rows": rows}


def epoch_rate(rows: list[dict]) -> float:
    later = rows[1:] or rows
    return sum(float(r["shapes_per_second"]) for r in later) / len(later)


def processes(out: Path, args, config: Path) -> list[dict]:
    data, _ = cohort(out, args.procs_n)
    cores = os.cpu_count() or 1
    plans = [(1, cores)] + ([(1, 1)] if cores > 1 else []) + [
        (p, max(1, cores // p)) for p in args.procs if p > 1]
    results = []
    for procs, threads in plans:
        r = run_fit(data, out / f"run-p{procs}-t{threads}", config, procs=procs,
                    threads=threads)
        m = r["metrics"]
        results.append({"processes": procs, "threads_each": threads, "n": args.procs_n,
                        "shapes_per_second": epoch_rate(r["rows"]),
                        "epoch_s": sum(float(x["seconds"]) for x in r["rows"][1:])
                        / max(len(r["rows"]) - 1, 1),
                        "fit_s": r["wall_s"], "matching_and_generator_s":
                        m["fit_seconds"] - m["correspondence_seconds"],
                        "peak_rss_mib": r["peak_rss_mib"], "world_size": m["world_size"],
                        "final_loss": float(r["rows"][-1]["loss"]),
                        "chamfer_mm_mean": m["chamfer_mm_mean"]})
        log.info("%d process(es) x %d thread(s): %.2f shapes/s", procs, threads,
                 results[-1]["shapes_per_second"])
    base = results[0]["shapes_per_second"]
    for r in results:
        r["speedup"] = r["shapes_per_second"] / base
    return results


def subset(groomed: Path, out: Path, n: int) -> Path:
    """OUT/groomed-N-of-M: the first N shapes of a groomed folder (its manifest cut to them)."""
    manifest = json.loads((groomed / "groom.json").read_text())
    if n >= len(manifest["shapes"]):
        return groomed
    sub = out / f"{groomed.name}-first-{n}"
    shutil.rmtree(sub, ignore_errors=True)
    sub.mkdir()
    manifest["shapes"] = manifest["shapes"][:n]
    for s in manifest["shapes"]:
        shutil.copy2(groomed / s["output"], sub / s["output"])
    (sub / "groom.json").write_text(json.dumps(manifest, indent=1))
    return sub


def sizes(out: Path, args, config: Path) -> list[dict]:
    cores = os.cpu_count() or 1
    results = []
    largest, groom_s = cohort(out, max(args.sizes))
    for n in sorted(args.sizes):
        data = subset(largest, out, n)
        r = run_fit(data, out / f"run-n{n}", config, procs=1, threads=cores)
        m, rows = r["metrics"], r["rows"]
        later = rows[1:] or rows
        epoch_s = sum(float(x["seconds"]) for x in later) / len(later)
        results.append({"n": n, "epoch_s": epoch_s,
                        "epoch_ms_per_shape": 1000 * epoch_s / n,
                        "matching_and_generator_s": m["fit_seconds"] - m["correspondence_seconds"],
                        "generator_s": m["generator_seconds"], "fit_s": r["wall_s"],
                        "fit_s_per_shape": r["wall_s"] / n, "peak_rss_mib": r["peak_rss_mib"]})
        log.info("%d shapes: %.1f s an epoch, fit %.0f s, peak %.0f MiB", n, epoch_s,
                 r["wall_s"], r["peak_rss_mib"])
    for r in results:
        r["groom_s_largest"] = groom_s
    return results


def table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    head = "| " + " | ".join(c[1] for c in cols) + " |"
    rule = "|" + "|".join("---" for _ in cols) + "|"
    body = ["| " + " | ".join(format(r[c[0]], c[2]) for c in cols) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="scratch folder")
    ap.add_argument("--procs", type=int, nargs="*", default=[1, 2],
                    help="process counts to compare (default 1 2; 1 is always measured)")
    ap.add_argument("--procs-n", type=int, default=100,
                    help="shapes of the process comparison (default 100)")
    ap.add_argument("--sizes", type=int, nargs="*", default=[100, 500, 1000],
                    help="cohort sizes (default 100 500 1000; none: skip this part)")
    ap.add_argument("--epochs", type=int, default=3,
                    help="training epochs of every fit (default 3; the first is not timed)")
    ap.add_argument("--json", type=Path, default=None, help="default OUT/scaling.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    config = args.out / "config.json"
    config.write_text(FitConfig(training={"epochs": args.epochs, "atlas_rounds": 1,
                                          "patience": 0}).to_json())
    result = {"epochs": args.epochs}
    if args.procs:
        result["processes"] = processes(args.out, args, config)
        print(table(result["processes"], [
            ("processes", "processes", "d"), ("threads_each", "threads each", "d"),
            ("shapes_per_second", "shapes/s (training)", ".2f"), ("speedup", "speed-up", ".2f"),
            ("fit_s", "fit s", ".0f"), ("peak_rss_mib", "peak MiB", ".0f"),
            ("final_loss", "final loss", ".5f"), ("chamfer_mm_mean", "Chamfer mm", ".3f")]))
    if args.sizes:
        result["sizes"] = sizes(args.out, args, config)
        print(table(result["sizes"], [
            ("n", "shapes", "d"), ("epoch_s", "epoch s", ".1f"),
            ("epoch_ms_per_shape", "ms/shape/epoch", ".0f"),
            ("matching_and_generator_s", "matching + β-VAE s", ".0f"), ("fit_s", "fit s", ".0f"),
            ("fit_s_per_shape", "fit s/shape", ".2f"), ("peak_rss_mib", "peak MiB", ".0f")]))
    path = write_json(args.json or args.out / "scaling.json", result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
