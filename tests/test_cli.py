"""One CLI smoke test per verb on CPU, plus the exit codes for bad arguments and bad files."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from output_folders import assert_provenance
from shapes import asymmetric_blob

from shapeatlas.cli import _FIT_CONFIG_FIELDS, build_parser, main
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.io import read_mesh, write_mesh


def _matching(folder: Path, **fields) -> str:
    """A --matching file of `fields` in `folder` (one per set of fields)."""
    path = folder / ("matching-" + "-".join(f"{k}{v}" for k, v in fields.items()) + ".json")
    path.write_text(json.dumps(fields))
    return str(path)

def _verbs(parser: argparse.ArgumentParser, head: tuple[str, ...] = ()):
    """(words, parser) of every verb and sub-verb (`synth`, `synth lv`, ...)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*head, name), sub
                yield from _verbs(sub, (*head, name))


VERBS = [words for words, _ in _verbs(build_parser())]


def test_every_verb_is_listed():
    assert VERBS == [("info",), ("groom",), ("synth",), ("synth", "lv"), ("synth", "kidney"),
                     ("fit",), ("correspond",), ("sample",), ("reconstruct",), ("evaluate",),
                     ("report",), ("demo",)]


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_help_of_every_verb_shows_the_common_options(verb, capsys):
    with pytest.raises(SystemExit) as ex:
        main([*verb, "--help"])
    assert ex.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: shapeatlas {' '.join(verb)}")
    for option in ("-q, --quiet", "-v, --verbose"):
        assert option in out, option


#: The smallest valid command line of each verb (what follows the verb's words).
MINIMAL = {("info",): ["a.ply"], ("groom",): ["in", "--out", "o"], ("synth",): ["lv", "--out", "o"],
           ("synth", "lv"): ["--out", "o"], ("synth", "kidney"): ["--out", "o"],
           ("fit",): ["data", "--out", "o"], ("correspond",): ["run", "a.ply", "--out", "o"],
           ("sample",): ["run", "--out", "o"], ("reconstruct",): ["run", "a.ply", "--out", "o"],
           ("evaluate",): ["run", "--test", "t", "--out", "o"],
           ("report",): ["run", "--out", "r.html"], ("demo",): []}


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_quiet_and_verbose_go_before_or_after_the_verb(verb):
    parser = build_parser()
    tail = MINIMAL[verb]
    for flag, quiet, verbose in (("-q", True, False), ("--verbose", False, True)):
        for argv in ([flag, *verb, *tail], [*verb, flag, *tail], [*verb, *tail, flag]):
            args = parser.parse_args(argv)
            assert (args.quiet, args.verbose) == (quiet, verbose), argv
    args = parser.parse_args([*verb, *tail])
    assert (args.quiet, args.verbose) == (False, False)


def test_quiet_and_verbose_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as ex:
        main(["-q", "synth", "lv", "--out", "o", "-v"])
    assert ex.value.code == 2 and "exclude each other" in capsys.readouterr().err


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_every_option_has_help(verb):
    parser = dict(_verbs(build_parser()))[verb]
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = "/".join(action.option_strings) or action.dest
        if action.help == argparse.SUPPRESS:  # only the fit options that became config fields
            assert verb == ("fit",) and action.option_strings[0] in _FIT_CONFIG_FIELDS, name
            continue
        assert action.help and action.help.strip(), f"{' '.join(verb)} {name} has no help"


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_one_spelling_for_counts_and_formats(verb):
    """A number of shapes is -n/--n everywhere; every --format takes each format the mesh
    writer writes; no matching setting is an option (they are --matching files)."""
    from shapeatlas.mesh.io import WRITE_FORMATS

    parser = dict(_verbs(build_parser()))[verb]
    options = {o: a for a in parser._actions for o in a.option_strings}
    for old in ("--samples", "--n-samples", "--shapes", "--count"):
        assert old not in options, old
    if "-n" in options or "--n" in options:
        assert options["-n"] is options["--n"]
    if "--format" in options:
        assert set(options["--format"].choices) == {e[1:] for e in WRITE_FORMATS}
    for research in ("--transport-iterations", "--transport-relaxation", "--transport-sharpness",
                     "--deformation-smoothing", "--surface-cpd", "--refine-motion",
                     "--refine-steps", "--pose-iterations", "--pose-relaxation"):
        assert research not in options, research


