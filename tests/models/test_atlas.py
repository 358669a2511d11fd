"""AtlasModel: fit, correspond in the input's frame, save/load, exact resume, bad input."""

from __future__ import annotations

import json
import logging
import tempfile

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from shapeatlas.data.prepared import PREPARED_NAME
from shapeatlas.errors import MeshError, ShapeAtlasError
from shapeatlas.mesh.core import Mesh
from shapeatlas.models.atlas import AtlasModel
from shapeatlas.training.config import MatchConfig
from shapeatlas.training.loop import CHECKPOINT_NAME, TrainingError


def assert_damage_refused(folder, key: str, match: str) -> None:
    """Cut tensor `key` of the model file in `folder` short: loading must refuse it (`match`)."""
    from safetensors.torch import load_file, save_file

    weights = folder / "model.safetensors"
    tensors = load_file(weights)
    tensors[key] = tensors[key][:1]
    save_file(tensors, weights)
    with pytest.raises(ShapeAtlasError, match=match):
        AtlasModel.load(folder, device="cpu")


@pytest.fixture(scope="module")
def fitted(tiny_cohort, tmp_path_factory):
    from shapeatlas.nn.encoder import EncoderConfig
    from shapeatlas.training.config import FitConfig

    torch.set_num_threads(1)
    cfg = FitConfig(device="cpu",
                    model={"encoder": EncoderConfig(widths=(16, 16), heads=2, latent_dim=16),
                           "atlas_vertices": 200},
                    training={"epochs": 2, "atlas_rounds": 2, "batch_size": 2},
                    matching={"refine_steps": 5}, generator={"epochs": 200})
    _, meshes, _ = tiny_cohort
    return AtlasModel(cfg).fit(meshes), meshes


def test_fit_gives_atlas_and_history(fitted):
    model, meshes = fitted
    assert model.atlas_vertices_.shape == (200, 3)
    assert Mesh(model.atlas_vertices_, model.atlas_faces_).is_watertight
    assert [r["round"] for r in model.history_] == [1, 1, 2, 2]
    assert all(np.isfinite(r["loss"]) for r in model.history_)


def test_correspond_lands_on_the_surface_in_the_input_frame(fitted):
    model, meshes = fitted
    mesh = meshes[0]
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_rotvec([0.3, -0.2, 0.5]).as_matrix()
    pose[:3, 3] = [30.0, -12.0, 7.0]
    moved = mesh.transformed(pose)
    a = model.correspond([mesh], transforms=[np.eye(4)])[0]
    b = model.correspond([moved], transforms=[np.linalg.inv(pose)])[0]
    expected = a.points @ pose[:3, :3].T + pose[:3, 3]
    np.testing.assert_allclose(b.points, expected, atol=1e-6)
    assert a.points.shape == (200, 3) and a.atlas_vertex.shape == (mesh.n_vertices,)
    assert np.all((a.confidence > 0) & (a.confidence <= 1))
    # Matching accuracy: within a few mm of an ~90 mm ventricle even for this tiny model.
    assert a.chamfer_mm < 5.0


def test_correspond_aligns_a_new_pose_by_itself(fitted):
    model, meshes = fitted
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_rotvec([0.0, 2.5, 0.4]).as_matrix()
    pose[:3, 3] = [100.0, 0.0, -40.0]
    c = model.correspond([meshes[1].transformed(pose)])[0]
    ref = model.correspond([meshes[1]], transforms=[np.eye(4)])[0]
    back = (c.points - pose[:3, 3]) @ pose[:3, :3]
    assert np.mean(np.linalg.norm(back - ref.points, axis=1)) < 3.0  # mm


