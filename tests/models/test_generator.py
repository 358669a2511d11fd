"""β-VAE and PCA generators: fit, encode/decode, sampling, persistence, latent-size checks."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from shapeatlas.errors import ShapeAtlasError
from shapeatlas.models.generator import (
    PCAGenerator,
    VAEGenerator,
    check_latent_size,
    generator_from_state,
)
from shapeatlas.training.config import GeneratorConfig


@pytest.fixture(scope="module")
def cohort():
    """30 ellipsoids whose three semi-axes vary independently (3 true modes), in mm."""
    v = np.asarray(trimesh.creation.icosphere(subdivisions=2).vertices)
    rng = np.random.default_rng(0)
    axes = np.array([40.0, 30.0, 20.0]) + rng.normal(size=(30, 3)) * [4.0, 3.0, 2.0]
    return np.stack([v * a for a in axes]), axes


def test_latent_size_rules():
    assert check_latent_size(None, 50, default=16) == 16
    assert check_latent_size(None, 5, default=16) == 4
    with pytest.raises(ShapeAtlasError, match="larger than 10 training shapes support"):
        check_latent_size(10, 10, default=16)
    with pytest.raises(ShapeAtlasError, match="at least 2"):
        check_latent_size(None, 1, default=16)


def test_pca_reconstructs_exactly_and_samples_with_the_cohort_spread(cohort):
    shapes, _ = cohort
    g = PCAGenerator(3).fit(shapes)
    np.testing.assert_allclose(g.reconstruct(shapes), shapes, atol=1e-6)
    s = g.decode(g.sample_latent(4000, np.random.default_rng(0)))
    np.testing.assert_allclose(s.std(axis=0).mean(), shapes.std(axis=0, ddof=1).mean(), rtol=0.05)


def test_vae_learns_the_cohort_and_round_trips(cohort):
    shapes, axes = cohort
    g = VAEGenerator(GeneratorConfig(latent_dim=3, epochs=1500, noise_mm=0.2)).fit(shapes, seed=0)
    rms = np.sqrt(np.square(g.reconstruct(shapes) - shapes).mean())
    spread = np.sqrt(np.square(shapes - shapes.mean(axis=0)).mean())
    assert rms < 0.25 * spread  # it explains most of the variation
    # samples are ellipsoids of the cohort's size: semi-axes within the cohort's range (+-20%)
    s = g.decode(g.sample_latent(200, np.random.default_rng(1)))
    ext = (s.max(axis=1) - s.min(axis=1)) / 2
    assert np.all(ext.mean(axis=0) > axes.min(axis=0) * 0.8)
    assert np.all(ext.mean(axis=0) < axes.max(axis=0) * 1.2)
    tensors, meta = g.state()
    again = generator_from_state(tensors, meta)
    z = g.sample_latent(5, np.random.default_rng(2))
    np.testing.assert_allclose(again.decode(z), g.decode(z), atol=1e-5)
    np.testing.assert_array_equal(again.latent_order_, g.latent_order_)


def test_restricted_sampling_varies_only_the_first_directions(cohort):
    shapes, _ = cohort
    pca = PCAGenerator(3).fit(shapes)
    full = pca.sample_latent(50, np.random.default_rng(4))
    z = pca.sample_latent(50, np.random.default_rng(4), components=1)
    assert not z[:, 1:].any() and np.all(z[:, 0] == full[:, 0])  # same draws, masked
    # shapes with one mode lie on the line through the mean along the first mode
    x = pca.decode(z).reshape(50, -1) - pca.mean_
    np.testing.assert_allclose(x, np.outer(z[:, 0], pca.components_[0]), atol=1e-9)
    np.testing.assert_array_equal(pca.sample_latent(5, np.random.default_rng(4), components=9),
                                  full[:5])  # more than D: all of them
    with pytest.raises(ShapeAtlasError, match="at least 1"):
        pca.sample_latent(5, np.random.default_rng(4), components=0)

    vae = VAEGenerator(GeneratorConfig(latent_dim=3, epochs=20)).fit(shapes, seed=0)
    vae.latent_order_ = np.array([2, 0, 1])  # a learnt order that is not the index order
    full = vae.sample_latent(60, np.random.default_rng(5))
    for k in (1, 2):
        z = vae.sample_latent(60, np.random.default_rng(5), components=k)
        held, kept = vae.latent_order_[k:], vae.latent_order_[:k]
        np.testing.assert_array_equal(z[:, held],
                                      np.broadcast_to(vae.prior_mean_[held], (60, 3 - k)))
        np.testing.assert_array_equal(z[:, kept], full[:, kept])
        # the codes span k dimensions: with k = 1 they lie on a line in latent space
        assert np.linalg.matrix_rank(z - z.mean(axis=0), tol=1e-9) == k
    np.testing.assert_array_equal(vae.sample_latent(60, np.random.default_rng(5), components=3),
                                  full)


def test_vae_is_deterministic_with_a_seed(cohort):
    shapes, _ = cohort
    a = VAEGenerator(GeneratorConfig(latent_dim=2, epochs=50)).fit(shapes, seed=3)
    b = VAEGenerator(GeneratorConfig(latent_dim=2, epochs=50)).fit(shapes, seed=3)
    z = np.ones((1, 2))
    np.testing.assert_array_equal(a.decode(z), b.decode(z))


def test_vae_reports_its_epochs_to_progress_and_the_log(cohort, caplog):
    shapes, _ = cohort
    calls = []
    with caplog.at_level("INFO", logger="shapeatlas.models.generator"):
        quiet = VAEGenerator(GeneratorConfig(latent_dim=2, epochs=25)).fit(shapes, seed=3)
        VAEGenerator(GeneratorConfig(latent_dim=2, epochs=25)).fit(shapes, seed=3,
                                                                   progress=calls.append)
    assert [(c["stage"], c["epoch"], c["epochs"]) for c in calls] == [
        ("generator", 10, 25), ("generator", 20, 25), ("generator", 25, 25)]
    assert all(c["step"] == c["epoch"] and np.isfinite(c["loss"]) for c in calls)
    lines = [r.getMessage() for r in caplog.records if "β-VAE epoch" in r.getMessage()]
    assert len(lines) == 2 * 13 and lines[-1].startswith("β-VAE epoch 25/25: loss")
    # the callback changes nothing in the training
    z = np.ones((1, 2))
    np.testing.assert_array_equal(quiet.decode(z), VAEGenerator(GeneratorConfig(
        latent_dim=2, epochs=25)).fit(shapes, seed=3, progress=calls.append).decode(z))


def test_bad_shapes_are_refused():
    with pytest.raises(ShapeAtlasError, match="NaN"):
        PCAGenerator().fit(np.full((4, 10, 3), np.nan))
    with pytest.raises(ShapeAtlasError, match=r"\(B, K, 3\)"):
        PCAGenerator().fit(np.zeros((4, 10)))