def test_fit_refuses_options_that_are_configuration_fields(capsys):
    for option, (field, example) in _FIT_CONFIG_FIELDS.items():
        with pytest.raises(SystemExit) as ex:
            main(["fit", "data", "--out", "o", option, "1"])
        assert ex.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and field in err and "--config" in err


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "shapeatlas.cli", "--version"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.startswith("shapeatlas ")


@pytest.mark.parametrize("argv, fragment", [
    (["groom"], "required"),
    (["groom", "/definitely/not/here", "--out", "x"], "does not exist"),
    (["groom", ".", "--out", "x", "--cache", "c", "--no-cache"], "contradict"),
    (["synth", "lv", "--out", "x", "--n", "-3"], "positive integer"),
    (["synth", "kidney", "--out", "x", "--min-vertices", "50"], "at least 100"),
    (["synth", "lv", "--out", "x", "--min-vertices", "100"], "at least 200"),
    (["synth", "lv", "--out", "x", "--min-vertices", "900", "--max-vertices", "800"],
     "must not exceed"),
    (["synth", "kidney", "--out", "x", "--min-vertices", "900", "--max-vertices", "800"],
     "must not exceed"),
    (["frobnicate"], "invalid choice"),
    (["fit", "x", "--out", "y", "--method", "svm"], "invalid choice"),
    (["fit", "x", "--out", "y", "--atlases", "0"], "'auto' or a positive integer"),
    (["fit", "x", "--out", "y", "--atlases", "many"], "'auto' or a positive integer"),
    (["sample", "run", "--out", "x", "-n", "0"], "positive integer"),
    (["evaluate", "run", "--test", "t", "--out", "x", "--n", "0"], "positive integer"),
    (["demo", "-n", "x"], "positive integer"),
    (["evaluate", "run", "--test", "/definitely/not/here", "--out", "x"], "does not exist"),
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
                 "--target-vertices", "600", "--jobs", "1", "--consensus-rounds", "1",
                 "--cache", str(tmp_path / "cache"), "-q"]) == 0
    # Each shape's grooming and alignment, in the cache folder named.
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 6
    manifest = json.loads((tmp_path / "g" / "groom.json").read_text())
    assert [s["n_vertices"] for s in manifest["shapes"]] == [600, 600, 600]
    assert manifest["options"]["consensus_rounds"] == 1
    # LVs have a flat basal cap: the cap twist turns the two that are not the reference.
    assert manifest["cap_twist"] == "applied: 2 of 3 shapes turned"
    assert sum(s["cap_turn"] is not None for s in manifest["shapes"]) == 2
    out = capsys.readouterr().out
    assert "groomed 3 of 3 meshes" in out and "cap twist: applied" in out
    assert main(["groom", str(tmp_path / "lv"), "--out", str(tmp_path / "g0"),
                 "--target-vertices", "600", "--jobs", "1", "--no-cap-twist", "-q"]) == 0
    manifest = json.loads((tmp_path / "g0" / "groom.json").read_text())
    assert manifest["cap_twist"] == "off" and not manifest["options"]["cap_twist"]
    assert all("cap_turn" not in s for s in manifest["shapes"])
    assert "cap twist: off" in capsys.readouterr().out
    assert main(["synth", "kidney", "--n", "2", "--out", str(tmp_path / "kid"), "--seed", "1",
                 "--min-vertices", "300", "--max-vertices", "400", "-q"]) == 0
    truth = json.loads((tmp_path / "kid" / "truth.json").read_text())
    assert truth["generator"] == "shapeatlas.data.synthetic_kidney"
    assert all(300 <= r["n_vertices"] <= 400 for r in truth["shapes"].values())
    assert sorted(p.name for p in (tmp_path / "kid").glob("*.ply")) == [
        "kidney_000.ply", "kidney_001.ply"]
    assert "wrote 2 kidney shapes" in capsys.readouterr().out
    # Kidneys have no flat cap: nothing is turned.
    assert main(["groom", str(tmp_path / "kid"), "--out", str(tmp_path / "gk"), "--jobs", "1",
                 "-q"]) == 0
    manifest = json.loads((tmp_path / "gk" / "groom.json").read_text())
    assert manifest["cap_twist"].startswith("skipped: the reference")