def test_a_new_shape_gets_the_pruned_search_then_the_local_refinement(fitted, monkeypatch):
    # `correspond` without a transform: the rigid search with `NEW_SHAPE_AXIS_SD_RATIO` and
    # `NEW_SHAPE_FINALIST_RMS_RATIO`, then the local ICP and cap turn a training file's pose
    # gets (`inputs.new_shape_pose`).
    from shapeatlas.mesh import align
    from shapeatlas.models import inputs

    model, meshes = fitted
    ratios, refined = [], []
    real_align, real_refine = align.align_to_reference, inputs.refine_pose_on_atlas

    def recording_align(*args, axis_sd_ratio=None, finalist_rms_ratio=None, **kwargs):
        ratios.append((axis_sd_ratio, finalist_rms_ratio))
        return real_align(*args, axis_sd_ratio=axis_sd_ratio,
                          finalist_rms_ratio=finalist_rms_ratio, **kwargs)

    def recording_refine(mesh, atlas, start, **kwargs):
        out = real_refine(mesh, atlas, start, **kwargs)
        refined.append((start, out))
        return out

    monkeypatch.setattr(inputs, "align_to_reference", recording_align)
    monkeypatch.setattr(inputs, "refine_pose_on_atlas", recording_refine)
    c = model.correspond([meshes[2].transformed(_turn(70.0, [1.0, 0.3, 0.0]))])[0]
    assert ratios == [(inputs.NEW_SHAPE_AXIS_SD_RATIO, inputs.NEW_SHAPE_FINALIST_RMS_RATIO)]
    assert inputs.NEW_SHAPE_AXIS_SD_RATIO and inputs.NEW_SHAPE_FINALIST_RMS_RATIO
    assert len(refined) == 1
    np.testing.assert_array_equal(c.transform, refined[0][1])  # the pose it matched in
    r = c.transform[:3, :3]
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-9)  # still rigid
    # A given transform is used as it is.
    ratios.clear(), refined.clear()
    model.correspond([meshes[2]], transforms=[np.eye(4)])
    assert ratios == [] and refined == []


def _turn(degrees: float, axis) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = Rotation.from_rotvec(np.radians(degrees) * np.asarray(axis) /
                                     np.linalg.norm(axis)).as_matrix()
    return m


def _angle(t: np.ndarray) -> float:
    return float(np.degrees(Rotation.from_matrix(t[:3, :3]).magnitude()))


def test_pose_refinement_recovers_the_pose_from_exact_correspondences(fitted, monkeypatch):
    # Known answer: the input is the atlas itself, moved, and the matching is replaced by the
    # exact correspondence (input vertex j is atlas vertex j wherever the input lies), so the
    # refinement must undo the error of the given transform whatever the network has learnt.
    model, _ = fitted
    pose = _turn(25.0, [1.0, -0.4, 0.3])
    pose[:3, 3] = [12.0, -30.0, 5.0]
    moved = model.atlas_mesh.transformed(pose)
    start = _turn(10.0, [0.3, 1.0, 0.2]) @ np.linalg.inv(pose)
    real_match = model._match

    def exact(atlas, shape, *, atlas_emb, match, refine=True):
        return (real_match(atlas, shape, atlas_emb=atlas_emb, match=match, refine=False)[0],
                shape.points)

    monkeypatch.setattr(model, "_match", exact)
    monkeypatch.setattr(model, "_pull", lambda start, shape, atlas, match: start)
    no_cpd = MatchConfig(surface_cpd_iterations=0)
    plain = model.correspond([moved], transforms=[start], match=no_cpd)[0]
    np.testing.assert_array_equal(plain.transform, start)
    c = model.correspond([moved], transforms=[start],
                         match=no_cpd.replace(pose_iterations=3))[0]
    np.testing.assert_allclose(c.transform, np.linalg.inv(pose), atol=1e-4)
    np.testing.assert_allclose(c.points, moved.vertices, atol=1e-3)  # back in the input frame


def test_pose_refinement_that_turns_too_far_keeps_the_start(fitted, monkeypatch, caplog):
    import shapeatlas.models.atlas as atlas_module

    model, meshes = fitted
    monkeypatch.setattr(atlas_module, "MAX_POSE_CHANGE_DEG", 1e-3)
    start = _turn(10.0, [0.3, 1.0, 0.2])
    c = model.correspond([meshes[2]], transforms=[start],
                         match=MatchConfig(pose_iterations=3))[0]
    np.testing.assert_array_equal(c.transform, start)
    assert meshes[2].name in caplog.text and "keeping its starting pose" in caplog.text


def test_pose_settings_are_checked(fitted):
    from shapeatlas.training.config import FitConfig

    model, meshes = fitted
    with pytest.raises(ShapeAtlasError, match="pose_iterations"):
        model.correspond(meshes[:1], match=MatchConfig(pose_iterations=-2))
    with pytest.raises(ShapeAtlasError, match="match must be a MatchConfig"):
        model.correspond(meshes[:1], match={"pose_iterations": 2})
    with pytest.raises(ShapeAtlasError, match="single-atlas"):
        FitConfig(matching={"pose_iterations": 4}, clustering={"atlases": 2})
    with pytest.raises(ShapeAtlasError, match="single-atlas"):
        FitConfig(method="cpd-pca", matching={"pose_iterations": 4})
    for bad in ({"pose_iterations": -1}, {"pose_relaxation": 0.0}, {"pose_relaxation": 6.0}):
        with pytest.raises(ShapeAtlasError, match=next(iter(bad))):
            FitConfig(matching=bad)


