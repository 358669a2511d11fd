"""What shapeatlas reads back (configs, model folders, groom manifests, training poses,
checkpoints) is checked field by field: one line naming the file and the field, never a
traceback, a hang, or a file read from outside its folder."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from model_folders import save_atlas_model, save_cpd_model, save_multi_atlas_model

from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.groom import MANIFEST_NAME, load_groomed, load_manifest
from shapeatlas.mesh.io import write_mesh
from shapeatlas.runs.folder import (
    TRAINING_POSES_NAME,
    read_training_poses,
    training_sources,
    write_training_poses,
)
from shapeatlas.runs.load import load_model
from shapeatlas.training.config import (
    SECTIONS,
    FitConfig,
    MatchConfig,
    configuration_markdown,
    field_docs,
    load_match_config,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "shapeatlas"


# ------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("config, fragment", [
    ({"training": {"epochs": "two"}},
     "field 'training.epochs' must be an integer in [1, 10,000], got 'two'"),
    ({"training": {"epochs": 25.0}}, "field 'training.epochs' must be an integer"),
    ({"generator": {"relax": 10**9}}, "field 'generator.relax' must be an integer in [0, 1,000]"),
    ({"generator": {"relax": 1e9}}, "field 'generator.relax' must be an integer"),
    ({"matching": {"normal_refine_steps": 10**8}}, "field 'matching.normal_refine_steps'"),
    ({"model": {"attention_memory_mb": -1}},
     "field 'model.attention_memory_mb' must be a finite number in (0,"),
    ({"model": {"smooth_gamma": math.nan}}, "field 'model.smooth_gamma' must be a finite number"),
    ({"training": {"w_kl": math.inf}}, "field 'training.w_kl'"),
    ({"training": {"lr_decay": 1.5}}, "field 'training.lr_decay'"),
    ({"model": {"even_edges": "yes"}}, "field 'model.even_edges' must be true or false"),
    ({"device": 3}, "field 'device' must be one of"),
    ({"clustering": {"atlases": 0}}, "field 'clustering.atlases' must be 'auto' or an integer"),
    ({"generator": {"hidden": [256, "x"]}}, "field 'generator.hidden'"),
    ({"model": {"encoder": [1, 2]}}, "field 'model.encoder' must be a JSON object"),
    ({"model": {"encoder": {"heads": 10**6}}}, "field 'model.encoder' field 'heads'"),
    ({"model": {"encoder": {"depth": 3}}}, "field 'model.encoder' has unknown fields ['depth']"),
    ({"training": [1]}, "field 'training' must be a JSON object"),
    ({"training": {"epoch": 3}}, "section 'training' has unknown fields ['epoch']"),
    ({"epochs": 3}, "unknown configuration fields ['epochs']"),
    ({"format": "shapeatlas-fit-config", "epochs": 3}, "flat configuration"),
    ({"version": 2}, "written by a newer shapeatlas"),
])
def test_config_field_of_the_wrong_type_or_range_is_named(config, fragment):
    with pytest.raises(ShapeAtlasError) as info:
        FitConfig.from_dict(config, source="RUN/model.json")
    message = str(info.value)
    assert message.startswith("RUN/model.json: ") and fragment in message
    assert "\n" not in message


def test_config_of_the_wrong_json_type_or_not_json(tmp_path):
    path = tmp_path / "config.json"
    for text, fragment in (("[1, 2]", "must be a JSON object, got list"),
                           ('{"epochs": ', "not valid JSON"),
                           ('{"version": "ten"}', "field 'version'")):
        path.write_text(text)
        with pytest.raises(ShapeAtlasError, match=f"^{path}: .*") as info:
            FitConfig.from_json(path)
        assert fragment in str(info.value)
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ShapeAtlasError, match="not valid JSON"):
        FitConfig.from_json(path)


def test_cli_values_go_through_the_same_checks(tmp_path, capsys):
    from shapeatlas.cli import main

    (tmp_path / "data").mkdir()
    code = main(["fit", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                 "--epochs", "1000000"])
    err = capsys.readouterr().err
    assert code == 1 and "field 'training.epochs' must be an integer in [1, 10,000]" in err
    assert "Traceback" not in err


def test_every_field_has_a_spec_and_a_docstring():
    for cls in (FitConfig, *SECTIONS.values()):
        specs = cls.TOP_SPECS if cls is FitConfig else cls.SPECS
        names = {f.name for f in dataclasses.fields(cls)} - set(SECTIONS)
        assert names == set(specs), cls.__name__
        docs = field_docs(cls)
        assert all(len(docs.get(n, "")) > 20 for n in names), cls.__name__


def test_the_configuration_page_is_generated_from_the_fields():
    page = (SRC.parents[1] / "docs" / "configuration.md").read_text()
    assert page == configuration_markdown(), (
        "docs/configuration.md is out of date: python -m shapeatlas.training.config "
        "> docs/configuration.md")
    assert "| `matching.surface_cpd_iterations` | `15` | an integer in [0, 10,000] |" in page


def test_the_default_config_round_trips_and_ints_become_floats():
    cfg = FitConfig()
    assert FitConfig.from_dict(json.loads(cfg.to_json())) == cfg
    lr = FitConfig.from_dict({"training": {"lr": 1}}).training.lr
    assert lr == 1.0 and isinstance(lr, float)


def test_replace_changes_fields_within_a_section_and_checks_them():
    cfg = FitConfig().replace(seed=3, training={"epochs": 5, "lr": None},
                              matching=MatchConfig.paper())
    assert (cfg.seed, cfg.training.epochs, cfg.training.lr) == (3, 5, 1e-3)
    assert cfg.matching.transport_iterations == 0 and cfg.matching.refine_motion == "free"
    assert cfg.model == FitConfig().model
    with pytest.raises(ShapeAtlasError, match="field 'training.epochs'"):
        cfg.replace(training={"epochs": 0})
    with pytest.raises(ShapeAtlasError, match="pose_iterations needs a single-atlas"):
        FitConfig(clustering={"atlases": 2}, matching={"pose_iterations": 3})


def test_matching_presets_and_files(tmp_path):
    assert load_match_config(None) is None
    assert load_match_config("paper") == MatchConfig.paper()
    assert load_match_config("default") == MatchConfig()
    run_config = tmp_path / "config.json"
    run_config.write_text(FitConfig(matching={"deformation_smoothing": 3}).to_json())
    assert load_match_config(run_config).deformation_smoothing == 3
    bare = tmp_path / "m.json"
    bare.write_text('{"surface_cpd_iterations": 0}')
    assert load_match_config(bare) == MatchConfig(surface_cpd_iterations=0)
    bare.write_text('{"surface_cpd": 0}')
    with pytest.raises(ShapeAtlasError, match=f"^{bare}: section 'matching' has unknown"):
        load_match_config(bare)
    with pytest.raises(ShapeAtlasError, match="neither a matching preset"):
        load_match_config(tmp_path / "nope.json")


# ------------------------------------------------------------------------ model folders
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    torch.set_num_threads(1)
    return {"rasm": save_atlas_model(root / "rasm"), "cpd": save_cpd_model(root / "cpd"),
            "multi": save_multi_atlas_model(root / "multi")}


@pytest.fixture
def copy_of(folders, tmp_path):
    def make(kind: str) -> Path:
        return Path(shutil.copytree(folders[kind], tmp_path / kind))
    return make


def _edit_meta(folder: Path, edit) -> None:
    meta = json.loads((folder / "model.json").read_text())
    meta = edit(meta)
    (folder / "model.json").write_text(json.dumps(meta))


def _edit_tensors(folder: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file({k: v.contiguous() for k, v in tensors.items()}, folder / "model.safetensors")


def _refused(folder: Path, fragment: str) -> str:
    with pytest.raises(ShapeAtlasError) as info:
        load_model(folder, device="cpu")
    message = str(info.value)
    assert fragment in message and "\n" not in message, message
    return message


@pytest.mark.parametrize("kind", ["rasm", "cpd", "multi"])
def test_saved_models_load(folders, kind):
    model = load_model(folders[kind], device="cpu")
    assert model.sample(2, seed=0).vertices.shape == (2, 42, 3)


@pytest.mark.parametrize("kind", ["rasm", "cpd"])
@pytest.mark.parametrize("edit, fragment", [
    (lambda m: [m], "model.json: the file must be a JSON object, got list"),
    (lambda m: {**m, "config": {**m["config"], "training": {"epochs": "two"}}},
     "model.json: field 'training.epochs' must be an integer in [1, 10,000], got 'two'"),
    (lambda m: {**m, "config": {**m["config"], "generator": {"relax": 10**9}}},
     "field 'generator.relax'"),
    (lambda m: {**m, "config": {**m["config"], "matching": {"normal_refine_steps": 10**8}}},
     "field 'matching.normal_refine_steps'"),
    (lambda m: {k: v for k, v in m.items() if k != "config"}, "field 'config' is missing"),
    (lambda m: {**m, "version": "1"}, "field 'version'"),
    (lambda m: {**m, "generator": {**m["generator"], "n_vertices": 7}},
     "field 'generator.n_vertices' must match the atlas's 42 vertices"),
    (lambda m: {**m, "generator": {**m["generator"], "latent_dim": -1}},
     "field 'generator.latent_dim'"),
])
def test_model_json_fields(copy_of, kind, edit, fragment):
    folder = copy_of(kind)
    _edit_meta(folder, edit)
    _refused(folder, fragment)


def test_rasm_normalisation_and_weights(copy_of):
    folder = copy_of("rasm")
    original = (folder / "model.json").read_text()
    _edit_meta(folder, lambda m: {**m, "normalisation": {"center": [0, 0], "scale": 1}})
    _refused(folder, "field 'normalisation.center' must be a finite 3 array")
    (folder / "model.json").write_text(original)
    _edit_meta(folder, lambda m: {**m, "normalisation": {"center": [0, 0, 0], "scale": -1}})
    _refused(folder, "field 'normalisation.scale'")


@pytest.mark.parametrize("kind", ["rasm", "cpd"])
@pytest.mark.parametrize("edit, fragment", [
    (lambda t: t.pop("atlas.vertices"), "tensor 'atlas.vertices' is missing"),
    (lambda t: t.__setitem__("atlas.faces", t["atlas.faces"] + 1000),
     "tensor 'atlas.faces' must hold at least one triangle of vertex indices in [0, 42)"),
    (lambda t: t.__setitem__("atlas.faces", t["atlas.faces"].double()),
     "tensor 'atlas.faces' must hold ints"),
    (lambda t: t.__setitem__("atlas.vertices", t["atlas.vertices"][:, :2].contiguous()),
     "tensor 'atlas.vertices' must have shape (*, 3)"),
    (lambda t: t["atlas.vertices"].__setitem__((0, 0), float("nan")),
     "tensor 'atlas.vertices' holds NaN"),
    (lambda t: t.pop("train.shapes"), "tensor 'train.shapes' is missing"),
    (lambda t: t.__setitem__("train.axes", torch.zeros(2, 3, dtype=torch.float64)),
     "tensor 'train.axes' must have shape (3, 3)"),
])
def test_model_tensors(copy_of, kind, edit, fragment):
    folder = copy_of(kind)
    _edit_tensors(folder, edit)
    _refused(folder, "model.safetensors: " + fragment)


def test_network_weights_are_checked_before_the_network_is_built(copy_of):
    folder = copy_of("rasm")
    original = (folder / "model.json").read_text()
    _edit_tensors(folder, lambda t: t["net.vae.encoder.0.conv.bias"].fill_(float("inf")))
    _refused(folder, "tensor 'net.vae.encoder.0.conv.bias' holds NaN or infinite values")
    # A config asking for a huge network is compared with the weights before it is built.
    _edit_meta(folder, lambda m: {**m, "config": {**m["config"], "model": {
        **m["config"]["model"], "encoder": {**m["config"]["model"]["encoder"],
                                            "widths": [4096] * 16, "heads": 64}}}})
    _refused(folder, "weights do not fit the saved configuration (tensor 'net.")
    (folder / "model.json").write_text(original)


@pytest.mark.parametrize("cut", [0, 7, 100, -10])
def test_truncated_safetensors(copy_of, cut):
    folder = copy_of("rasm")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:cut])
    _refused(folder, "model.safetensors: ")


def test_multi_atlas_fields(copy_of):
    folder = copy_of("multi")
    original = (folder / "model.json").read_text()
    _edit_meta(folder, lambda m: {**m, "shared": "../../elsewhere"})
    _refused(folder, "field 'shared' must name a folder inside the model folder")
    (folder / "model.json").write_text(original)
    _edit_meta(folder, lambda m: {**m, "n_atlases": 3})
    _refused(folder, "field 'n_atlases' is 3 but the generator has 2 clusters")
    (folder / "model.json").write_text(original)
    _edit_tensors(folder, lambda t: t.__setitem__("memberships", t["memberships"][:, :1]))
    _refused(folder, "tensor 'memberships' must have shape (8, 2)")


# --------------------------------------------------------------------- groom manifests
def _groomed_folder(root: Path, n: int = 3) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shapes = []
    for i in range(n):
        t = trimesh.creation.icosphere(subdivisions=2, radius=20.0 + i)
        name = f"s{i}"
        write_mesh(Mesh(t.vertices, t.faces, name=name), root / f"{name}.ply")
        shapes.append({"name": name, "source": str((root / f"{name}.ply").resolve()),
                       "output": f"{name}.ply", "transform": np.eye(4).tolist()})
    (root / MANIFEST_NAME).write_text(json.dumps(
        {"format": "shapeatlas-groom", "version": 1, "shapes": shapes, "failed": []}))
    return root


def _edit_manifest(folder: Path, edit) -> None:
    m = json.loads((folder / MANIFEST_NAME).read_text())
    (folder / MANIFEST_NAME).write_text(json.dumps(edit(m)))


@pytest.mark.parametrize("output", ["../outside.ply", "/etc/hostname", "sub/../../x.ply", ""])
def test_manifest_outputs_must_lie_inside_the_folder(tmp_path, output):
    folder = _groomed_folder(tmp_path / "g")
    write_mesh(Mesh(np.eye(3) * 9, [[0, 1, 2]], name="o"), tmp_path / "outside.ply")

    def edit(m):
        m["shapes"][1]["output"] = output
        return m
    _edit_manifest(folder, edit)
    with pytest.raises(ShapeAtlasError, match=r"groom.json: field 'shapes\[1\].output' must "
                                              r"name a file inside"):
        load_groomed(folder)


@pytest.mark.parametrize("edit, fragment", [
    (lambda m: [m], "the file must be a JSON object, got list"),
    (lambda m: {k: v for k, v in m.items() if k != "shapes"}, "field 'shapes' is missing"),
    (lambda m: {**m, "shapes": []}, "field 'shapes' must list at least one"),
    (lambda m: {**m, "shapes": [1, 2]}, "field 'shapes[0]' must be a JSON object"),
    (lambda m: {**m, "shapes": [{**m["shapes"][0], "transform": [[1, 0], [0, 1]]}]},
     "field 'shapes[0].transform' must be a finite 4x4 array"),
    (lambda m: {**m, "shapes": [{**m["shapes"][0], "name": 5}]}, "field 'shapes[0].name'"),
    (lambda m: {**m, "shapes": m["shapes"][:1] * 2}, "must be a unique, non-empty name"),
    (lambda m: {**m, "version": [1]}, "field 'version'"),
])
def test_manifest_fields(tmp_path, edit, fragment):
    folder = _groomed_folder(tmp_path / "g")
    _edit_manifest(folder, edit)
    with pytest.raises(ShapeAtlasError) as info:
        load_manifest(folder)
    assert str(info.value).startswith(str(folder / MANIFEST_NAME)) and fragment in str(info.value)


@pytest.mark.timeout(60)
def test_manifest_sources_that_are_no_regular_mesh_files_are_skipped(tmp_path, caplog):
    folder = _groomed_folder(tmp_path / "g")
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the run folder\n")
    fifo = tmp_path / "pipe.ply"
    os.mkfifo(fifo)

    def edit(m):
        m["shapes"][0]["source"] = str(secret)
        m["shapes"][1]["source"] = "/dev/zero"
        m["shapes"][2]["source"] = str(fifo)
        return m
    _edit_manifest(folder, edit)
    meshes, manifest = load_groomed(folder)
    run = tmp_path / "run"
    run.mkdir()
    with caplog.at_level("INFO", logger="shapeatlas.runs.folder"):
        write_training_poses(run, folder, manifest)  # /dev/zero or the FIFO would hang here
        assert training_sources(folder, meshes) is None  # ... and here
    files = {e["file"] for e in json.loads((run / TRAINING_POSES_NAME).read_text())["poses"]
             .values()}
    assert files == {str(folder / f"s{i}.ply") for i in range(3)}
    assert "not a mesh file" in caplog.text and "not a regular file" in caplog.text


# ------------------------------------------------------------------- training poses
@pytest.mark.parametrize("text, fragment", [
    ('{"format": "shapeatlas-training-poses", "poses": [1]}', "field 'poses' must be a JSON"),
    ('{"format": "shapeatlas-training-poses", "poses": {"abc": {}}}', "SHA-256 hex digests"),
    ('{"format": "shapeatlas-training-poses", "poses": {"' + "a" * 64 + '": {"transform": 1}}}',
     "transform' must be a finite 4x4 array"),
    ('[]', "the file must be a JSON object"),
    ('{"format": "shapeatlas-train', "not valid JSON"),
])
def test_training_poses_file(tmp_path, text, fragment):
    (tmp_path / TRAINING_POSES_NAME).write_text(text)
    with pytest.raises(ShapeAtlasError) as info:
        read_training_poses(tmp_path)
    assert fragment in str(info.value) and TRAINING_POSES_NAME in str(info.value)


# ------------------------------------------------------------------------- truth.json
@pytest.mark.parametrize("text", ["[1]", '{"generator": "shapeatlas.data.synthetic_lv", '
                                  '"shapes": [1, 2]}', '{"generator": ', "\x00\x01"])
def test_truth_json_of_the_wrong_shape(tmp_path, text):
    from shapeatlas.data import load_cohort_truth

    (tmp_path / "truth.json").write_text(text)
    with pytest.raises(ShapeAtlasError, match="truth.json: "):
        load_cohort_truth(tmp_path)


# ----------------------------------------------------------------------- checkpoints
def test_a_pickled_checkpoint_is_refused_in_one_line(tmp_path):
    from shapeatlas.training.loop import CHECKPOINT_NAME, load_checkpoint

    torch.save({"model": Path("not a tensor")}, tmp_path / CHECKPOINT_NAME)
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(net.parameters())
    with pytest.raises(ShapeAtlasError) as info:
        load_checkpoint(tmp_path, net, opt)
    message = str(info.value)
    assert "not a shapeatlas checkpoint" in message
    assert "\n" not in message and "weights_only" not in message
    torch.save({"version": 1}, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(ShapeAtlasError, match="not a shapeatlas checkpoint"):
        load_checkpoint(tmp_path, net, opt)


# ------------------------------------------------------------------------------- CLI
def test_info_into_a_closed_pipe_ends_quietly(tmp_path):
    t = trimesh.creation.icosphere(subdivisions=1, radius=20.0)
    write_mesh(Mesh(t.vertices, t.faces, name="a"), tmp_path / "a.ply")
    r, w = os.pipe()
    os.close(r)  # the reader is gone before shapeatlas writes a byte (`| head -0`)
    proc = subprocess.run([sys.executable, "-m", "shapeatlas", "info", str(tmp_path / "a.ply")],
                          stdout=w, stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(w)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
