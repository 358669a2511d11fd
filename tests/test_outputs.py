"""Output folders (`shapeatlas.outputs`): refused before any work when they cannot or must not be
written, built beside the target and moved in whole, never mixed with an old run's files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from output_folders import assert_provenance
from shapes import asymmetric_blob

from shapeatlas import outputs
from shapeatlas.cli import main
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh.io import write_mesh
from shapeatlas.outputs import (
    PROVENANCE_NAME,
    STAGING_MARKER,
    check_output,
    output_names,
    staged_output,
    staging_dir,
    work_dir,
)


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under a folder (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def write_output(out: Path, files: dict[str, str], **kw) -> None:
    with staged_output(out, verb="test", **kw) as st:
        for name, text in files.items():
            (st.path / name).parent.mkdir(parents=True, exist_ok=True)
            (st.path / name).write_text(text)


# ------------------------------------------------------------------------------- the module
def test_new_folder_appears_whole_with_provenance(tmp_path):
    out = tmp_path / "a" / "out"
    with staged_output(out, verb="test", device="cpu") as st:
        assert st.path == work_dir(out) and not out.exists()
        (st.path / "x.txt").write_text("x")
        st.record(seconds=1.5)
    assert sorted(p.name for p in out.iterdir()) == [PROVENANCE_NAME, "x.txt"]
    assert not staging_dir(out).exists()
    prov = json.loads((out / PROVENANCE_NAME).read_text())
    assert prov["verb"] == "test" and prov["device"] == "cpu" and prov["seconds"] == 1.5
    for key in ("shapeatlas", "python", "torch", "platform", "date", "command"):
        assert key in prov


def test_non_empty_folder_is_refused_then_replaced_whole(tmp_path):
    out = tmp_path / "out"
    write_output(out, {"old.txt": "old", "sub/old2.txt": "old"})
    with pytest.raises(ShapeAtlasError, match="pass --overwrite to replace it whole"):
        write_output(out, {"new.txt": "new"})
    assert sorted(tree(out)) == sorted([PROVENANCE_NAME, "old.txt", "sub/old2.txt"])
    write_output(out, {"new.txt": "new"}, overwrite=True)
    assert sorted(tree(out)) == ["new.txt", PROVENANCE_NAME]
    assert not staging_dir(out).exists()
    # a folder that is not shapeatlas's is described by what it holds
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(ShapeAtlasError, match=r"holds 1 file or folders \(notes.txt\)"):
        check_output(tmp_path / "mine")
    (tmp_path / "empty").mkdir()
    write_output(tmp_path / "empty", {"x": "x"})  # an empty folder is fine


def test_fallback_swap_without_renameat2(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)
    out = tmp_path / "out"
    write_output(out, {"old.txt": "old"})
    write_output(out, {"new.txt": "new"}, overwrite=True)
    assert sorted(tree(out)) == ["new.txt", PROVENANCE_NAME]
    assert not staging_dir(out).exists()


def test_exchange_swaps_two_folders(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "1").write_text("a")
    (b / "2").write_text("b")
    if not outputs._exchange(a, b):
        pytest.skip("no renameat2 RENAME_EXCHANGE here")
    assert [p.name for p in a.iterdir()] == ["2"] and [p.name for p in b.iterdir()] == ["1"]


def test_a_failure_leaves_the_old_folder_and_no_staging(tmp_path):
    out = tmp_path / "out"
    write_output(out, {"old.txt": "old"})
    before = tree(out)
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with staged_output(out, verb="test", overwrite=True) as st:
                (st.path / "half.txt").write_text("half")
                raise exc
        assert tree(out) == before and not staging_dir(out).exists()


def test_resumable_staging_is_kept_and_resumed(tmp_path):
    out = tmp_path / "out"
    keep = lambda p: (p / "checkpoint").is_file()  # noqa: E731
    with pytest.raises(KeyboardInterrupt):
        with staged_output(out, verb="fit", resumable=keep) as st:
            (st.path / "checkpoint").write_text("epoch 3")
            raise KeyboardInterrupt
    assert (work_dir(out) / "checkpoint").read_text() == "epoch 3" and not out.exists()
    # a new run does not throw the work away silently
    with pytest.raises(ShapeAtlasError, match="unfinished fit: pass --resume"):
        with staged_output(out, verb="fit", resumable=keep):
            pass
    with staged_output(out, verb="fit", resumable=keep, resume=True) as st:
        assert (st.path / "checkpoint").read_text() == "epoch 3"
        (st.path / "model").write_text("done")
    assert sorted(tree(out)) == ["checkpoint", "model", PROVENANCE_NAME]
    with pytest.raises(ShapeAtlasError, match="nothing to resume"):
        with staged_output(out, verb="fit", resumable=keep, resume=True, overwrite=True):
            pass


def test_stale_staging_is_removed_but_never_an_unmarked_folder(tmp_path):
    out = tmp_path / "out"
    stage = staging_dir(out)
    # a staging folder left by a killed run (marker of a process that has ended)
    (stage / "new").mkdir(parents=True)
    (stage / "new" / "half.txt").write_text("half")
    (stage / STAGING_MARKER).write_text(json.dumps({
        "format": "shapeatlas-staging", "verb": "test", "pid": 2 ** 22 + 12345,
        "host": "elsewhere"}))
    write_output(out, {"x.txt": "x"})
    assert sorted(tree(out)) == [PROVENANCE_NAME, "x.txt"] and not stage.exists()
    # a folder of that name without the marker is the user's: refused, untouched
    (stage / "new").mkdir(parents=True)
    (stage / "precious.txt").write_text("mine")
    with pytest.raises(ShapeAtlasError, match="not a shapeatlas staging folder"):
        write_output(out, {"y.txt": "y"}, overwrite=True)
    assert (stage / "precious.txt").read_text() == "mine" and (out / "x.txt").is_file()


def test_staging_of_a_running_process_is_refused(tmp_path):
    out = tmp_path / "out"
    stage = staging_dir(out)
    stage.mkdir()
    import socket

    (stage / STAGING_MARKER).write_text(json.dumps({
        "format": "shapeatlas-staging", "verb": "test", "pid": os.getppid(),
        "host": socket.gethostname()}))
    with pytest.raises(ShapeAtlasError, match="is writing"):
        write_output(out, {"x": "x"})
    assert stage.is_dir()


def test_half_done_fallback_swap_is_undone(tmp_path):
    # killed between the two renames of the fallback: OUT missing, the old folder in staging
    out = tmp_path / "out"
    write_output(out, {"old.txt": "old"})
    stage = staging_dir(out)
    stage.mkdir()
    (stage / STAGING_MARKER).write_text(json.dumps({"format": "shapeatlas-staging",
                                                    "pid": -1, "host": "x"}))
    os.rename(out, stage / "old")
    with pytest.raises(ShapeAtlasError, match="pass --overwrite"):
        write_output(out, {"new.txt": "new"})
    assert sorted(tree(out)) == ["old.txt", PROVENANCE_NAME]
    write_output(out, {"new.txt": "new"}, overwrite=True)
    assert sorted(tree(out)) == ["new.txt", PROVENANCE_NAME] and not stage.exists()


def test_an_old_folder_swapped_out_is_never_resumed(tmp_path):
    # killed right after the atomic exchange: the staging folder's `new` holds the OLD output
    # (a finished run, checkpoint and all), OUT the new one; the old one must not look like
    # unfinished work to resume and swap back over the new one.
    out = tmp_path / "out"
    keep = lambda p: (p / "checkpoint").is_file()  # noqa: E731
    write_output(out, {"checkpoint": "old run"})
    old = tree(out)
    write_output(out, {"checkpoint": "new run"}, overwrite=True)
    new = tree(out)
    stage = staging_dir(out)
    marker = {"format": "shapeatlas-staging", "verb": "fit", "pid": -1, "host": "x",
              "overwrite": True, "run_id": json.loads(new[PROVENANCE_NAME])["run_id"]}
    (stage / "new").mkdir(parents=True)
    for name, data in old.items():
        (stage / "new" / name).write_bytes(data)
    (stage / STAGING_MARKER).write_text(json.dumps(marker))
    with pytest.raises(ShapeAtlasError, match="nothing to resume"):
        with staged_output(out, verb="fit", resumable=keep, resume=True):
            pass
    assert tree(out) == new
    with pytest.raises(ShapeAtlasError, match="pass --overwrite"):
        write_output(out, {"checkpoint": "third"}, resumable=keep)
    assert tree(out) == new
    write_output(out, {"checkpoint": "third"}, resumable=keep, overwrite=True)
    assert (out / "checkpoint").read_text() == "third" and not stage.exists()


def test_refusals(tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.ply").write_text("")
    (tmp_path / "file").write_text("")
    cases = [
        (tmp_path / "file", [], "is a file, not a folder"),
        (tmp_path / "file" / "x", [], "is a file, not a folder"),
        (tmp_path / "in", [tmp_path / "in"], "is the input folder"),
        (tmp_path / "in" / "sub", [tmp_path / "in"], "lies inside the input folder"),
        (tmp_path / "in", [tmp_path / "in" / "a.ply"], "is the input folder"),
        (tmp_path, [tmp_path / "in" / "a.ply"], "contains the input folder"),
    ]
    for out, inputs, match in cases:
        with pytest.raises(ShapeAtlasError, match=match):
            check_output(out, overwrite=True, inputs=inputs)
    # a new folder beside an input file holds none of the inputs: `correspond RUN a.ply --out c`
    assert check_output(tmp_path / "in" / "corr", inputs=[tmp_path / "in" / "a.ply"])
    monkeypatch.chdir(tmp_path / "in")
    with pytest.raises(ShapeAtlasError, match="contains the current working folder"):
        check_output(tmp_path, overwrite=True)
    # read-only parent (tests may run as root, for whom every folder is writable)
    monkeypatch.setattr(outputs.os, "access", lambda p, mode: Path(p) != tmp_path / "ro")
    (tmp_path / "ro").mkdir()
    with pytest.raises(ShapeAtlasError, match="is not writable"):
        check_output(tmp_path / "ro" / "out")


def test_output_names_refuse_collisions(tmp_path):
    assert output_names([Path("x/a.ply"), Path("y/b.stl")]) == ["a", "b"]
    with pytest.raises(ShapeAtlasError, match=r"x/a.ply and x/a.stl would both be written as "
                       r"'a': rename one"):
        output_names([Path("x/a.ply"), Path("x/a.stl")])


# ----------------------------------------------------------------------------- the verbs
@pytest.fixture(scope="module")
def cpd_run(tmp_path_factory):
    """A tiny CPD-PCA run and its raw cohort (seconds)."""
    from shapeatlas.training.config import FitConfig

    root = tmp_path_factory.mktemp("cpd")
    assert main(["synth", "lv", "--n", "5", "--out", str(root / "lv"), "-q",
                 "--min-vertices", "400", "--max-vertices", "500"]) == 0
    cfg = FitConfig(method="cpd-pca", model={"atlas_vertices": 120}, training={"atlas_rounds": 1},
                    cpd={"iterations": 15}, grooming={"target_vertices": 300})
    (root / "cfg.json").write_text(cfg.to_json())
    assert main(["fit", str(root / "lv"), "--out", str(root / "run"), "--config",
                 str(root / "cfg.json"), "--latent-dim", "2", "-q"]) == 0
    return root


def one_line_error(capsys, fragment: str) -> None:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err


@pytest.mark.parametrize("verb", ["groom", "synth lv", "synth kidney", "fit", "correspond",
                                  "sample", "reconstruct", "evaluate"])
def test_every_verb_records_provenance(verb, cpd_run, tmp_path, capsys):
    """(demo's: in tests/test_cli.py, with its run.)"""
    lv, run, out = str(cpd_run / "lv"), str(cpd_run / "run"), str(tmp_path / "out")
    small = ["--min-vertices", "300", "--max-vertices", "400", "-n", "2"]
    argv = {"groom": ["groom", lv, "--jobs", "1"], "synth lv": ["synth", "lv", *small],
            "synth kidney": ["synth", "kidney", *small], "fit": None,
            "correspond": ["correspond", run, f"{lv}/lv_000.ply"],
            "sample": ["sample", run, "-n", "2", "--format", "vtp"],
            "reconstruct": ["reconstruct", run, f"{lv}/lv_000.ply"],
            "evaluate": ["evaluate", run, "--test", lv, "-n", "10"]}[verb]
    if argv is None:  # the fixture's fit
        assert_provenance(cpd_run / "run", "fit")
        return
    assert main([*argv, "--out", out, "-q"]) == 0
    assert_provenance(tmp_path / "out", verb)


def test_demo_never_deletes_a_used_folder(tmp_path, capsys):
    d = tmp_path / "demo"
    (d / "run").mkdir(parents=True)
    (d / "run" / "checkpoint.pt").write_text("not really")
    (d / "run" / "my-notes.txt").write_text("precious")
    before = tree(d)
    assert main(["demo", "--out", str(d), "--n", "4", "-q"]) == 1
    one_line_error(capsys, "pass --overwrite to replace it whole or choose another --out")
    assert tree(d) == before


def test_inputs_are_never_written(cpd_run, tmp_path, capsys):
    lv, run = cpd_run / "lv", cpd_run / "run"
    before = tree(lv)
    for argv in (["groom", str(lv), "--out", str(lv), "--overwrite"],
                 ["groom", str(lv), "--out", str(lv / "g")],
                 ["fit", str(lv), "--out", str(lv), "--overwrite"],
                 ["correspond", str(run), str(lv), "--out", str(lv), "--overwrite"],
                 ["reconstruct", str(run), str(lv / "lv_000.ply"), "--out", str(lv),
                  "--overwrite"],
                 ["sample", str(run), "-n", "2", "--out", str(run), "--overwrite"],
                 ["evaluate", str(run), "--test", str(lv), "--out", str(cpd_run),
                  "--overwrite"]):
        assert main([*argv, "-q"] if argv[0] != "reconstruct" else argv) == 1, argv
        one_line_error(capsys, "input folder")
    assert tree(lv) == before


def test_name_collisions_are_refused(cpd_run, tmp_path, capsys):
    src = tmp_path / "in"
    write_mesh(asymmetric_blob(), src / "a.ply")
    write_mesh(asymmetric_blob(), src / "a.stl")
    write_mesh(asymmetric_blob(), src / "a_2.ply")
    assert main(["groom", str(src), "--out", str(tmp_path / "g"), "-q"]) == 1
    one_line_error(capsys, f"{src / 'a.ply'} and {src / 'a.stl'} would both be written as 'a'")
    assert not (tmp_path / "g").exists()
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    for d in (d1, d2):
        write_mesh(asymmetric_blob(), d / "x.ply")
    for verb in ("correspond", "reconstruct"):
        assert main([verb, str(cpd_run / "run"), str(d1), str(d2), "--out",
                     str(tmp_path / verb)] + (["-q"] if verb == "correspond" else [])) == 1
        one_line_error(capsys, f"{d1 / 'x.ply'} and {d2 / 'x.ply'} would both be written as 'x'")


def test_fit_never_replaces_a_finished_run_silently(cpd_run, tmp_path, capsys):
    run = cpd_run / "run"
    before = tree(run)
    assert json.loads((run / PROVENANCE_NAME).read_text())["verb"] == "fit"
    assert main(["fit", str(cpd_run / "lv"), "--out", str(run), "--method", "cpd-pca",
                 "-q"]) == 1
    one_line_error(capsys, "already holds the output of 'shapeatlas fit'")
    assert main(["fit", str(cpd_run / "lv"), "--out", str(run), "--resume", "-q"]) == 0
    assert "is complete: nothing to resume" in capsys.readouterr().out
    assert tree(run) == before


def test_rerun_replaces_whole_and_interrupt_leaves_the_old(cpd_run, tmp_path, capsys,
                                                           monkeypatch):
    run, s = cpd_run / "run", tmp_path / "s"
    assert main(["sample", str(run), "-n", "7", "--out", str(s), "-q"]) == 0
    assert main(["sample", str(run), "-n", "3", "--out", str(s), "-q"]) == 1
    one_line_error(capsys, "pass --overwrite")
    assert main(["sample", str(run), "-n", "3", "--out", str(s), "--overwrite", "-q"]) == 0
    assert sorted(p.name for p in s.iterdir()) == [
        PROVENANCE_NAME, "sample_00000.ply", "sample_00001.ply", "sample_00002.ply",
        "samples.json"]
    c = tmp_path / "c"
    assert main(["synth", "lv", "--n", "4", "--out", str(c), "--min-vertices", "300",
                 "--max-vertices", "400", "-q"]) == 0
    assert main(["synth", "lv", "--n", "2", "--out", str(c), "--min-vertices", "300",
                 "--max-vertices", "400", "--overwrite", "-q"]) == 0
    assert sorted(p.name for p in c.glob("*.ply")) == ["lv_000.ply", "lv_001.ply"]
    assert len(json.loads((c / "truth.json").read_text())["shapes"]) == 2
    assert len(list((c / "truth").iterdir())) == 2
    # Ctrl-C in a re-groom: the old groomed folder, whole; nothing else left
    g = tmp_path / "g"
    assert main(["groom", str(c), "--out", str(g), "--jobs", "1", "-q"]) == 0
    before = tree(g)
    import shapeatlas.mesh.groom as groom

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(groom, "write_mesh", interrupted)
    assert main(["groom", str(cpd_run / "lv"), "--out", str(g), "--jobs", "1", "--overwrite",
                 "-q"]) == 130
    assert "no partial files were left behind" in capsys.readouterr().err
    assert tree(g) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "g", "s"]