def test_transport_settings_and_what_they_change(fitted):
    for bad in ({"transport_iterations": -1}, {"transport_sharpness": 0.0},
                {"transport_sharpness": float("inf")}, {"transport_relaxation": 2.0},
                {"transport_relaxation": 0.9}):
        with pytest.raises(ShapeAtlasError, match=next(iter(bad))):
            MatchConfig(**bad)
    # Transport moves the correspondences but keeps them on the surface; 0 is the plain softmax.
    model, meshes = fitted
    before = model.config
    plain = model.correspond(meshes[:1], refine=False,
                             match=MatchConfig(transport_iterations=0))[0]
    ot_match = MatchConfig(transport_iterations=30, transport_sharpness=200.0,
                           transport_relaxation=1.0)
    ot = model.correspond(meshes[:1], refine=False, match=ot_match)[0]
    relaxed = model.correspond(meshes[:1], refine=False,
                               match=ot_match.replace(transport_relaxation=1.5))[0]
    assert np.abs(relaxed.points - ot.points).max() > 1e-4
    assert np.abs(ot.points - plain.points).max() > 1e-3
    assert ot.chamfer_mm < 2 * plain.chamfer_mm + 0.5
    assert model.config == before  # matching never changes the fitted model
    # The model's own matching is what None gives.
    own = model.correspond(meshes[:1], refine=False)[0]
    same = model.correspond(meshes[:1], refine=False, match=model.config.matching)[0]
    np.testing.assert_array_equal(own.points, same.points)


def test_deformation_smoothing_and_what_it_changes(fitted):
    from shapeatlas.models import inputs

    with pytest.raises(ShapeAtlasError, match="deformation_smoothing"):
        MatchConfig(deformation_smoothing=-1)
    assert MatchConfig().deformation_smoothing == 8
    model, meshes = fitted
    off = model.correspond(meshes[:1], refine=False,
                           match=MatchConfig(deformation_smoothing=0))[0]
    on = model.correspond(meshes[:1], refine=False,
                          match=MatchConfig(deformation_smoothing=8))[0]
    assert np.abs(on.points - off.points).max() > 1e-4
    # Smoothing the displacement keeps the shape's size (smoothing positions would shrink
    # it) and the match on the surface.
    def rms(x):
        return np.sqrt(((x - x.mean(0)) ** 2).sum(1).mean())

    assert abs(rms(on.points) / rms(off.points) - 1) < 0.02
    assert on.chamfer_mm < 1.5 * off.chamfer_mm + 0.5
    # Training steps (no matching settings) never use it.
    atlas, emb = model._atlas_embedding()
    aligned = meshes[0].transformed(on.transform)
    shape = inputs.graph_input(aligned, model._norm_for(aligned),
                               features=model.config.model.features, device=model.device_)
    with torch.no_grad():
        train = model.net_.match(emb, shape, model._embed(shape), atlas).smoothed
        results = model.net_.match(emb, shape, model._embed(shape), atlas,
                                   matching=MatchConfig(transport_iterations=0)).smoothed
        unsmoothed = model.net_.match(
            emb, shape, model._embed(shape), atlas,
            matching=MatchConfig(transport_iterations=0, deformation_smoothing=0)).smoothed
    assert torch.equal(train, unsmoothed) and not torch.equal(train, results)


def test_refine_motion_changes_only_the_pull(fitted):
    with pytest.raises(ShapeAtlasError, match="refine_motion"):
        MatchConfig(refine_motion="sideways")
    assert MatchConfig().refine_motion == "normal"
    model, meshes = fitted
    no_cpd = MatchConfig(surface_cpd_iterations=0)
    free = model.correspond(meshes[:1], match=no_cpd.replace(refine_motion="free"))[0]
    normal = model.correspond(meshes[:1], match=no_cpd)[0]
    plain = model.correspond(meshes[:1], refine=False,
                             match=no_cpd.replace(refine_motion="free"))[0]
    unpulled = model.correspond(meshes[:1], refine=False, match=no_cpd)[0]
    # Without the pull nothing changes; with it the points differ from the free pull's and
    # lie nearer the input than without a pull.
    np.testing.assert_allclose(unpulled.points, plain.points)
    assert np.abs(normal.points - free.points).max() > 1e-3
    assert normal.chamfer_mm < plain.chamfer_mm


def test_the_papers_matching_preset(fitted):
    model, meshes = fitted
    paper = MatchConfig.paper()
    assert (paper.transport_iterations, paper.deformation_smoothing,
            paper.surface_cpd_iterations, paper.refine_motion) == (0, 0, 0, "free")
    a = model.correspond(meshes[:1], match=paper)[0]
    b = model.correspond(meshes[:1])[0]
    assert np.abs(a.points - b.points).max() > 1e-3


