"""Non-rigid CPD: recovers a known smooth deformation and lands on the target surface."""

from __future__ import annotations

import numpy as np
import trimesh

from shapeatlas.mesh.cpd import LowRankKernel, cpd_nonrigid, normalising_frame


def test_cpd_recovers_a_stretch_and_lands_on_the_target():
    s = trimesh.creation.icosphere(subdivisions=3)
    y = np.asarray(s.vertices) * 30.0
    stretch = np.array([1.3, 1.0, 0.8])
    x_full = trimesh.creation.icosphere(subdivisions=4).vertices * 30.0 * stretch  # other sampling
    c, r = normalising_frame(y)
    kernel = LowRankKernel.of((y - c) / r, beta=1.0, rank=100)
    res = cpd_nonrigid((y - c) / r, (x_full - c) / r, kernel=kernel, lam=2.0, iterations=150)
    moved = res.moved * r + c
    # every moved point is on the stretched sphere: |p / stretch| = 30
    radius = np.linalg.norm(moved / stretch, axis=1)
    assert np.abs(radius - 30.0).mean() < 0.3
    # and it is the stretched version of its own source point (the correspondence is right)
    err = np.linalg.norm(moved - y * stretch, axis=1)
    assert err.mean() < 1.5  # mm, on a 30-39 mm radius
    assert res.posterior.shape == (len(y), len(x_full))
    assert np.all(res.posterior.sum(axis=0) <= 1.0 + 1e-4)


def test_low_rank_kernel_approximates_the_gaussian_kernel():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(200, 3))
    k = LowRankKernel.of(y, beta=1.0, rank=200)
    g = np.exp(-np.square(y[:, None] - y[None]).sum(-1) / 2.0)
    np.testing.assert_allclose((k.q * k.values) @ k.q.T, g, atol=1e-8)
