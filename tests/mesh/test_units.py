"""Units: shapes far from the cohort's size are named with the unit that explains them and left
out of grooming (or refused by fit) unless kept on purpose; every suggested unit exists."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh

from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh.checks import diagnose
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.groom import GroomOptions, groom_cohort
from shapeatlas.mesh.io import write_mesh
from shapeatlas.mesh.units import (
    UNIT_SCALE,
    likely_unit,
    rms_radius,
    size_outliers,
    unit_hint,
)


def ellipsoid(scale: float, *, seed: int, name: str) -> Mesh:
    rng = np.random.default_rng(seed)
    t = trimesh.creation.icosphere(subdivisions=2, radius=1.0)
    axes = np.array([60.0, 45.0, 35.0]) * (1.0 + 0.08 * rng.standard_normal(3))
    return Mesh(np.asarray(t.vertices) * axes * scale, t.faces, name=name)


def cohort(n: int, *, odd: dict[int, float] | None = None) -> list[Mesh]:
    odd = odd or {}
    return [ellipsoid(odd.get(i, 1.0), seed=i, name=f"Amos-{i:03d}.obj") for i in range(n)]


def test_rms_radius_of_a_sphere_does_not_depend_on_the_triangulation():
    for sub in (2, 4):
        t = trimesh.creation.icosphere(subdivisions=sub, radius=20.0)
        assert rms_radius(Mesh(t.vertices, t.faces)) == pytest.approx(20.0, rel=0.01)


@pytest.mark.parametrize("scale, unit, word", [(0.1, "cm", "smaller"), (1 / 25.4, "in", "smaller"),
                                               (1e-3, "m", "smaller"), (1e3, "um", "larger")])
def test_a_shape_in_another_unit_is_named_with_that_unit(scale, unit, word):
    outliers = size_outliers(cohort(8, odd={3: scale}))
    assert [o.name for o in outliers] == ["Amos-003.obj"]
    message = outliers[0].message
    assert message.startswith("Amos-003.obj is ") and "than the cohort's median" in message
    assert f"use --input-units {unit}" in message, message
    factor = float(message.split(" is ")[1].split("x ")[0])
    assert factor == pytest.approx(1 / scale if word == "smaller" else scale, rel=0.1)
    assert f"x {word} than" in message


def test_natural_spread_and_small_cohorts_flag_nothing():
    rng = np.random.default_rng(0)
    wide = [ellipsoid(float(np.exp(0.3 * rng.standard_normal())), seed=i, name=str(i))
            for i in range(30)]
    assert size_outliers(wide) == []
    assert size_outliers(cohort(4, odd={0: 0.1})) == []  # too few for statistics


def test_every_suggested_unit_exists_on_the_command_line():
    from shapeatlas.cli import build_parser

    groom = build_parser()._subparsers._group_actions[0].choices["groom"]
    choices = next(a.choices for a in groom._actions if "--input-units" in a.option_strings)
    assert list(choices) == list(UNIT_SCALE)
    for factor in np.geomspace(1e-5, 1e5, 41):
        unit = likely_unit(float(factor), tolerance=4.0)
        assert unit is None or unit in choices
    # micrometres: a 150 mm organ saved in µm reads as 150,000 mm
    assert "use --input-units um" in unit_hint(1000.0)
    huge = Mesh(np.asarray(ellipsoid(1000.0, seed=0, name="x").vertices),
                ellipsoid(1.0, seed=0, name="x").faces)
    assert any("--input-units um" in p for p in diagnose(huge))


def _write(meshes, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for m in meshes:
        write_mesh(m, folder / Path(m.name).with_suffix(".ply").name)
    return folder


def test_groom_leaves_an_outlier_out_unless_kept(tmp_path):
    raw = _write(cohort(5, odd={2: 0.1}), tmp_path / "raw")
    result = groom_cohort(raw, tmp_path / "out", GroomOptions(n_jobs=1, align="none"))
    assert [s["name"] for s in result.shapes] == ["Amos-000", "Amos-001", "Amos-003",
                                                  "Amos-004"]
    assert len(result.failed) == 1 and "Amos-002.ply is 10" in result.failed[0]["error"]
    assert "use --input-units cm" in result.failed[0]["error"]
    kept = groom_cohort(raw, tmp_path / "kept",
                        GroomOptions(n_jobs=1, align="none", keep_outliers=True))
    assert len(kept.shapes) == 5 and not kept.failed


def test_groom_reads_micrometres_and_inches(tmp_path):
    mesh = ellipsoid(1.0, seed=0, name="a")
    for unit in ("um", "in"):
        raw = _write([mesh.with_vertices(mesh.vertices / UNIT_SCALE[unit])], tmp_path / unit)
        out = groom_cohort(raw, tmp_path / f"out_{unit}",
                           GroomOptions(n_jobs=1, align="none", input_units=unit))
        assert out.shapes[0]["volume_ml"] == pytest.approx(mesh.volume / 1000.0, rel=1e-6)


def test_fit_refuses_a_groomed_folder_with_an_outlier_unless_forced(tmp_path):
    from shapeatlas.runs.fit import load_cohort
    from shapeatlas.training.config import FitConfig

    data = _write(cohort(6, odd={4: 0.1}), tmp_path / "groomed")
    shapes = [{"name": f"Amos-{i:03d}", "source": str(data / f"Amos-{i:03d}.ply"),
               "output": f"Amos-{i:03d}.ply", "transform": np.eye(4).tolist()} for i in range(6)]
    (data / "groom.json").write_text(json.dumps(
        {"format": "shapeatlas-groom", "version": 1, "shapes": shapes, "failed": []}))
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(ShapeAtlasError, match=r"groom.json: Amos-004.ply is [\d.]+x smaller .*"
                                              r"--input-units cm.*--keep-outliers"):
        load_cohort(data, run, FitConfig())
    meshes, _ = load_cohort(data, run, FitConfig(grooming={"keep_outliers": True}))
    assert len(meshes) == 6


_WORKERS = """
import os, sys, time
from shapeatlas.mesh.groom import _map

def work(i):
    print(os.getpid(), flush=True)
    time.sleep(120)

_map(work, [0, 1], 2, None)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.timeout(120)
def test_groom_workers_die_with_a_killed_parent(tmp_path):
    script = tmp_path / "workers.py"
    script.write_text(_WORKERS)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        pids = [int(proc.stdout.readline()) for _ in range(2)]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in pids)
    finally:
        for p in [proc.pid, *pids]:
            try:
                os.kill(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