def test_correspond_refuses_wrong_units_and_too_coarse_meshes(fitted):
    model, meshes = fitted
    metres = meshes[0].with_vertices(meshes[0].vertices / 1000.0)
    with pytest.raises(MeshError, match="size"):
        model.correspond([metres])
    import trimesh

    t = trimesh.creation.icosphere(subdivisions=0, radius=40.0)
    with pytest.raises(MeshError, match="too coarse"):
        model.correspond([Mesh(t.vertices, t.faces, name="coarse")])


def test_save_load_round_trip(fitted, tmp_path):
    model, meshes = fitted
    model.save(tmp_path / "m")
    again = AtlasModel.load(tmp_path / "m", device="cpu")
    a = model.correspond(meshes[:1], transforms=[np.eye(4)])[0]
    b = again.correspond(meshes[:1], transforms=[np.eye(4)])[0]
    np.testing.assert_allclose(a.points, b.points, atol=1e-9)


def test_load_refuses_foreign_and_newer_files(fitted, tmp_path):
    model, _ = fitted
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    (tmp_path / "m" / "model.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(ShapeAtlasError, match="newer"):
        AtlasModel.load(tmp_path / "m")
    (tmp_path / "m" / "model.json").write_text(json.dumps({**meta, "format": "other"}))
    with pytest.raises(ShapeAtlasError, match="not a shapeatlas atlas model"):
        AtlasModel.load(tmp_path / "m")
    with pytest.raises(ShapeAtlasError, match="not a shapeatlas model folder"):
        AtlasModel.load(tmp_path / "nothing-here")


def test_too_few_shapes(tiny_cohort, tiny_config):
    _, meshes, _ = tiny_cohort
    with pytest.raises(ShapeAtlasError, match="at least 3 shapes"):
        AtlasModel(tiny_config).fit(meshes[:2])


def test_unfitted_model_says_so():
    with pytest.raises(ShapeAtlasError, match="not fitted"):
        AtlasModel().correspond([])


def test_resume_after_a_kill_gives_the_same_model(tiny_cohort, tiny_config, tmp_path):
    _, meshes, _ = tiny_cohort
    cfg = tiny_config.replace(training={"epochs": 3})
    full = AtlasModel(cfg).fit(meshes, run_dir=tmp_path / "full")

    class Killed(Exception):
        pass

    def kill_in_round_2(info):
        if info.get("round") == 2 and info.get("epoch") == 2 and info["step"] == 1:
            raise Killed

    with pytest.raises(Killed):
        AtlasModel(cfg).fit(meshes, run_dir=tmp_path / "cut", progress=kill_in_round_2)
    assert (tmp_path / "cut" / CHECKPOINT_NAME).is_file()
    # The prepared shapes stay for the resumed fit, which reads them back, and go with the end.
    assert len(list((tmp_path / "cut" / PREPARED_NAME).rglob("*.npz"))) == len(meshes)
    assert not (tmp_path / "full" / PREPARED_NAME).exists()
    resumed = AtlasModel(cfg).fit(meshes, run_dir=tmp_path / "cut", resume=True)
    assert not (tmp_path / "cut" / PREPARED_NAME).exists()
    np.testing.assert_allclose(resumed.atlas_vertices_, full.atlas_vertices_, atol=1e-9)
    for (k, v), (_, w) in zip(full.net_.state_dict().items(), resumed.net_.state_dict().items()):
        assert torch.equal(v, w), k
    assert [r["loss"] for r in resumed.history_] == [r["loss"] for r in full.history_]


def test_a_fit_holds_the_graphs_of_one_step_not_the_cohorts(tiny_cohort, tiny_config,
                                                            tmp_path, monkeypatch):
    import gc

    from shapeatlas.nn.rasm import GraphInput

    _, meshes, _ = tiny_cohort
    cfg = tiny_config.replace(training={"epochs": 1, "atlas_rounds": 2})
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    def live() -> int:
        gc.collect()
        return sum(type(o) is GraphInput for o in gc.get_objects())

    before = live()  # those of other tests' models, still held
    seen = {"graphs": 0, "prepared": set()}

    def count(info):
        if info["stage"] == "correspondence":
            seen["graphs"] = max(seen["graphs"], live() - before)
            seen["prepared"] |= {p.name for p in tmp_path.glob("shapeatlas-prepared-*")}

    AtlasModel(cfg).fit(meshes, progress=count)
    # A step's batch and the atlas: not every shape of the cohort.
    assert 0 < seen["graphs"] <= cfg.training.batch_size + 1 < len(meshes)
    # The shapes were prepared into a temporary folder, removed at the end.
    assert len(seen["prepared"]) == 1
    assert list(tmp_path.glob("shapeatlas-prepared-*")) == []


def test_nan_in_training_names_the_shape_and_keeps_the_checkpoint(tiny_cohort, tiny_config,
                                                                   tmp_path, monkeypatch):
    import shapeatlas.nn.rasm as rasm

    _, meshes, _ = tiny_cohort
    bad_name = meshes[2].name
    original = rasm.chamfer_loss
    calls = {"n": 0}

    def poisoned(a, b, **kw):
        calls["n"] += 1
        value = original(a, b, **kw)
        # From the second epoch on, the third shape's loss becomes NaN.
        return value * float("nan") if calls["n"] > len(meshes) and poison[0] is a else value

    poison = [None]
    monkeypatch.setattr(rasm, "chamfer_loss", poisoned)
    model = AtlasModel(tiny_config)
    real_graph_input = __import__("shapeatlas.models.inputs", fromlist=["x"]).graph_input

    def spy(mesh, *a, **k):
        g = real_graph_input(mesh, *a, **k)
        if mesh.name == bad_name:
            poison[0] = g.points
        return g

    monkeypatch.setattr("shapeatlas.models.atlas.inputs.graph_input", spy)
    with pytest.raises(TrainingError, match=bad_name.replace("/", ".")):
        model.fit(meshes, run_dir=tmp_path / "run")
    ckpt = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=True)
    assert ckpt["state"]["epoch"] == 1


