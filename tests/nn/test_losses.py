"""Chamfer, KL and L1 losses with known values and gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from shapeatlas.metrics import chamfer_distance
from shapeatlas.nn import chamfer_loss, kl_divergence, l1_reconstruction


def _grid() -> torch.Tensor:
    g = torch.arange(5, dtype=torch.float64)
    return torch.cartesian_prod(g, g, g)  # 125 points, spacing 1


def test_chamfer_of_identical_and_shifted_sets():
    a = _grid()
    assert float(chamfer_loss(a, a)) == 0.0
    b = a + torch.tensor([0.0, 0.0, 0.01], dtype=torch.float64)  # every point's nearest is its twin
    assert math.isclose(float(chamfer_loss(a, b)), 1e-4, rel_tol=1e-9)
    assert math.isclose(float(chamfer_loss(a, b, squared=False)), 0.01, rel_tol=1e-6)


def test_chamfer_asymmetric_sets_and_weights():
    a = torch.zeros(1, 3)
    b = torch.tensor([[0.0, 0, 0], [2.0, 0, 0]])
    # a -> b: 0; b -> a: distances (0, 2): squared mean 2, plain mean 1
    assert math.isclose(float(chamfer_loss(a, b)), 1.0)
    assert math.isclose(float(chamfer_loss(a, b, squared=False)), 0.5, rel_tol=1e-6)
    weighted = chamfer_loss(a, b, weights_b=torch.tensor([1.0, 3.0]))  # b -> a: (0 + 3 * 4) / 4
    assert math.isclose(float(weighted), 1.5)
    assert float(chamfer_loss(b, a)) == float(chamfer_loss(a, b))
    with pytest.raises(ValueError, match="weights_b"):
        chamfer_loss(a, b, weights_b=torch.ones(3))


def test_chamfer_unsquared_agrees_with_the_metric():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 3)), rng.normal(size=(200, 3))
    ours = float(chamfer_loss(torch.as_tensor(a), torch.as_tensor(b), squared=False))
    assert math.isclose(ours, chamfer_distance(a, b), rel_tol=1e-6)


def test_chamfer_gradients_match_finite_differences_and_keep_dtype():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(40, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(30, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    for squared in (True, False):
        assert torch.autograd.gradcheck(lambda x, y: chamfer_loss(x, y, squared=squared), (a, b))
    loss = chamfer_loss(a.float(), b.float())
    assert loss.dtype == torch.float32 and loss.ndim == 0


def test_chamfer_pulls_points_together():
    gen = torch.Generator().manual_seed(1)
    target = torch.randn(200, 3, generator=gen)
    x = (torch.randn(150, 3, generator=gen) * 2 + 1).requires_grad_()
    opt = torch.optim.Adam([x], lr=0.05)
    first = float(chamfer_loss(x.detach(), target))
    for _ in range(100):
        opt.zero_grad()
        loss = chamfer_loss(x, target)
        loss.backward()
        opt.step()
    assert float(chamfer_loss(x.detach(), target)) < 0.1 * first


def test_chamfer_rejects_nan_and_empty():
    with pytest.raises(ValueError, match="NaN"):
        chamfer_loss(torch.tensor([[float("nan"), 0, 0]]), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="non-empty"):
        chamfer_loss(torch.zeros(0, 3), torch.zeros(2, 3))


def test_chamfer_with_a_prebuilt_tree_is_the_same():
    from scipy.spatial import cKDTree

    g = torch.Generator().manual_seed(3)
    a = torch.randn(200, 3, generator=g, dtype=torch.float64)
    b1 = torch.randn(150, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    b2 = b1.detach().clone().requires_grad_(True)
    plain = chamfer_loss(a, b1)
    cached = chamfer_loss(a, b2, tree_a=cKDTree(a.numpy()))
    plain.backward()
    cached.backward()
    assert plain.item() == cached.item()
    assert torch.equal(b1.grad, b2.grad)


def test_kl_divergence_known_values_and_gradient():
    zeros = torch.zeros(5, 4)
    assert float(kl_divergence(zeros, zeros)) == 0.0
    # per vertex: 0.5 * sum_d (mu^2 + e^lv - 1 - lv); mu = 1, lv = 0, D = 2 -> 1
    assert math.isclose(float(kl_divergence(torch.ones(3, 2), torch.zeros(3, 2))), 1.0)
    lv = torch.full((1, 1), math.log(4.0))
    expected = 0.5 * (4 - 1 - math.log(4))
    assert math.isclose(float(kl_divergence(torch.zeros(1, 1), lv)), expected, rel_tol=1e-6)
    mu = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    logvar = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(kl_divergence, (mu, logvar))


def test_l1_reconstruction():
    recon = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    assert float(l1_reconstruction(recon, target)) == 1.25
    with pytest.raises(ValueError, match="one shape"):
        l1_reconstruction(recon, target[:1])