@pytest.mark.parametrize("verb", ["groom", "synth lv", "synth kidney", "fit", "correspond",
                                  "sample", "reconstruct", "evaluate", "demo"])
def test_unwritable_out_is_refused_before_any_work(verb, cpd_run, tmp_path, capsys,
                                                   monkeypatch):
    import shapeatlas.mesh.groom as groom

    def no_work(*a, **k):
        raise AssertionError("work started")

    monkeypatch.setattr(groom, "_prepare_one", no_work)
    for module in ("fit", "load"):  # every verb loads its run through runs.load
        monkeypatch.setattr(f"shapeatlas.runs.{module}.load_model", no_work)
    (tmp_path / "file").write_text("")
    lv, run = str(cpd_run / "lv"), str(cpd_run / "run")
    head = {"groom": ["groom", lv], "synth lv": ["synth", "lv"],
            "synth kidney": ["synth", "kidney"], "fit": ["fit", lv],
            "correspond": ["correspond", run, lv], "sample": ["sample", run],
            "reconstruct": ["reconstruct", run, f"{lv}/lv_000.ply"],
            "evaluate": ["evaluate", run, "--test", lv], "demo": ["demo"]}[verb]
    for out, fragment in ((tmp_path / "file", "is a file"),
                          (tmp_path / "file" / "out", "is a file"),
                          (tmp_path / "ro" / "out", "is not writable")):
        if fragment == "is not writable":
            (tmp_path / "ro").mkdir()
            monkeypatch.setattr(outputs.os, "access", lambda p, m: Path(p).name != "ro")
        assert main([*head, "--out", str(out), "--overwrite"]) == 1
        one_line_error(capsys, fragment)