def test_shape_normalisation_is_size_invariant(tiny_cohort, tiny_config):
    _, meshes, _ = tiny_cohort
    model = AtlasModel(tiny_config.replace(model={"normalisation": "shape"},
                                           training={"atlas_rounds": 1})).fit(meshes)
    a = model.correspond(meshes[:1], transforms=[np.eye(4)])[0]
    # The same shape 20% larger (about its own centroid), seen as is by the model (identity
    # transform), gets the same points, scaled; with cohort normalisation it would not.
    c = meshes[0].centroid
    s = np.eye(4)
    s[:3, :3] *= 1.2
    s[:3, 3] = c - 1.2 * c
    b = model.correspond([meshes[0].transformed(s)], transforms=[np.eye(4)])[0]
    np.testing.assert_allclose(b.points, a.points @ s[:3, :3].T + s[:3, 3], atol=1e-3)
    cohort = AtlasModel(tiny_config.replace(model={"normalisation": "cohort"},
                                            training={"atlas_rounds": 1})).fit(meshes)
    a2 = cohort.correspond(meshes[:1], transforms=[np.eye(4)])[0]
    b2 = cohort.correspond([meshes[0].transformed(s)], transforms=[np.eye(4)])[0]
    assert not np.allclose(b2.points, a2.points @ s[:3, :3].T + s[:3, 3], atol=1e-3)
    assert model.atlas_vertices_.shape == (200, 3)


def test_whitening_normalisation_removes_stretch_and_round_trips(tiny_cohort):
    from shapeatlas.mesh.align import principal_frame
    from shapeatlas.models.inputs import Normalisation, graph_input

    _, meshes, _ = tiny_cohort
    mesh = meshes[0]
    c, axes, _ = principal_frame(mesh)
    # The same LV 25% longer and 10% thinner along its own principal axes.
    stretch = axes @ np.diag([1.25, 0.9, 0.9]) @ axes.T
    longer = mesh.with_vertices((mesh.vertices - c) @ stretch.T + c)
    white = [Normalisation.of_shape(m, whiten=True) for m in (mesh, longer)]
    iso = [Normalisation.of_shape(m) for m in (mesh, longer)]
    d_white = np.abs(white[0].to_model(mesh.vertices) - white[1].to_model(longer.vertices)).max()
    d_iso = np.abs(iso[0].to_model(mesh.vertices) - iso[1].to_model(longer.vertices)).max()
    # Area weights change under a stretch, so whitening is invariant only up to a small error.
    assert d_white < 0.05 and d_iso > 4 * d_white, (d_white, d_iso)
    n = white[1]
    np.testing.assert_allclose(n.to_mm(n.to_model(longer.vertices)), longer.vertices, atol=1e-9)
    again = Normalisation.from_dict(json.loads(json.dumps(n.to_dict())))
    np.testing.assert_allclose(again.to_model(longer.vertices), n.to_model(longer.vertices))
    with pytest.raises(ShapeAtlasError, match="model.json: the normalisation matrix"):
        Normalisation.from_dict({**n.to_dict(), "matrix": [[1, 0], [0, 1]]}, source="model.json")
    # hGCN normals are those of the normalised surface, not of the mm one.
    g = graph_input(longer, n, features="hybrid", device=torch.device("cpu"))
    seen = Mesh(n.to_model(longer.vertices), longer.faces)
    np.testing.assert_allclose(g.x[:, 3:].numpy(), seen.vertex_normals, atol=1e-5)
    flat = Mesh(np.c_[mesh.vertices[:, :2], np.zeros(mesh.n_vertices)], mesh.faces, name="flat")
    with pytest.raises(MeshError, match="flat"):
        Normalisation.of_shape(flat, whiten=True)


