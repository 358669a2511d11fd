"""Data-parallel fits under torchrun: the process group helpers, and `fit` with 2 gloo processes
(a whole run, a resume after one process is killed, refusals)."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch.multiprocessing as mp
from shapes import groomed_lv_cohort

from shapeatlas.errors import ShapeAtlasError
from shapeatlas.nn.encoder import EncoderConfig
from shapeatlas.runs.fit import distributed_problem
from shapeatlas.training.config import FitConfig
from shapeatlas.training.distributed import SINGLE, Dist, PeerError, from_env, session

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
TINY = FitConfig(device="cpu", seed=3,
                 model={"encoder": EncoderConfig(widths=(16, 16), heads=2, latent_dim=16),
                        "atlas_vertices": 200},
                 training={"epochs": 3, "atlas_rounds": 2, "batch_size": 2},
                 matching={"refine_steps": 5}, generator={"epochs": 100})


def test_outside_torchrun_a_fit_is_one_process():
    assert from_env({}) is SINGLE
    assert not SINGLE.active and SINGLE.is_main
    assert SINGLE.gather(5) == [5] and SINGLE.on_main(lambda: 7) == 7
    SINGLE.agree("anything", "x")  # nothing to compare with
    d = from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "h",
                  "MASTER_PORT": "1"})
    assert d == Dist(rank=2, world_size=4, local_rank=0) and d.active and not d.is_main
    assert list(d.shard(10)) == [2, 6]


@pytest.mark.parametrize("env, words", [
    ({"WORLD_SIZE": "two"}, "must be integers"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "do not make a process group"),
    ({"WORLD_SIZE": "2", "RANK": "1"}, "start the processes with torchrun"),
])
def test_a_malformed_torchrun_environment_is_one_clear_error(env, words):
    with pytest.raises(ShapeAtlasError, match=words):
        from_env(env)


@pytest.mark.parametrize("n, world", [(7, 1), (7, 2), (8, 2), (2, 3), (10, 4)])
def test_each_epoch_deals_every_shape_out_in_equal_shares(n, world):
    from shapeatlas.training.loop import _EpochSampler

    cfg = FitConfig(seed=5)
    shares = []
    for rank in range(world):
        sampler = _EpochSampler(n, Dist(rank=rank, world_size=world), cfg)
        sampler.set_round_epoch(1, 4)
        shares.append(list(sampler))
    assert len({len(s) for s in shares}) == 1 and len(shares[0]) == -(-n // world)
    assert set().union(*shares) == set(range(n))
    if world == 1:  # one process: the seeded order of (seed, round, epoch)
        seed = int(np.random.SeedSequence([5, 1, 4]).generate_state(1)[0])
        assert shares[0] == np.random.default_rng(seed).permutation(n).tolist()
    again = _EpochSampler(n, Dist(rank=0, world_size=world), cfg)
    again.set_round_epoch(1, 5)
    assert list(again) != shares[0] or n <= world  # another epoch, another order


def test_configurations_that_cannot_be_shared_out_are_named():
    assert distributed_problem(FitConfig()) is None
    assert "single-atlas" in distributed_problem(FitConfig(clustering={"atlases": 2}))
    assert "single-atlas" in distributed_problem(FitConfig(method="cpd-pca"))
    assert "one process" in distributed_problem(FitConfig(generator={"mode": "joint"}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exchanges(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch

    dist = Dist(rank=rank, world_size=2)
    got = {}
    with session(dist, "cpu", timeout_s=10):
        got["sum"] = float(dist.sum_(torch.tensor([rank + 1.0])))
        got["gather"] = dist.gather(rank * 10)
        got["main"] = dist.on_main(lambda: "from 0")
        # The main process's own work (grooming) may outlast the collectives' timeout.
        got["slow"] = dist.on_main(lambda: time.sleep(14) or "slow, from 0")
        dist.agree("a value both hold", "same")
        try:
            dist.agree("the data", f"rank {rank}")
        except PeerError as exc:
            got["disagree"] = str(exc)
        try:
            dist.on_main(lambda: 1 / 0)
        except ZeroDivisionError:
            got["main_error"] = "raised on the main process"
        except PeerError as exc:
            got["main_error"] = str(exc)
    Path(out, f"{rank}.json").write_text(json.dumps(got))


def test_two_processes_sum_gather_and_refuse_what_they_disagree_on(tmp_path):
    mp.start_processes(_exchanges, args=(_free_port(), str(tmp_path)), nprocs=2,
                       start_method="spawn", join=True)
    r0, r1 = (json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1))
    for r in (r0, r1):
        assert r["sum"] == 3.0 and r["gather"] == [0, 10] and r["main"] == "from 0"
        assert r["slow"] == "slow, from 0"
        assert "disagree on the data: process 1 differs from process 0" in r["disagree"]
    assert r0["main_error"] == "raised on the main process"
    assert r1["main_error"].startswith("process 0 stopped: division by zero")


# ---------------------------------------------------------------- fit under torchrun
@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lv")
    groomed_lv_cohort(root, n=7, seed=7)  # 7: one process gets a padded share
    return root / "groomed"


def _config(folder: Path, name: str, **sections) -> Path:
    path = folder / name
    path.write_text(TINY.replace(**sections).to_json())
    return path


def _torchrun(args: list[str], *, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*TORCHRUN, "-m", "shapeatlas", "-q", "fit", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _losses(run: Path) -> list[float]:
    with open(run / "train_log.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _rank_of(pid: int) -> int | None:
    try:
        env = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [int(e[5:]) for e in env if e.startswith(b"RANK=")]
    return ranks[0] if ranks else None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_two_gloo_processes_fit_and_resume_after_one_is_killed(cohort, tmp_path):
    cfg = _config(tmp_path, "cfg.json", training={"epochs": 12, "patience": 0})
    # An uninterrupted 2-process run.
    whole = tmp_path / "whole"
    done = _torchrun([str(cohort), "--out", str(whole), "--config", str(cfg)])
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((whole / "fit_metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["devices"] == ["cpu", "cpu"]
    assert metrics["epochs_run"] == 24 and metrics["n_shapes"] == 7
    assert json.loads((whole / "provenance.json").read_text())["world_size"] == 2
    assert not (tmp_path / "whole.partial").exists()

    # The same run, its rank-1 process killed once a few epochs are checkpointed.
    run = tmp_path / "run"
    proc = subprocess.Popen([*TORCHRUN, "-m", "shapeatlas", "-q", "fit", str(cohort), "--out",
                             str(run), "--config", str(cfg)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = run.parent / "run.partial" / "new" / "train_log.csv"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) > 4:
            break
        time.sleep(0.05)
    victims = [p for p in _children(proc.pid) if _rank_of(p) == 1]
    assert proc.poll() is None and victims, "the run ended before a process could be killed"
    os.kill(victims[0], 9)
    out, _ = proc.communicate(timeout=60)  # the other process is stopped too: no hang
    assert proc.returncode != 0
    assert (run.parent / "run.partial" / "new" / "checkpoint.pt").is_file()
    assert not run.exists()

    resumed = _torchrun([str(cohort), "--out", str(run), "--config", str(cfg), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # The resumed run replays the uninterrupted one (same sampler and noise seeds per epoch).
    np.testing.assert_allclose(_losses(run), _losses(whole), rtol=1e-5)
    from shapeatlas.models.atlas import AtlasModel

    a, b = AtlasModel.load(whole, device="cpu"), AtlasModel.load(run, device="cpu")
    np.testing.assert_allclose(a.atlas_vertices_, b.atlas_vertices_, atol=1e-4)


def test_processes_with_different_configurations_are_refused_at_start(cohort, tmp_path):
    # Each process reads its own config file: rank 1's asks for another seed.
    (tmp_path / "c0.json").write_text(TINY.to_json())
    (tmp_path / "c1.json").write_text(TINY.replace(seed=4).to_json())
    script = tmp_path / "by_rank.py"
    script.write_text(
        "import os, sys\nfrom shapeatlas.cli import main\n"
        f"cfg = os.path.join({str(tmp_path)!r}, 'c' + os.environ['RANK'] + '.json')\n"
        f"sys.exit(main(['-q', 'fit', {str(cohort)!r}, '--out', {str(tmp_path / 'run')!r}, "
        "'--config', cfg]))\n")
    t0 = time.monotonic()
    done = subprocess.run([*TORCHRUN, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode != 0
    assert ("shapeatlas: error: the processes of this run disagree on the configuration: "
            "process 1 differs from process 0") in done.stderr
    assert time.monotonic() - t0 < 60
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


def test_a_multi_atlas_fit_under_torchrun_is_refused_in_one_line(cohort, tmp_path):
    done = _torchrun([str(cohort), "--out", str(tmp_path / "run"), "--atlases", "2",
                      "--config", str(_config(tmp_path, "cfg.json"))])
    assert done.returncode != 0
    assert "several processes fit the single-atlas R-ASM model only" in done.stderr
    assert "shapeatlas/runs/" not in done.stderr and "shapeatlas/cli.py" not in done.stderr
