"""The scripts in examples/ run as a user runs them (a subprocess each, on tiny data, about
half a minute each on 2 CPU cores) and write what they say they write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shapeatlas.mesh import read_mesh

pytestmark = pytest.mark.examples

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TESTED = {"virtual_cohort.py", "shape_vs_variable.py"}


def _run(script: str, out: Path) -> tuple[dict, str]:
    # One thread: the tiny fit gains nothing from more, and the test run may share the CPU.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, str(EXAMPLES / script), "--out", str(out)],
                       capture_output=True, text=True, timeout=300, env=env, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads((out / "summary.json").read_text()), p.stdout


def test_every_example_is_run_here():
    assert {p.name for p in EXAMPLES.glob("*.py")} == TESTED


def test_virtual_cohort(tmp_path):
    summary, stdout = _run("virtual_cohort.py", tmp_path / "out")
    written = sorted((tmp_path / "out" / "virtual").glob("*.ply"))
    assert len(written) == summary["samples"] == 10
    first = read_mesh(written[0])
    assert first.n_vertices == summary["atlas_vertices"] == 200 and first.is_watertight
    assert (tmp_path / "out" / "model" / "model.safetensors").is_file()
    real, virtual = summary["real_volume_ml"], summary["virtual_volume_ml"]
    # LV-sized virtual shapes, none turned inside out
    assert 0.5 * real[0] < virtual[0] <= virtual[1] < 1.5 * real[1]
    assert "wrote 10 virtual shapes" in stdout


def test_shape_vs_variable(tmp_path):
    summary, stdout = _run("shape_vs_variable.py", tmp_path / "out")
    assert summary["shapes"] == 10 and summary["latent_dim"] == 3
    # EDV drives the codes, and the shape decoded at +1 sd encloses clearly more volume
    assert summary["r2"] > 0.3
    v, sd = summary["decoded_volume_ml"], summary["edv_ml"]["sd"]
    assert v["edv_plus_1sd"] - v["edv_mean"] > 0.25 * sd
    for name in ("edv_mean.ply", "edv_plus_1sd.ply"):
        assert read_mesh(tmp_path / "out" / name).n_vertices == 200
    assert "R² = " in stdout