def test_whiten_model_saves_and_loads(tiny_cohort, tiny_config, tmp_path):
    _, meshes, _ = tiny_cohort
    model = AtlasModel(tiny_config.replace(model={"normalisation": "whiten"},
                                           training={"atlas_rounds": 1}, generator={"epochs": 20}))
    model = model.fit(meshes)
    assert model.normalisation_.matrix is not None
    model.save(tmp_path / "m")
    again = AtlasModel.load(tmp_path / "m", device="cpu")
    a = model.correspond(meshes[:1], transforms=[np.eye(4)])[0]
    b = again.correspond(meshes[:1], transforms=[np.eye(4)])[0]
    np.testing.assert_allclose(a.points, b.points, atol=1e-9)
    assert a.chamfer_mm < 5.0


@pytest.mark.parametrize("scale", [1.0, 1.3])
def test_refine_pose_on_atlas_moves_a_near_pose_home_and_keeps_its_kind(scale):
    from shapes import asymmetric_blob

    from shapeatlas.models.inputs import refine_pose_on_atlas

    atlas = asymmetric_blob()
    # The mesh is the atlas made `scale` times smaller and posed; the true map back is the
    # similarity `truth`. The start is that map turned by 6 degrees and shifted by 2 mm.
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_rotvec([0.3, -0.5, 0.8]).as_matrix() / scale
    pose[:3, 3] = [10.0, -4.0, 7.0]
    truth = np.linalg.inv(pose)
    off = np.eye(4)
    off[:3, :3] = Rotation.from_rotvec(np.radians(6.0) * np.array([0.0, 0.6, 0.8])).as_matrix()
    off[:3, 3] = [2.0, 0.0, 0.0]
    got = refine_pose_on_atlas(atlas.transformed(pose), atlas, off @ truth)
    np.testing.assert_allclose(got, truth, atol=1e-4)
    assert np.cbrt(np.linalg.det(got[:3, :3])) == pytest.approx(scale, rel=1e-6)


def test_point_model_refines_correspondences_and_saves(fitted, tmp_path, tiny_cohort, tiny_config,
                                                       caplog, monkeypatch):
    from shapeatlas.metrics.surface import point_to_surface_distance
    from shapeatlas.training.config import FitConfig

    for bad in ({"model": {"ssm_modes": -1}}, {"training": {"ssm_rounds": 0}},
                {"matching": {"ssm_iterations": 0}},
                {"model": {"ssm_modes": 2}, "clustering": {"atlases": 2}},
                {"model": {"ssm_modes": 2}, "method": "cpd-pca"}):
        with pytest.raises(ShapeAtlasError, match="ssm_"):
            FitConfig(**bad)
    # Too many modes for the cohort is refused before any training.
    _, cohort, _ = tiny_cohort
    with pytest.raises(ShapeAtlasError, match="ssm_modes 4 needs more than 5"):
        AtlasModel(tiny_config.replace(model={"ssm_modes": 4})).fit(cohort)
    model, meshes = fitted
    plain = model.correspond(meshes[:2], transforms=[np.eye(4)] * 2, refine=False)
    saved = model.config
    try:
        model.fit_point_model(meshes, transforms=[np.eye(4)] * len(meshes), modes=2)
        assert model.config.model.ssm_modes == 2 and model.point_model_.modes.shape == (2, 600)
        ssm = model.correspond(meshes[:2], transforms=[np.eye(4)] * 2, refine=False)
        for a, b, m in zip(plain, ssm, meshes):
            assert np.abs(a.points - b.points).max() > 1e-3  # it moved them, along the surface
            assert point_to_surface_distance(b.points, m).max() < 1e-4  # (float32 round trip)
        model.save(tmp_path / "m")
        again = AtlasModel.load(tmp_path / "m", device="cpu")
        np.testing.assert_allclose(again.point_model_.modes, model.point_model_.modes)
        c = again.correspond(meshes[:1], transforms=[np.eye(4)], refine=False)[0]
        np.testing.assert_allclose(c.points, ssm[0].points, atol=1e-9)
        report = model.point_model_report_
        assert report["kept"] and report["modes"] == 2 and report["chamfer_after_mm"] > 0
        # Per shape, a step that would raise the Chamfer by more than allowed is not taken
        # (here every step: at most half the Chamfer it started from is allowed).
        with monkeypatch.context() as mp, caplog.at_level(logging.INFO, logger="shapeatlas"):
            mp.setattr("shapeatlas.models.atlas.MAX_CHAMFER_RISE", -0.5)
            c = model.correspond(meshes[:1], transforms=[np.eye(4)], refine=False)[0]
        np.testing.assert_allclose(c.points, plain[0].points, atol=1e-9)
        assert "point-model step not taken" in caplog.text
        # A model that raises the training Chamfer by more than allowed is not kept (here any
        # model: at most half the Chamfer it started from is allowed), and says so.
        with caplog.at_level(logging.WARNING, logger="shapeatlas"):
            model.fit_point_model(meshes, transforms=[np.eye(4)] * len(meshes), modes=2,
                                  max_chamfer_rise=-0.5)
        assert model.point_model_ is None and not model.point_model_report_["kept"]
        assert "point model not kept" in caplog.text
        c = model.correspond(meshes[:1], transforms=[np.eye(4)], refine=False)[0]
        np.testing.assert_allclose(c.points, plain[0].points, atol=1e-9)
    finally:
        model.point_model_, model.config = None, saved
    # A damaged point model in a model file is refused with the file's name.
    assert_damage_refused(tmp_path / "m", "point_model.sd", "model.safetensors: point model")