def test_groom_reports_bad_file_and_exits_1(tmp_path, capsys):
    src = tmp_path / "in"
    write_mesh(asymmetric_blob(), src / "good.ply")
    (src / "nan.obj").write_text("v 0 0 0\nv nan 0 0\nv 0 1 0\nf 1 2 3\n")
    assert main(["groom", str(src), "--out", str(tmp_path / "g"), "-q", "--jobs", "1"]) == 1
    out = capsys.readouterr().out
    assert "skipped" in out and "nan.obj" in out and "NaN" in out
    assert read_mesh(tmp_path / "g" / "good.ply").is_watertight


def test_demo(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "-n", "4", "-q"]) == 0
    out = capsys.readouterr().out
    assert "done in" in out and "lv_003" in out
    assert "[1/6]" not in out  # -q: no step lines
    assert (tmp_path / "demo" / "groomed" / "groom.json").is_file()
    assert_provenance(tmp_path / "demo", "demo")


def test_fit_and_correspond(tmp_path, capsys):
    import numpy as np
    import torch

    from shapeatlas.nn.encoder import EncoderConfig
    from shapeatlas.training.config import FitConfig

    torch.set_num_threads(1)
    assert main(["synth", "lv", "--n", "4", "--out", str(tmp_path / "lv"), "-q",
                 "--min-vertices", "1000", "--max-vertices", "1100"]) == 0
    cfg = FitConfig(model={"encoder": EncoderConfig(widths=(16, 16), heads=2, latent_dim=16),
                           "atlas_vertices": 150},
                    training={"epochs": 1, "atlas_rounds": 1}, matching={"refine_steps": 3},
                    grooming={"target_vertices": 400}, generator={"epochs": 200})
    for modes in (2, 3):
        (tmp_path / f"cfg{modes}.json").write_text(
            cfg.replace(model={"ssm_modes": modes}).to_json())
    run = tmp_path / "run"
    # Too many point-model modes for 4 shapes: named before any training.
    assert main(["fit", str(tmp_path / "lv"), "--out", str(tmp_path / "bad"), "--config",
                 str(tmp_path / "cfg3.json"), "-q"]) == 1
    assert "ssm_modes 3 needs more than 4 training shapes" in capsys.readouterr().err
    # A raw folder: fit grooms it itself and records that; with a 2-mode point model. Without
    # -q, every stage reports its progress on stderr: the R-ASM epochs as "round r/R, epoch
    # e/E", the matching of the training shapes, and the β-VAE's epochs.
    assert main(["fit", str(tmp_path / "lv"), "--out", str(run), "--config",
                 str(tmp_path / "cfg2.json"), "--device", "cpu"]) == 0
    for f in ("config.json", "model.safetensors", "model.json", "atlas.ply", "train_log.csv",
              "fit_metrics.json", "groomed/groom.json"):
        assert (run / f).is_file(), f
    assert_provenance(run, "fit")
    captured = capsys.readouterr()
    out, err = captured.out, captured.err
    assert "round 1/1, epoch 1/1: loss" in err  # the log line, and the bar:
    assert "round 1/1, epoch 1/1:" in err.replace("round 1/1, epoch 1/1: loss", "")
    assert "matching the training shapes" in err
    assert "β-VAE epoch 200/200: loss" in err and "β-VAE: " in err
    assert "fitted an atlas of 150 vertices on 4 shapes" in out
    assert "point model: 2 modes" in out
    pm = json.loads((run / "fit_metrics.json").read_text())["point_model"]
    assert pm["modes"] == 2 and pm["kept"] and pm["chamfer_after_mm"] > 0
    # The point model was fitted on the original files, which fit finds through groom.json.
    from shapeatlas.runs.folder import training_sources

    src_meshes, src_poses = training_sources(run / "groomed")
    assert [Path(m.name).name for m in src_meshes] == [f"lv_00{i}.ply" for i in range(4)]
    assert all(t.shape == (4, 4) for t in src_poses)
    (tmp_path / "lv" / "lv_003.ply").rename(tmp_path / "lv_003.ply")
    assert training_sources(run / "groomed") is None  # a source gone: the groomed meshes
    (tmp_path / "lv_003.ply").rename(tmp_path / "lv" / "lv_003.ply")
    kept = (tmp_path / "lv" / "lv_002.ply").read_bytes()  # a source changed since grooming
    edited = read_mesh(tmp_path / "lv" / "lv_002.ply")
    write_mesh(edited.with_vertices(edited.vertices * 1.3), tmp_path / "lv" / "lv_002.ply")
    assert training_sources(run / "groomed") is None
    (tmp_path / "lv" / "lv_002.ply").write_bytes(kept)
    assert training_sources(run / "groomed") is not None
    # Fitting into a used run folder without --overwrite is refused; --resume says it is done.
    assert main(["fit", str(tmp_path / "lv"), "--out", str(run), "-q"]) == 1
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["fit", str(tmp_path / "lv"), "--out", str(run), "--resume", "-q"]) == 0
    assert "is complete: nothing to resume" in capsys.readouterr().out
    bad = tmp_path / "lv" / "notes.ply"
    bad.write_text("nothing")
    assert main(["correspond", str(run), str(tmp_path / "lv" / "lv_000.ply"), str(bad),
                 "--out", str(tmp_path / "c"), "-q"]) == 1
    out = capsys.readouterr().out
    assert "skipped" in out and "notes.ply" in out
    assert_provenance(tmp_path / "c", "correspond")
    z = np.load(tmp_path / "c" / "lv_000.npz")
    assert z["points"].shape == (150, 3) and z["atlas_vertex"].shape == (read_mesh(
        tmp_path / "lv" / "lv_000.ply").n_vertices,)
    m = read_mesh(tmp_path / "c" / "lv_000.ply")
    np.testing.assert_allclose(m.vertices, z["surface_points"])  # the surface written
    moved = np.linalg.norm(z["surface_points"] - z["points"], axis=1) > 0
    assert moved.sum() == int(z["projected_vertices"])  # only the projection moved points
    # A training file starts from its pose in the fit (found by content, so a renamed copy too)
    # and moves only locally onto the atlas; an edited file, or any file with --realign, is
    # aligned to the atlas from scratch.
    assert "lv_000: " in out and "pose of the fit" in out.split("lv_000: ")[1].splitlines()[0]
    groomed = json.loads((run / "groomed" / "groom.json").read_text())
    start = np.asarray(next(s["transform"] for s in groomed["shapes"] if s["name"] == "lv_000"))
    turn = z["transform"][:3, :3] @ start[:3, :3].T
    np.testing.assert_allclose(turn @ turn.T, np.eye(3), atol=1e-9)
    assert np.degrees(np.arccos(np.clip((np.trace(turn) - 1) / 2, -1, 1))) < 10
    src = read_mesh(tmp_path / "lv" / "lv_001.ply")
    (tmp_path / "other").mkdir()
    shutil.copy(tmp_path / "lv" / "lv_001.ply", tmp_path / "other" / "renamed.ply")
    write_mesh(Mesh(src.vertices + [0.0, 0.0, 1e-3], src.faces), tmp_path / "other" / "edited.ply")
    assert main(["correspond", str(run), str(tmp_path / "other"), "--out",
                 str(tmp_path / "c2"), "-q"]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines()
                 if line.startswith(("renamed", "edited")))
    assert "pose of the fit" in lines["renamed"] and "pose of the fit" not in lines["edited"]
    assert main(["correspond", str(run), str(tmp_path / "lv" / "lv_000.ply"), "--realign",
                 "--out", str(tmp_path / "c3"), "-q"]) == 0
    assert "pose of the fit" not in capsys.readouterr().out
    # A damaged poses file is named, not a traceback.
    poses = (run / "training_poses.json").read_text()
    (run / "training_poses.json").write_text('{"format": "shapeatlas-training-poses", "poses": 3}')
    assert main(["correspond", str(run), str(tmp_path / "lv" / "lv_000.ply"), "--out",
                 str(tmp_path / "c4"), "-q"]) == 1
    assert "training_poses.json: field 'poses' must be a JSON object" in capsys.readouterr().err
    (run / "training_poses.json").write_text(poses)
    # Pose refinement at correspond time: same outputs, in the input frame, the pose it used.
    assert main(["correspond", str(run), str(tmp_path / "lv" / "lv_000.ply"), "--matching",
                 _matching(tmp_path, pose_iterations=2), "--out", str(tmp_path / "p"),
                 "-q"]) == 0
    zp = np.load(tmp_path / "p" / "lv_000.npz")
    assert zp["points"].shape == (150, 3)
    r = zp["transform"][:3, :3]
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-9)
    # The run's point model can be left out at correspond time: other points. (With the
    # paper's matching: with balanced transport, this 2-epoch model's steps are not taken for
    # lv_000, as `correspond` refuses steps that spread a shape's points worse.)
    for flag, out_dir in (([], "pm"), (["--no-point-model"], "np")):
        assert main(["correspond", str(run), str(tmp_path / "lv" / "lv_000.ply"), *flag,
                     "--matching", _matching(tmp_path, transport_iterations=0),
                     "--out", str(tmp_path / out_dir), "-q"]) == 0
    assert np.abs(np.load(tmp_path / "np" / "lv_000.npz")["points"]
                  - np.load(tmp_path / "pm" / "lv_000.npz")["points"]).max() > 1e-3
    # Other transport iterations chosen at correspond time (20 plain ones, against the default
    # 30 over-relaxed): other points, same outputs; bad values are named before any file is
    # read.
    assert main(["correspond", str(run), str(tmp_path / "lv" / "lv_000.ply"), "--matching",
                 _matching(tmp_path, transport_iterations=20, transport_relaxation=1),
                 "--out", str(tmp_path / "t"), "-q"]) == 0
    zt = np.load(tmp_path / "t" / "lv_000.npz")
    assert zt["points"].shape == (150, 3)
    assert np.abs(zt["points"] - z["points"]).max() > 1e-3
    capsys.readouterr()
    bad = _matching(tmp_path, transport_iterations=-3)
    assert main(["correspond", str(run), str(tmp_path / "lv" / "lv_000.ply"), "--matching",
                 bad, "--out", str(tmp_path / "t2"), "-q"]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: field 'matching.transport_iterations' must be an integer in [0," in err
    assert "Traceback" not in err and not (tmp_path / "t2").exists()
    assert main(["correspond", str(run), str(tmp_path / "lv" / "lv_000.ply"), "--matching",
                 _matching(tmp_path, transport_relaxation=2.5), "--out", str(tmp_path / "t3"),
                 "-q"]) == 1
    assert "field 'matching.transport_relaxation' must be a finite number in [1, 2)" in \
        capsys.readouterr().err
    # The deformation smoothing too (off, against the default 8 iterations).
    assert main(["correspond", str(run), str(tmp_path / "lv" / "lv_000.ply"), "--matching",
                 _matching(tmp_path, deformation_smoothing=0), "--out", str(tmp_path / "d0"),
                 "-q"]) == 0
    assert np.abs(np.load(tmp_path / "d0" / "lv_000.npz")["points"] - z["points"]).max() > 1e-3
    # The paper's matching by name, and the run's own config.json as a matching file (the
    # same points as the default).
    assert main(["correspond", str(run), str(tmp_path / "lv" / "lv_000.ply"),
                 "--matching", "paper", "--out", str(tmp_path / "nm"), "-q"]) == 0
    assert np.abs(np.load(tmp_path / "nm" / "lv_000.npz")["points"] - z["points"]).max() > 1e-3
    assert main(["correspond", str(run), str(tmp_path / "lv" / "lv_000.ply"),
                 "--matching", str(run / "config.json"), "--out", str(tmp_path / "own"),
                 "-q"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "own" / "lv_000.npz")["points"],
                                  z["points"])
    capsys.readouterr()
    assert main(["correspond", str(run), str(tmp_path / "lv" / "lv_000.ply"),
                 "--matching", "fastest", "--out", str(tmp_path / "nf"), "-q"]) == 1
    assert "fastest: neither a matching preset (default, paper) nor a JSON file" in \
        capsys.readouterr().err
    # evaluate matches a run with a point model on the original files its groom.json names
    # (as the model was fitted), other runs on the groomed meshes.
    from shapeatlas.runs.evaluate import _test_meshes
    from shapeatlas.runs.load import load_model

    model = load_model(run, device="cpu")
    shapes = _test_meshes(run / "groomed", tmp_path / "ev", model, None)
    assert [Path(m.name).parent for m in shapes] == [tmp_path / "lv"] * 4
    model.point_model_ = None
    shapes = _test_meshes(run / "groomed", tmp_path / "ev", model, None)
    assert [Path(m.name).parent for m in shapes] == [run / "groomed"] * 4


def test_cpd_pca_fit_sample_evaluate_reconstruct(tmp_path, capsys):
    from shapeatlas.training.config import FitConfig

    assert main(["synth", "lv", "--out", str(tmp_path / "lv"), "--n", "6", "-q",
                 "--min-vertices", "1000", "--max-vertices", "1100"]) == 0
    cfg = FitConfig(method="cpd-pca", model={"atlas_vertices": 150}, training={"atlas_rounds": 1},
                    cpd={"iterations": 30}, grooming={"target_vertices": 400})
    (tmp_path / "cfg.json").write_text(cfg.to_json())
    run = tmp_path / "run"
    assert main(["fit", str(tmp_path / "lv"), "--out", str(run), "--config",
                 str(tmp_path / "cfg.json"), "--latent-dim", "3", "-q"]) == 0
    out = capsys.readouterr().out
    assert "generator: pca with 3 latent dimensions" in out
    assert main(["sample", str(run), "-n", "7", "--out", str(tmp_path / "s"), "--traverse", "2",
                 "--format", "vtk", "-q"]) == 0
    s = json.loads((tmp_path / "s" / "samples.json").read_text())
    assert s["n"] == 7 and len(s["samples"]) == 7 and len(s["samples"][0]["latent"]) == 3
    assert (tmp_path / "s" / "sample_00006.vtk").is_file()
    assert read_mesh(tmp_path / "s" / "traverse" / "dir1_step4.vtk").n_vertices == 150
    assert main(["sample", str(run), "--n", "2", "--out", str(tmp_path / "s2"),
                 "--format", "vtp", "-q"]) == 0
    vtp = read_mesh(tmp_path / "s2" / "sample_00001.vtp")
    assert vtp.n_vertices == 150 and vtp.is_watertight
    assert all(r["watertight"] for r in s["samples"])
    assert "wrote 7 virtual shapes" in capsys.readouterr().out
    # evaluate on the raw folder: grooms it, aligns every test mesh to the atlas by itself
    assert main(["evaluate", str(run), "--test", str(tmp_path / "lv"), "--out",
                 str(tmp_path / "e"), "-n", "50", "-q"]) == 0
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert m["n_test"] == 6 and m["specificity_mm"]["n_samples"] == 50
    # specificity against the latent directions sampled: one row per generalization point,
    # 25 samples each (50 over the 2 points below D); k = D takes the first 25 of the 50 shapes
    curve = m["specificity_curve_mm"]
    assert [r["components"] for r in curve] == [r["components"] for r in m["generalization_mm"]]
    assert [r["components"] for r in curve] == [1, 2, 3]
    assert all(r["n_samples"] == 25 and np.isfinite([r["mean"], r["se"]]).all() and r["se"] > 0
               for r in curve)
    assert 0.5 < curve[-1]["mean"] / m["specificity_mm"]["vertex_mean"] < 2.0
    assert len(m["compactness"]) == 5 and m["compactness"][-1] == pytest.approx(1.0)
    table = np.genfromtxt(tmp_path / "e" / "samples.csv", delimiter=",", names=True)
    assert len(table) == 50 and "cluster" not in table.dtype.names
    assert np.nanmean(table["volume_ml"]) == pytest.approx(
        m["plausibility"]["virtual_volume_ml"]["mean"], rel=1e-3)
    for f in ("compactness.png", "generalization.png", "specificity.png", "volumes.png",
              "samples.png"):
        assert (tmp_path / "e" / f).read_bytes()[:4] == b"\x89PNG"
    assert "specificity (50 samples)" in capsys.readouterr().out
    assert main(["correspond", str(run), str(tmp_path / "lv" / "lv_000.ply"), "--out",
                 str(tmp_path / "c"), "--matching", "paper", "-q"]) == 1
    assert "matching settings need an R-ASM run, not CPD-PCA" in capsys.readouterr().err
    assert main(["reconstruct", str(run), str(tmp_path / "lv" / "lv_000.ply"),
                 "--out", str(tmp_path / "r")]) == 0
    assert read_mesh(tmp_path / "r" / "lv_000.ply").n_vertices == 150
    # a run evaluated against meshes of another size is refused with a clear message
    big = tmp_path / "big"
    big.mkdir()
    for i in range(3):
        write_mesh(read_mesh(tmp_path / "lv" / f"lv_00{i}.ply").with_vertices(
            read_mesh(tmp_path / "lv" / f"lv_00{i}.ply").vertices * 2.5), big / f"b{i}.ply")
    assert main(["evaluate", str(run), "--test", str(big), "--out", str(tmp_path / "e2"),
                 "-q"]) == 1
    assert "could be matched" in capsys.readouterr().err


def test_specificity_curve_draws_at_most_about_the_full_figure_samples():
    from shapeatlas.runs.evaluate import curve_components, curve_samples

    assert curve_components(16) == [1, 2, 3, 5, 7, 11, 16]
    assert curve_samples(1000, 7) == 167 and curve_samples(1000, 3) == 200
    assert curve_samples(50, 3) == 25 and curve_samples(50, 1) == 50 and curve_samples(1, 8) == 1
    for n, points in ((1000, 8), (1000, 2), (37, 5)):
        assert (points - 1) * curve_samples(n, points) < n + points


def test_multi_atlas_fit_correspond_sample_evaluate(tmp_path, capsys):
    import json

    import numpy as np
    import torch

    from shapeatlas.nn.encoder import EncoderConfig
    from shapeatlas.training.config import FitConfig

    torch.set_num_threads(1)
    for name, n, seed in (("lv", 8, 3), ("test", 3, 9)):
        assert main(["synth", "lv", "--n", str(n), "--seed", str(seed), "--phenotypes", "mixed",
                     "--out", str(tmp_path / name), "-q", "--min-vertices", "1000",
                     "--max-vertices", "1100"]) == 0
    cfg = FitConfig(model={"encoder": EncoderConfig(widths=(16, 16), heads=2, latent_dim=16),
                           "atlas_vertices": 150},
                    training={"epochs": 2, "atlas_rounds": 1}, matching={"refine_steps": 3},
                    grooming={"target_vertices": 400}, generator={"epochs": 100},
                    clustering={"restarts": 2})
    (tmp_path / "cfg.json").write_text(cfg.to_json())
    run = tmp_path / "run"
    assert main(["fit", str(tmp_path / "lv"), "--out", str(run), "--config",
                 str(tmp_path / "cfg.json"), "--atlases", "2", "--device", "cpu", "-q"]) == 0
    out = capsys.readouterr().out
    assert "atlases: 2, weights" in out
    for f in ("model.json", "atlas_0.ply", "atlas_1.ply", "shared/model.json"):
        assert (run / f).is_file(), f
    assert main(["correspond", str(run), str(tmp_path / "test"), "--out", str(tmp_path / "c"),
                 "-q"]) == 0
    assert main(["correspond", str(run), str(tmp_path / "test"), "--out", str(tmp_path / "p"),
                 "--matching", _matching(tmp_path, pose_iterations=2), "-q"]) == 1
    assert "single-atlas" in capsys.readouterr().err
    assert main(["correspond", str(run), str(tmp_path / "test"), "--out", str(tmp_path / "t"),
                 "--matching", _matching(tmp_path, transport_iterations=10), "-q"]) == 0
    z = np.load(tmp_path / "c" / "lv_000.npz")
    assert np.abs(np.load(tmp_path / "t" / "lv_000.npz")["points"] - z["points"]).max() > 1e-3
    assert z["memberships"].shape == (2,) and int(z["atlas"]) in (0, 1)
    assert z["memberships"].sum() == pytest.approx(1.0)
    assert main(["sample", str(run), "-n", "12", "--out", str(tmp_path / "v"), "-q"]) == 0
    rows = json.loads((tmp_path / "v" / "samples.json").read_text())["samples"]
    assert {r["cluster"] for r in rows} <= {0, 1} and len(rows) == 12
    assert main(["evaluate", str(run), "--test", str(tmp_path / "test"), "--out",
                 str(tmp_path / "e"), "--n", "40", "-q"]) == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert [c["atlas"] for c in metrics["clusters"]] == [0, 1]
    curve = metrics["specificity_curve_mm"]
    assert [r["components"] for r in curve] == [
        r["components"] for r in metrics["generalization_mm"]]
    assert all(np.isfinite([r["mean"], r["se"]]).all() for r in curve)
    assert 0.5 < curve[-1]["mean"] / metrics["specificity_mm"]["vertex_mean"] < 2.0
    assert sum(c["n_samples"] for c in metrics["clusters"]) == 40
    table = np.genfromtxt(tmp_path / "e" / "samples.csv", delimiter=",", names=True)
    assert [int((table["cluster"] == c["atlas"]).sum()) for c in metrics["clusters"]] == [
        c["n_samples"] for c in metrics["clusters"]]
