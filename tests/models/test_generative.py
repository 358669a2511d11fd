"""Generation through both models: sample, traverse, reconstruct, save/load, and CPD-PCA."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shapeatlas.errors import ShapeAtlasError
from shapeatlas.models.atlas import AtlasModel
from shapeatlas.models.cpd_pca import CPDPCAModel
from shapeatlas.runs.load import load_model


@pytest.fixture(scope="module")
def models(tiny_cohort):
    from shapeatlas.nn.encoder import EncoderConfig
    from shapeatlas.training.config import FitConfig

    cfg = FitConfig(device="cpu",
                    model={"encoder": EncoderConfig(widths=(16, 16), heads=2, latent_dim=16),
                           "atlas_vertices": 200},
                    training={"epochs": 1, "atlas_rounds": 1, "batch_size": 2},
                    matching={"refine_steps": 5}, generator={"epochs": 300}, cpd={"iterations": 40})
    _, meshes, _ = tiny_cohort
    return {"rasm": AtlasModel(cfg).fit(meshes),
            "cpd-pca": CPDPCAModel(cfg.replace(method="cpd-pca")).fit(meshes)}, meshes


@pytest.mark.parametrize("method", ["rasm", "cpd-pca"])
def test_sample_traverse_reconstruct(models, method):
    by_method, meshes = models
    model = by_method[method]
    assert model.training_shapes_.shape == (5, 200, 3)
    assert model.generator_.latent_dim == 4  # min(16, 5 - 1)
    s = model.sample(20, seed=1)
    assert s.vertices.shape == (20, 200, 3) and s.latent.shape == (20, 4)
    np.testing.assert_array_equal(s.vertices, model.sample(20, seed=1).vertices)
    # one latent direction (the first by training variance): the same draws, the rest held
    one = model.sample(6, seed=1, components=1)
    first, rest = model.generator_.latent_order_[0], model.generator_.latent_order_[1:]
    np.testing.assert_array_equal(one.latent[:, first], s.latent[:6, first])
    assert np.ptp(one.latent[:, rest], axis=0).max() == 0.0
    vols = model.sample_volumes(s.vertices)
    real = model.real_volumes_
    # LV-sized, in mL: none turned inside out, the typical one inside the real range
    assert np.all(vols > 0) and real.min() < np.median(vols) < real.max()
    meshes_out = s.meshes()
    assert meshes_out[0].is_watertight and meshes_out[3].name == "sample_0003"
    tr = model.traverse(directions=2, steps=3)
    assert set(tr) == {0, 1} and tr[0].vertices.shape == (3, 200, 3)
    # the middle of a traversal is the same shape for every direction
    np.testing.assert_allclose(tr[0].vertices[1], tr[1].vertices[1])
    rec = model.reconstruct(meshes[:1], transforms=[np.eye(4)])[0]
    d = np.linalg.norm(rec.vertices - model.training_shapes_[0], axis=1).mean()
    assert d < 5.0  # mm: a training shape comes back close to its normalised shape


@pytest.mark.parametrize("method", ["rasm", "cpd-pca"])
def test_save_load_keeps_the_generator(models, method, tmp_path):
    model = models[0][method]
    model.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "model.json").read_text())["generator"]["latent_dim"] == 4
    again = load_model(tmp_path / "m", device="cpu")
    assert type(again) is type(model)
    np.testing.assert_allclose(again.sample(3, seed=5).vertices, model.sample(3, seed=5).vertices,
                               atol=1e-5)
    np.testing.assert_allclose(again.training_shapes_, model.training_shapes_)


def test_cpd_pca_correspond_lands_on_the_surface(models):
    model = models[0]["cpd-pca"]
    meshes = models[1]
    c = model.correspond(meshes[:1], transforms=[np.eye(4)])[0]
    assert c.points.shape == (200, 3) and c.atlas_vertex.shape == (meshes[0].n_vertices,)
    from shapeatlas.metrics.surface import point_to_surface_distance

    on_surface = point_to_surface_distance(c.points, meshes[0].vertices, meshes[0].faces)
    assert on_surface.mean() < 1.0  # mm: the registered atlas lies on the shape
    assert np.all((c.confidence > 0) & (c.confidence <= 1))


def test_latent_size_above_the_cohort_is_refused(tiny_cohort):
    from shapeatlas.training.config import FitConfig

    _, meshes, _ = tiny_cohort
    with pytest.raises(ShapeAtlasError, match="latent_dim 5 is larger than 5 training shapes"):
        CPDPCAModel(FitConfig(method="cpd-pca", model={"atlas_vertices": 200},
                              generator={"latent_dim": 5}, cpd={"iterations": 5})).fit(meshes)


def test_model_without_generator_says_so(models):
    model = models[0]["rasm"]
    gen = model.generator_
    try:
        model.generator_ = None
        with pytest.raises(ShapeAtlasError, match="no shape generator"):
            model.sample(1)
    finally:
        model.generator_ = gen


class _PolyData:
    """What `as_mesh` reads of a `pyvista.PolyData` (pyvista itself is optional)."""

    def __init__(self, mesh):
        self.points = np.array(mesh.vertices)
        self.faces = np.hstack([np.full((mesh.n_faces, 1), 3), mesh.faces]).ravel()
        self.n_points = mesh.n_vertices


@pytest.mark.parametrize("method", ["rasm", "cpd-pca"])
def test_encode_is_deterministic_and_decodes_back_to_the_shape(models, method):
    by_method, meshes = models
    model = by_method[method]
    eye = [np.eye(4)] * 3
    codes = model.encode(meshes[:3], transforms=eye)
    assert codes.shape == (3, model.generator_.latent_dim) == (3, 4)
    np.testing.assert_array_equal(codes, model.encode(meshes[:3], transforms=eye))
    np.testing.assert_array_equal(codes, model.transform(meshes[:3], transforms=eye))
    shapes, _ = model.normalised_shapes(meshes[:3], transforms=eye)
    back = model.decode(codes)
    np.testing.assert_array_equal(back.latent, codes)
    err = np.linalg.norm(back.vertices - shapes, axis=2).mean(axis=1)         # mm, per shape
    other = np.linalg.norm(back.vertices - shapes[[1, 2, 0]], axis=2).mean(axis=1)
    # each code decodes to its own shape (PCA with 4 modes on 5 shapes: exactly, up to the
    # relaxation and projection; the tiny β-VAE: within a few mm), not to another one
    assert err.max() < (0.5 if method == "cpd-pca" else 5.0), err
    assert np.all(err < other), (err, other)


@pytest.mark.parametrize("method", ["rasm", "cpd-pca"])
def test_trimesh_and_pyvista_meshes_are_accepted(models, method):
    by_method, meshes = models
    model = by_method[method]
    eye = [np.eye(4)] * 2
    codes = model.encode(meshes[:2], transforms=eye)
    np.testing.assert_allclose(model.encode([m.to_trimesh() for m in meshes[:2]], transforms=eye),
                               codes, atol=1e-9)
    np.testing.assert_allclose(model.encode([_PolyData(m) for m in meshes[:2]], transforms=eye),
                               codes, atol=1e-5)  # pyvista's float32 points
    corr = model.correspond([meshes[0].to_trimesh()], transforms=eye[:1])[0]
    assert corr.name == "mesh_000" and corr.points.shape == (200, 3)
    rec = model.reconstruct([_PolyData(meshes[0])], transforms=eye[:1])[0]
    assert rec.n_vertices == 200 and rec.name == "mesh_000"
    with pytest.raises(ShapeAtlasError, match=r"pass \[mesh\]"):
        model.encode(meshes[0])


def test_fit_takes_trimesh_meshes(models, tiny_cohort):
    model = models[0]["cpd-pca"]
    _, meshes, _ = tiny_cohort
    again = CPDPCAModel(model.config).fit([m.to_trimesh() for m in meshes])
    np.testing.assert_allclose(again.atlas_vertices_, model.atlas_vertices_, atol=1e-9)


def test_sampling_reports_progress_once_per_shape(tmp_path):
    from model_folders import save_cpd_model

    from shapeatlas.runs.load import load_model

    model = load_model(save_cpd_model(tmp_path / "run"), device="cpu")
    calls = []
    samples = model.sample(7, seed=0, progress=calls.append)
    assert calls == [1] * 7 and samples.vertices.shape[0] == 7
    # the same shapes as without a callback
    np.testing.assert_array_equal(model.sample(7, seed=0).vertices, samples.vertices)