def test_point_model_fit_matches_the_generator_on_the_original_files(tiny_cohort, tiny_config,
                                                                     monkeypatch):
    # `fit` with sources (here the groomed shapes moved by 10 mm, under other names): the point
    # model is fitted on them, and the generator learns from them too, matched in their poses.
    _, meshes, _ = tiny_cohort
    move = np.eye(4)
    move[:3, 3] = [10.0, 0.0, -5.0]
    sources = ([Mesh(m.vertices + move[:3, 3], m.faces, name=f"src_{i}")
                for i, m in enumerate(meshes)], [np.linalg.inv(move)] * len(meshes))
    model = AtlasModel(tiny_config.replace(model={"ssm_modes": 2},
                                           training={"epochs": 1, "atlas_rounds": 1}))
    seen = {}
    fit_generator = AtlasModel._fit_generator

    def spy(self, generator, shapes, *args, **kwargs):
        seen["shapes"] = shapes
        return fit_generator(self, generator, shapes, *args, **kwargs)

    monkeypatch.setattr(AtlasModel, "_fit_generator", spy)
    model.fit(meshes, sources=sources)
    assert model.point_model_report_["kept"], model.point_model_report_
    assert [n for n, _, _ in model.fit_matching_] == [f"src_{i}" for i in range(len(meshes))]
    # (one epoch of a tiny model: 2.6-3.3 mm; matched 10 mm off it would be about 10)
    assert max(c for _, c, _ in model.fit_matching_) < 4.0
    # The generator's shapes are in the aligned frame, on the groomed surfaces, not 10 mm off.
    from shapeatlas.metrics.surface import point_to_surface_distance

    for shape, mesh in zip(seen["shapes"], meshes):
        assert point_to_surface_distance(shape, mesh).mean() < 1.0


