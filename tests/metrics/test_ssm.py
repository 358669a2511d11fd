"""SSM metrics on shapes with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from shapeatlas.mesh.core import Mesh
from shapeatlas.metrics import ssm
from shapeatlas.models.generator import PCAGenerator


@pytest.fixture(scope="module")
def sphere():
    return trimesh.creation.icosphere(subdivisions=2)


def ellipsoids(sphere, axes) -> np.ndarray:
    return np.stack([np.asarray(sphere.vertices) * a for a in axes])


def test_compactness_of_a_two_mode_cohort(sphere):
    rng = np.random.default_rng(0)
    axes = np.c_[20 + 3 * rng.normal(size=12), 20 + 2 * rng.normal(size=12), np.full(12, 20.0)]
    c = ssm.compactness(ellipsoids(sphere, axes))
    assert c.shape == (11,)
    assert c[1] == pytest.approx(1.0, abs=1e-9) and c[0] < 0.99
    assert np.all(np.diff(c) >= -1e-12)


def test_specificity_is_zero_for_training_shapes_and_grows_with_distance(sphere):
    train = ellipsoids(sphere, [[20, 20, 20], [25, 20, 20], [20, 25, 20]])
    faces = np.asarray(sphere.faces)
    s0 = ssm.specificity(train, train, atlas_faces=faces)
    assert s0.vertex_mean == pytest.approx(0.0, abs=1e-12) and s0.surface_mean < 1e-9
    assert list(s0.nearest) == [0, 1, 2]
    far = train + np.array([0.0, 0.0, 3.0])  # every sample 3 mm from its nearest shape
    s3 = ssm.specificity(far, train, atlas_faces=faces)
    assert s3.vertex_mean == pytest.approx(3.0, abs=1e-9)


def test_specificity_curve_scores_each_restricted_sampler(sphere):
    train = ellipsoids(sphere, [[20, 20, 20], [25, 20, 20], [20, 25, 20]])
    # m mm from the nearest training shape, for m latent directions
    rows = ssm.specificity_curve(lambda m: train + np.array([0.0, 0.0, float(m)]), train,
                                 components=[1, 2, 4])
    assert [r["components"] for r in rows] == [1, 2, 4]
    assert [r["n_samples"] for r in rows] == [3, 3, 3]
    np.testing.assert_allclose([r["mean"] for r in rows], [1.0, 2.0, 4.0], atol=1e-9)
    np.testing.assert_allclose([r["se"] for r in rows], 0.0, atol=1e-9)
    d, idx = ssm.nearest_training_shape(train[[2, 0]], train)
    assert list(idx) == [2, 0] and np.all(d == 0)


def test_generalization_is_exact_with_all_modes_and_worse_with_fewer(sphere):
    rng = np.random.default_rng(1)
    axes = np.c_[20 + 3 * rng.normal(size=8), 20 + 2 * rng.normal(size=8), np.full(8, 20.0)]
    shapes = ellipsoids(sphere, axes)
    faces = np.asarray(sphere.faces)
    g = PCAGenerator(2).fit(shapes[:6])
    meshes = [Mesh(s, faces) for s in shapes[6:]]
    rows = ssm.generalization(g, shapes[6:], meshes, atlas_faces=faces, components=[1, 2])
    assert rows[1]["mean"] < 1e-6 < rows[0]["mean"]


def test_plausibility_of_identical_and_shifted_cohorts():
    rng = np.random.default_rng(2)
    vol = rng.normal(150, 20, size=200)
    ext = rng.normal([90, 50, 45], 5, size=(200, 3))
    same = ssm.plausibility(vol, ext, vol, ext)
    assert same["volume_ks"] == 0.0 and same["volume_wasserstein_ml"] == 0.0
    assert same["acceptance_rate"] == pytest.approx(np.mean(
        (vol >= np.percentile(vol, 2.5)) & (vol <= np.percentile(vol, 97.5))
        & np.all((ext >= np.percentile(ext, 2.5, axis=0))
                 & (ext <= np.percentile(ext, 97.5, axis=0)), axis=1)))
    shifted = ssm.plausibility(vol, ext, vol + 100.0, ext)
    assert shifted["volume_ks"] > 0.9 and shifted["acceptance_rate"] < 0.05
    assert shifted["volume_wasserstein_ml"] == pytest.approx(100.0)


def test_extents_along_axes():
    box = trimesh.creation.box(extents=[10.0, 4.0, 2.0])
    axes = ssm.principal_axes(np.asarray(box.vertices))
    np.testing.assert_allclose(ssm.extents(box.vertices, axes), [10.0, 4.0, 2.0], atol=1e-9)
