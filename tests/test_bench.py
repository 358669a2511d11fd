"""The benchmarks in bench/ start (their --help) and bench/common.py writes JSON with provenance.

Only `--help` runs here: the benchmarks themselves take minutes to hours.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "common")


def _help(name: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / f"{name}.py"), "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def helps() -> dict:
    """Every script's --help, run a few at a time (each start imports torch)."""
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        return dict(zip(SCRIPTS, pool.map(_help, SCRIPTS)))


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_runs(name, helps):
    p = helps[name]
    assert p.returncode == 0, p.stderr
    assert "usage:" in p.stdout


def _common():
    spec = importlib.util.spec_from_file_location("bench_common", BENCH / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_write_json_adds_provenance(tmp_path):
    common = _common()
    path = tmp_path / "sub" / "result.json"
    assert common.write_json(path, {"figure": 1.5}) == path
    data = json.loads(path.read_text())
    assert data["figure"] == 1.5
    prov = data["provenance"]
    assert prov["commit"]
    for key in ("dirty", "shapeatlas", "python", "torch", "platform", "cpu_count", "date_utc"):
        assert key in prov
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]  # no temporary file left


def test_write_json_replaces_the_file_whole(tmp_path):
    common = _common()
    path = tmp_path / "result.json"
    common.write_json(path, {"rows": list(range(1000))})
    common.write_json(path, {"rows": [1]})
    assert json.loads(path.read_text())["rows"] == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_compare_asks_for_the_livers_in_one_line(tmp_path):
    p = subprocess.run([sys.executable, str(BENCH / "compare.py"), "--cohorts", "liver",
                        "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, check=False)
    assert p.returncode == 2
    assert "--livers DIR" in p.stderr.splitlines()[-1]
    assert not any(tmp_path.iterdir())
