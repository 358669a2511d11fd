"""One CLI smoke test per verb on CPU, plus the exit codes for bad arguments and bad files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from shapes import asymmetric_blob

from shapeatlas.cli import main
from shapeatlas.mesh.io import read_mesh, write_mesh


def test_help_of_every_verb(capsys):
    for verb in (["info"], ["groom"], ["synth"], ["synth", "lv"], ["demo"]):
        with pytest.raises(SystemExit) as ex:
            main([*verb, "--help"])
        assert ex.value.code == 0
        assert "usage: shapeatlas" in capsys.readouterr().out


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "shapeatlas.cli", "--version"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.startswith("shapeatlas ")


@pytest.mark.parametrize("argv, fragment", [
    (["groom"], "required"),
    (["groom", "/definitely/not/here", "--out", "x"], "does not exist"),
    (["synth", "lv", "--out", "x", "--n", "-3"], "positive integer"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_exit_2_with_one_line(capsys, argv, fragment):
    with pytest.raises(SystemExit) as ex:
        main(argv)
    assert ex.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err


def test_info(tmp_path, capsys):
    p = write_mesh(asymmetric_blob(), tmp_path / "blob.ply")
    bad = tmp_path / "bad.obj"
    bad.write_text("v 0 0 0\n")
    assert main(["info", str(p)]) == 0
    out = capsys.readouterr().out
    assert "watertight yes" in out and "problems: none" in out
    assert main(["info", str(p), str(bad), "--json"]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["watertight"] and rows[0]["volume_ml"] > 0
    assert "point cloud" in rows[1]["error"]


def test_synth_and_groom(tmp_path, capsys):
    assert main(["synth", "lv", "--n", "3", "--out", str(tmp_path / "lv"), "--seed", "1",
                 "-q"]) == 0
    truth = json.loads((tmp_path / "lv" / "truth.json").read_text())
    assert len(truth["shapes"]) == 3
    assert main(["groom", str(tmp_path / "lv"), "--out", str(tmp_path / "g"),
                 "--target-vertices", "600", "--jobs", "1", "-q"]) == 0
    manifest = json.loads((tmp_path / "g" / "groom.json").read_text())
    assert [s["n_vertices"] for s in manifest["shapes"]] == [600, 600, 600]
    assert "groomed 3 of 3 meshes" in capsys.readouterr().out


def test_groom_reports_bad_file_and_exits_1(tmp_path, capsys):
    src = tmp_path / "in"
    write_mesh(asymmetric_blob(), src / "good.ply")
    (src / "nan.obj").write_text("v 0 0 0\nv nan 0 0\nv 0 1 0\nf 1 2 3\n")
    assert main(["groom", str(src), "--out", str(tmp_path / "g"), "-q", "--jobs", "1"]) == 1
    out = capsys.readouterr().out
    assert "skipped" in out and "nan.obj" in out and "NaN" in out
    assert read_mesh(tmp_path / "g" / "good.ply").is_watertight


def test_demo(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--n", "4", "-q"]) == 0
    out = capsys.readouterr().out
    assert "done in" in out and "lv_003" in out
    assert (tmp_path / "demo" / "groomed" / "groom.json").is_file()
