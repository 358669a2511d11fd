"""What shapeatlas reads back (configs, model folders, groom manifests, training poses,
checkpoints) is checked field by field: one line naming the file and the field, never a
traceback, a hang, or a file read from outside its folder."""

from __future__ import annotations

import ast
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
from shapeatlas.pipeline import (
    TRAINING_POSES_NAME,
    load_model,
    read_training_poses,
    training_sources,
    write_training_poses,
)
from shapeatlas.training.config import FIELD_SPECS, FitConfig

SRC = Path(__file__).resolve().parents[1] / "src" / "shapeatlas"


# ------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("name, value, fragment", [
    ("epochs", "two", "field 'epochs' must be an integer in [1, 10,000], got 'two'"),
    ("epochs", 25.0, "field 'epochs' must be an integer"),
    ("sample_relax", 10**9, "field 'sample_relax' must be an integer in [0, 1,000]"),
    ("sample_relax", 1e9, "field 'sample_relax' must be an integer"),
    ("normal_refine_steps", 10**8, "field 'normal_refine_steps'"),
    ("attention_memory_mb", -1, "field 'attention_memory_mb' must be a finite number in (0,"),
    ("smooth_gamma", math.nan, "field 'smooth_gamma' must be a finite number"),
    ("w_kl", math.inf, "field 'w_kl'"),
    ("lr_decay", 1.5, "field 'lr_decay'"),
    ("even_edges", "yes", "field 'even_edges' must be true or false"),
    ("device", 3, "field 'device' must be one of"),
    ("atlases", 0, "field 'atlases' must be 'auto' or an integer"),
    ("vae_hidden", [256, "x"], "field 'vae_hidden'"),
    ("encoder", [1, 2], "field 'encoder' must be a JSON object"),
    ("encoder", {"heads": 10**6}, "field 'encoder.heads'"),
    ("encoder", {"depth": 3}, "field 'encoder' has unknown fields ['depth']"),
])
def test_config_field_of_the_wrong_type_or_range_is_named(name, value, fragment):
    with pytest.raises(ShapeAtlasError) as info:
        FitConfig.from_dict({name: value}, source="RUN/model.json")
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
    assert code == 1 and "field 'epochs' must be an integer in [1, 10,000]" in err
    assert "Traceback" not in err


def test_every_field_has_a_spec_and_documents_its_range():
    tree = ast.parse((SRC / "training" / "config.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "FitConfig")
    docs = {a.target.id: b.value.value for a, b in zip(cls.body, cls.body[1:])
            if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr)}
    assert set(docs) == set(FIELD_SPECS) | {"encoder"}
    for name, spec in FIELD_SPECS.items():
        if spec is not None:
            assert "Range: " + spec.describe() + "." in " ".join(docs[name].split()), name


def test_the_default_config_round_trips_and_old_ints_become_floats():
    cfg = FitConfig()
    assert FitConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert FitConfig.from_dict({"lr": 1}).lr == 1.0 and isinstance(FitConfig.from_dict(
        {"lr": 1}).lr, float)


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
    (lambda m: {**m, "config": {**m["config"], "epochs": "two"}},
     "model.json: field 'epochs' must be an integer in [1, 10,000], got 'two'"),
    (lambda m: {**m, "config": {**m["config"], "sample_relax": 10**9}}, "field 'sample_relax'"),
    (lambda m: {**m, "config": {**m["config"], "normal_refine_steps": 10**8}},
     "field 'normal_refine_steps'"),
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
    _edit_meta(folder, lambda m: {**m, "config": {**m["config"], "encoder": {
        **m["config"]["encoder"], "widths": [4096] * 16, "heads": 64}}})
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
    with caplog.at_level("INFO", logger="shapeatlas.pipeline"):
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
