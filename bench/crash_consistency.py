"""Crash consistency of output folders: kill -9 every writing verb at a random moment.

For each verb (groom, synth, correspond, sample, reconstruct, evaluate, fit on a tiny cohort),
an existing complete output folder OUT (the "old" one) is overwritten (`--overwrite`) by a
different run (the "new" one), which is killed with SIGKILL (its whole process group) at a
random moment (seeded). Then OUT must be exactly the old folder (same files, same bytes) or the
new one (the files of a reference run of the new command, with the same bytes except for files
that record times or dates), never a mix; and running the new command again must succeed and
leave no staging folder behind (a killed fit is continued with --resume where its checkpoints
were kept).

    python bench/crash_consistency.py --kills 3 --seed 0 [--verbs fit groom] [--json PATH]

Prints one line per kill and a summary, and writes them to `--json` (default
crash_consistency.json in the working folder) with the commit and machine under "provenance";
exit code 1 if any check failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_json

#: Files whose bytes legitimately differ between two runs of the same command (times, dates).
VOLATILE = {"provenance.json", "samples.json", "metrics.json", "fit_metrics.json",
            "train_log.csv", "model.json", "training_poses.json"}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "shapeatlas.cli", *args]


def snapshot(folder: Path) -> dict[str, str] | None:
    """Relative path -> SHA-256 of every file under folder; None if it does not exist."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def is_new(snap: dict | None, ref: dict, *, fit: bool) -> bool:
    """OUT equals the reference run of the new command, bytes compared except volatile files
    (a fit's files all record times or floating-point sums: its file list only)."""
    if snap is None or sorted(snap) != sorted(ref):
        return False
    return fit or all(snap[k] == ref[k] for k in ref if Path(k).name not in VOLATILE
                      and not k.endswith(".png"))


def run(argv: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{p.stderr}")
    return time.perf_counter() - t0


def run_and_kill(argv: list[str], env: dict, after: float) -> bool:
    """Start argv in its own process group and SIGKILL the group after `after` seconds;
    -> whether it was killed (False: it finished first)."""
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        p.wait(timeout=after)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        return True


def setup(root: Path, env: dict) -> dict:
    """A small cohort, a CPD-PCA run for the verbs that need one, and a tiny R-ASM config."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from shapeatlas.nn.encoder import EncoderConfig
    from shapeatlas.training.config import FitConfig

    cohort, run_dir = root / "cohort", root / "run"
    run(cli("synth", "lv", "--n", "4", "--out", str(cohort), "--min-vertices", "400",
            "--max-vertices", "500", "-q"), env)
    cpd = FitConfig(method="cpd-pca", model={"atlas_vertices": 120},
                    training={"atlas_rounds": 1}, cpd={"iterations": 15},
                    grooming={"target_vertices": 300})
    (root / "cpd.json").write_text(cpd.to_json())
    run(cli("fit", str(cohort), "--out", str(run_dir), "--config", str(root / "cpd.json"),
            "--latent-dim", "2", "-q"), env)
    rasm = FitConfig(device="cpu",
                     model={"encoder": EncoderConfig(widths=(16, 16), heads=2, latent_dim=16),
                            "atlas_vertices": 120},
                     training={"epochs": 8, "atlas_rounds": 1}, matching={"refine_steps": 3},
                     grooming={"target_vertices": 300}, generator={"epochs": 100})
    (root / "rasm.json").write_text(rasm.to_json())
    c, r = str(cohort), str(run_dir)
    return {  # verb: (old command, new command), both without --out
        "synth": (["synth", "lv", "--n", "5", "--seed", "1", "--min-vertices", "300",
                   "--max-vertices", "400"],
                  ["synth", "lv", "--n", "3", "--seed", "2", "--min-vertices", "300",
                   "--max-vertices", "400"]),
        "groom": (["groom", c, "--target-vertices", "250", "--jobs", "1"],
                  ["groom", c, "--target-vertices", "300", "--jobs", "2"]),
        "correspond": (["correspond", r, f"{c}/lv_000.ply"], ["correspond", r, c]),
        "sample": (["sample", r, "-n", "8"], ["sample", r, "-n", "5", "--traverse", "1"]),
        "reconstruct": (["reconstruct", r, f"{c}/lv_001.ply"], ["reconstruct", r, c]),
        "evaluate": (["evaluate", r, "--test", c, "-n", "20"],
                     ["evaluate", r, "--test", c, "-n", "30", "--seed", "1"]),
        "fit": (["fit", c, "--config", str(root / "rasm.json"), "--seed", "0"],
                ["fit", c, "--config", str(root / "rasm.json"), "--seed", "1"]),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20, help="kills per verb (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbs", nargs="*", default=None, help="default: all")
    ap.add_argument("--json", default="crash_consistency.json", metavar="PATH",
                    help="where to write the results (default %(default)s)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    failures, tally, kills = 0, {}, []
    with tempfile.TemporaryDirectory(prefix="shapeatlas-crash-") as tmp:
        root = Path(tmp)
        verbs = setup(root, env)
        for verb, (old_cmd, new_cmd) in verbs.items():
            if args.verbs and verb not in args.verbs:
                continue
            fit = verb == "fit"
            out, pristine = root / f"out-{verb}", root / f"old-{verb}"
            q = ["-q"]
            run(cli(*old_cmd, "--out", str(out), *q), env)
            shutil.copytree(out, pristine)
            old = snapshot(out)
            t_new = run(cli(*new_cmd, "--out", str(out), "--overwrite", *q), env)
            ref = snapshot(out)
            counts = {"old": 0, "new": 0, "finished": 0, "MIX": 0}
            for k in range(args.kills):
                shutil.rmtree(out)
                shutil.copytree(pristine, out)
                assert snapshot(out) == old
                after = rng.uniform(0.0, 1.1 * t_new)
                killed = run_and_kill(cli(*new_cmd, "--out", str(out), "--overwrite", *q), env,
                                      after)
                snap = snapshot(out)
                state = ("old" if snap == old else "new" if is_new(snap, ref, fit=fit)
                         else "MIX")
                counts["finished" if not killed else state] += not killed or state != "MIX"
                if state == "MIX":
                    counts["MIX"] += 1
                stage = out.parent / f"{out.name}.partial"
                resume = fit and (stage / "new" / "checkpoint.pt").is_file()
                again = cli(*new_cmd, "--out", str(out), "--overwrite", *q,
                            *(["--resume"] if resume else []))
                rerun = subprocess.run(again, env=env, capture_output=True, check=False)
                ok_rerun = rerun.returncode == 0
                ok_rerun = ok_rerun and is_new(snapshot(out), ref, fit=fit) and not stage.exists()
                bad = state == "MIX" or not ok_rerun
                failures += bad
                kills.append({"verb": verb, "kill": k + 1, "after_s": after, "new_run_s": t_new,
                              "killed": killed, "out": state, "resumed": resume,
                              "rerun_ok": ok_rerun, "failed": bad})
                print(f"{verb:<12} kill {k + 1:>2} at {after:5.2f} s of {t_new:5.2f} s: "
                      f"{'killed' if killed else 'finished first'}, OUT = {state}, rerun"
                      f"{' --resume' if resume else ''} {'ok' if ok_rerun else 'FAILED'}"
                      + ("  <-- FAIL" if bad else ""), flush=True)
            tally[verb] = counts
    print(json.dumps(tally))
    print(f"{failures} failure(s)")
    write_json(args.json, {"seed": args.seed, "kills_per_verb": args.kills, "tally": tally,
                           "failures": failures, "kills": kills})
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