def test_paths_of_the_staging_folder_are_relocated(tmp_path):
    out = tmp_path / "out"
    with staged_output(out, verb="test") as st:
        (st.path / "a.json").write_text(json.dumps({
            "groomed": str(st.path / "groomed"), "self": str(st.path),
            "other": str(st.path) + "2/x"}))
    d = json.loads((out / "a.json").read_text())
    assert d == {"groomed": str(out / "groomed"), "self": str(out),
                 "other": str(work_dir(out)) + "2/x"}


@pytest.mark.slow
def test_interrupted_fit_is_kept_and_resumed(tmp_path, capsys, monkeypatch):
    import torch

    from shapeatlas.nn.encoder import EncoderConfig
    from shapeatlas.training import loop
    from shapeatlas.training.config import FitConfig

    torch.set_num_threads(1)
    assert main(["synth", "lv", "--n", "4", "--out", str(tmp_path / "lv"), "-q",
                 "--min-vertices", "400", "--max-vertices", "500"]) == 0
    cfg = FitConfig(model={"encoder": EncoderConfig(widths=(16, 16), heads=2, latent_dim=16),
                           "atlas_vertices": 120},
                    training={"epochs": 3, "atlas_rounds": 1}, matching={"refine_steps": 3},
                    grooming={"target_vertices": 300}, generator={"epochs": 50})
    (tmp_path / "cfg.json").write_text(cfg.to_json())
    save = loop.save_checkpoint

    def save_then_stop(*a, **k):
        save(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_stop)
    run = tmp_path / "run"
    argv = ["fit", str(tmp_path / "lv"), "--out", str(run), "--config", str(tmp_path / "cfg.json"),
            "--device", "cpu", "-q"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert f"the unfinished fit is kept in {work_dir(run)}" in err and "--resume" in err
    assert (work_dir(run) / "checkpoint.pt").is_file() and not run.exists()
    monkeypatch.setattr(loop, "save_checkpoint", save)
    assert main(argv) == 1  # not thrown away by a plain rerun
    assert "unfinished fit: pass --resume" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0
    assert "fitted an atlas of 120 vertices" in capsys.readouterr().out
    assert not staging_dir(run).exists() and (run / "fit_metrics.json").is_file()
    poses = json.loads((run / "training_poses.json").read_text())["poses"]
    assert any(p["file"].startswith(str(run / "groomed")) for p in poses.values())