def test_new_shapes_are_turned_about_their_cap_like_the_training_shapes(fitted, tmp_path):
    # The tiny LV cohort was groomed with the cap twist, so the model keeps the cap outline of
    # its initial atlas and turns a new shape about its flat cap after the rigid alignment.
    from scipy.spatial.transform import Rotation

    from shapeatlas.mesh.cap import cap_twist, planar_cap

    model, meshes = fitted
    ref = model.cap_reference_
    assert ref is not None
    # A training shape (aligned frame), turned 9 degrees about its cap's normal and then put in
    # another pose: `correspond` finds a pose within 2.5 degrees of the training one.
    m = meshes[1]
    n = planar_cap(m).normal
    turn = Rotation.from_rotvec(np.radians(9.0) * n).as_matrix()
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_rotvec([0.4, -1.1, 0.7]).as_matrix() @ turn
    pose[:3, 3] = [20.0, -5.0, 12.0]
    moved = m.transformed(pose)
    found = model.correspond([moved], refine=False)[0].transform
    assert np.degrees(Rotation.from_matrix((found @ pose)[:3, :3]).magnitude()) < 2.5
    # Its cap now lines up with the model's, within the turn search's precision; the rigid
    # alignment alone gives another pose.
    left = cap_twist(moved.transformed(found), ref)
    assert left is None or np.degrees(Rotation.from_matrix(left[:3, :3]).magnitude()) < 1.0
    model.cap_reference_ = None
    try:
        plain = model.correspond([moved], refine=False)[0].transform
    finally:
        model.cap_reference_ = ref
    assert not np.allclose(plain, found)
    # The cap outline is saved with the model and refused, naming the file, when damaged.
    model.save(tmp_path / "m")
    again = AtlasModel.load(tmp_path / "m", device="cpu")
    np.testing.assert_allclose(again.cap_reference_.outline, ref.outline)
    np.testing.assert_allclose(again.cap_reference_.normal, ref.normal)
    assert_damage_refused(tmp_path / "m", "cap.basis", "model.safetensors: cap outline")


def test_no_cap_is_kept_for_a_cohort_groomed_without_the_cap_twist(tmp_path):
    from shapes import groomed_lv_cohort

    from shapeatlas.mesh.cap import cohort_cap
    from shapeatlas.mesh.groom import GroomOptions, groom_cohort, load_groomed

    meshes, manifest = groomed_lv_cohort(tmp_path / "on", n=5, seed=7)
    ref = [s["name"] for s in manifest["shapes"]].index(manifest["reference"])
    assert cohort_cap(meshes, meshes[ref]) is not None
    groom_cohort(tmp_path / "on" / "raw", tmp_path / "off",
                 GroomOptions(target_vertices=500, n_jobs=1, cap_twist=False))
    meshes, manifest = load_groomed(tmp_path / "off")
    assert cohort_cap(meshes, meshes[ref]) is None


def test_atlas_reestimation_uses_the_free_pull_whatever_the_results_use(tiny_cohort, tiny_config,
                                                                         monkeypatch):
    # `refine_motion` is for the results: the atlas is re-estimated from free-pulled shapes, so
    # a fit's network and atlas do not depend on it (README, Results).
    import shapeatlas.models.atlas as atlas_module

    calls = []
    real = atlas_module.pull_to_surface

    def recording(*args, motion, steps, **kwargs):
        calls.append((motion, steps))
        return real(*args, motion=motion, steps=steps, **kwargs)

    monkeypatch.setattr(atlas_module, "pull_to_surface", recording)
    _, meshes, _ = tiny_cohort
    cfg = tiny_config.replace(training={"epochs": 1}, generator={"epochs": 5},
                              matching={"normal_refine_steps": 3})
    assert cfg.matching.refine_motion == "normal" and cfg.matching.refine_steps == 5
    AtlasModel(cfg).fit(meshes)
    # One re-estimation (2 rounds) of every shape with the free pull's steps, then the
    # generator's shapes as correspond matches them, with the normal pull's.
    n = len(meshes)
    assert calls == [("free", 5)] * n + [("normal", 3)] * n


def test_surface_cpd_pulls_scattered_matches_back_into_a_smooth_deformation():
    import trimesh

    from shapeatlas.mesh.closest import (
        closest_points_on_surface,
        point_to_surface_distance,
    )
    from shapeatlas.training.config import FitConfig

    with pytest.raises(ShapeAtlasError, match="surface_cpd_iterations"):
        FitConfig(matching={"surface_cpd_iterations": -1})
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=40.0)
    atlas = np.asarray(sphere.vertices) * [1.0, 0.8, 0.6]
    model = AtlasModel(FitConfig(matching={"surface_cpd_iterations": 15}))
    model.atlas_vertices_ = atlas

    def warp(x):  # a smooth deformation of realistic size (a few mm)
        return 1.05 * x + 4.0 * np.sin(x[:, [1, 2, 0]] / 25.0)

    shape = Mesh(warp(atlas), sphere.faces, name="warped")
    truth = warp(atlas)
    rng = np.random.default_rng(0)
    # the network's match: each point scattered by ~2 mm, then put back on the surface
    scattered = truth + rng.normal(0.0, 2.0, truth.shape)
    matched = closest_points_on_surface(scattered, shape).points
    before = np.linalg.norm(matched - truth, axis=1).mean()
    refined = model._surface_cpd(shape, matched, model.config.matching)
    after = np.linalg.norm(refined - truth, axis=1).mean()
    assert after < 0.6 * before
    assert point_to_surface_distance(refined, shape).max() < 1e-6  # on the surface
