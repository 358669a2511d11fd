"""Soft correspondence by chunked cosine attention."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from shapeatlas.nn import attention_correspondence
from shapeatlas.nn.attention import _shift_drop_subnormal_, rows_per_chunk, transport_potential


def _embeddings(n: int, d: int = 128, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_identical_meshes_recover_the_identity_through_a_permutation(make_ellipsoid):
    atlas_pts, _ = make_ellipsoid(2, (1.5, 1.0, 0.7))
    emb = _embeddings(len(atlas_pts))
    perm = torch.randperm(len(atlas_pts), generator=torch.Generator().manual_seed(1))
    # The "shape" is the same mesh with its vertices listed in another order.
    c = attention_correspondence(emb, emb[perm], atlas_pts[perm], sharpness=1e4)
    assert c.points.shape == (162, 3) and c.confidence.shape == (162,)
    torch.testing.assert_close(c.points, atlas_pts, rtol=0, atol=1e-6)
    torch.testing.assert_close(c.confidence, torch.ones(162), rtol=0, atol=1e-6)
    assert torch.equal(c.best_atlas_vertex, perm)


def test_duplicated_and_constant_embeddings_give_exact_averages():
    pts = torch.tensor([[0.0, 0, 0], [2.0, 0, 0], [0, 4.0, 0]])
    emb = torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0]])  # shape vertices 0 and 1 look identical
    c = attention_correspondence(torch.tensor([[3.0, 0]]), emb, pts, sharpness=1e4)
    torch.testing.assert_close(c.points, torch.tensor([[1.0, 0, 0]]))  # their midpoint
    torch.testing.assert_close(c.confidence, torch.tensor([0.5]))
    flat = attention_correspondence(torch.ones(2, 4), torch.ones(3, 4), pts, sharpness=1e4)
    torch.testing.assert_close(flat.points, pts.mean(0).expand(2, 3))
    torch.testing.assert_close(flat.confidence, torch.full((2,), 1 / 3))


def test_float32_at_sharpness_1e4_matches_float64():
    atlas, shape = _embeddings(50, 16, seed=2), _embeddings(400, 16, seed=3)
    pts = _embeddings(400, 3, seed=4)
    c32 = attention_correspondence(atlas, shape, pts, sharpness=1e4)
    c64 = attention_correspondence(atlas.double(), shape.double(), pts.double(), sharpness=1e4)
    assert torch.isfinite(c32.points).all() and c32.points.dtype == torch.float32
    torch.testing.assert_close(c32.points.double(), c64.points, rtol=0, atol=1e-4)
    assert torch.equal(c32.best_atlas_vertex, c64.best_atlas_vertex)


def test_weights_that_would_be_subnormal_are_zero_and_nothing_else_changes():
    # Unit 3-vectors: the cosines span [-1, 1], so at sharpness 300 the logits span 600 and most
    # weights fall below float32's smallest normal (e^-87), where float64 still holds them.
    atlas = torch.nn.functional.normalize(_embeddings(60, 3, seed=20), dim=1)
    shape = torch.nn.functional.normalize(_embeddings(500, 3, seed=21), dim=1)
    pts = _embeddings(500, 3, seed=22)
    shifted = 300.0 * atlas @ shape.T
    shifted -= shifted.amax(dim=1, keepdim=True)
    weights = torch.exp(_shift_drop_subnormal_(shifted.clone()))
    tiny = torch.finfo(torch.float32).tiny
    assert (shifted < -87.4).float().mean() > 0.5  # the case the function is for
    assert not ((weights > 0) & (weights < tiny)).any()
    assert torch.equal(weights > 0, shifted > math.log(tiny))

    def run(dtype, **kw):
        a, s, p = (t.to(dtype).clone().requires_grad_() for t in (atlas, shape, pts))
        c = attention_correspondence(a, s, p, sharpness=300.0, **kw)
        (c.points.square().sum() + c.confidence.sum()).backward()
        return c, a.grad, s.grad, p.grad

    ref = run(torch.float64)
    for kw in ({}, {"checkpoint": True, "chunk_size": 7}):
        c, *grads = run(torch.float32, **kw)
        torch.testing.assert_close(c.points.double(), ref[0].points, rtol=0, atol=1e-4)
        torch.testing.assert_close(c.confidence.double(), ref[0].confidence, rtol=0, atol=1e-4)
        for g, g_ref in zip(grads, ref[1:]):
            torch.testing.assert_close(g.double(), g_ref, rtol=1e-3, atol=1e-3)
    with torch.no_grad():  # the in-place path
        c = attention_correspondence(atlas, shape, pts, sharpness=300.0)
    torch.testing.assert_close(c.points.double(), ref[0].points, rtol=0, atol=1e-4)


@pytest.mark.parametrize("checkpoint", [False, True])
def test_chunked_equals_unchunked_with_gradients_to_both_embeddings(checkpoint):
    atlas0, shape0 = _embeddings(37, 8, seed=5), _embeddings(90, 8, seed=6)
    pts0 = _embeddings(90, 3, seed=7)
    results = []
    for chunk in (None, 37, 5):
        atlas, shape, pts = (t.clone().requires_grad_() for t in (atlas0, shape0, pts0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c = attention_correspondence(atlas, shape, pts, sharpness=10.0, chunk_size=chunk,
                                         checkpoint=checkpoint)
        (c.points.square().sum() + c.confidence.sum()).backward()
        results.append((c, atlas.grad, shape.grad, pts.grad))
    ref = results[0]
    for c, ga, gs, gp in results[1:]:
        torch.testing.assert_close(c.points, ref[0].points)
        torch.testing.assert_close(c.confidence, ref[0].confidence)
        assert torch.equal(c.best_atlas_vertex, ref[0].best_atlas_vertex)
        for g, g_ref in ((ga, ref[1]), (gs, ref[2]), (gp, ref[3])):
            torch.testing.assert_close(g, g_ref)
    for g in ref[1:]:
        assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_best_atlas_vertex_matches_a_dense_argmax_and_tiny_budgets_still_work():
    atlas, shape = _embeddings(30, 8, seed=8), _embeddings(100, 8, seed=9)
    pts = _embeddings(100, 3, seed=10)
    tiny = attention_correspondence(atlas, shape, pts, memory_budget_mb=1e-3)  # one row per chunk
    unit = torch.nn.functional.normalize
    dense_cos = unit(shape, dim=1) @ unit(atlas, dim=1).T
    assert torch.equal(tiny.best_atlas_vertex, dense_cos.argmax(dim=1))
    full = attention_correspondence(atlas, shape, pts)
    torch.testing.assert_close(tiny.points, full.points)


def test_checkpoint_keeps_no_attention_weights_for_backward():
    atlas = _embeddings(300, 8).requires_grad_()
    shape = _embeddings(4000, 8, seed=1).requires_grad_()
    pts = _embeddings(4000, 3, seed=2)
    dense_bytes = 300 * 4000 * 4
    for checkpoint in (False, True):
        saved = {}  # distinct storages kept for backward -> bytes

        def pack(t, saved=saved):
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with warnings.catch_warnings(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            warnings.simplefilter("ignore")
            c = attention_correspondence(atlas, shape, pts, sharpness=10.0, chunk_size=50,
                                         checkpoint=checkpoint)
        if checkpoint:
            assert sum(saved.values()) < dense_bytes / 4  # only the chunks' inputs
        else:
            assert sum(saved.values()) >= dense_bytes  # every chunk's (50, V) weights
        c.points.sum().backward()
        assert torch.isfinite(atlas.grad).all()


def test_gradient_without_checkpoint_warns_about_memory():
    atlas = _embeddings(20, 4).requires_grad_()
    shape, pts = _embeddings(30, 4, seed=1), _embeddings(30, 3, seed=2)
    with pytest.warns(UserWarning, match="checkpoint=True"):
        attention_correspondence(atlas, shape, pts, chunk_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attention_correspondence(atlas, shape, pts, chunk_size=4, checkpoint=True)


def test_rows_per_chunk_and_input_checks():
    assert rows_per_chunk(20_000, memory_budget_mb=256) == 838  # 256 MiB / (4 buffers * 20k * 4 B)
    assert rows_per_chunk(10**9, memory_budget_mb=1) == 1
    with pytest.raises(ValueError, match="same D"):
        attention_correspondence(torch.zeros(3, 4), torch.zeros(5, 6), torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"\(5, 3\)"):
        attention_correspondence(torch.zeros(3, 4), torch.zeros(5, 4), torch.zeros(4, 3))


_BIG = textwrap.dedent(
    """
    import json, resource, time, torch
    from shapeatlas.nn import attention_correspondence
    g = torch.Generator().manual_seed(0)
    atlas, shape = torch.randn(3000, 128, generator=g), torch.randn(20000, 128, generator=g)
    pts = torch.randn(20000, 3, generator=g)
    with torch.no_grad():
        attention_correspondence(atlas[:8], shape[:64], pts[:64])  # load the kernels first
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        c = attention_correspondence(atlas, shape, pts, memory_budget_mb=BUDGET)
        seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ok = bool(torch.isfinite(c.points).all()) and c.best_atlas_vertex.shape == (20000,)
    print(json.dumps({"seconds": seconds, "delta_mb": (peak - base) / 1024, "ok": ok}))
    """
)


def test_20k_shape_against_3k_atlas_is_fast_and_memory_bounded():
    # A fresh process, so that the peak RSS is not hidden by earlier tests' peaks.
    budget = 128
    proc = subprocess.run(
        [sys.executable, "-c", _BIG.replace("BUDGET", str(budget))],
        capture_output=True, text=True, timeout=120, check=True,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"]
    # The dense 3,000 x 20,000 logits and weights alone would need 2 x 229 MiB; measured: ~88 MiB
    # (two quarter-budget buffers plus the normalised embeddings).
    assert result["delta_mb"] < budget, result
    assert result["seconds"] < 10.0, result


# ------------------------------------------------------------------------ balanced transport
def _plan(atlas, shape, g, lam, log_a):
    """The transport plan exp(L + f + g) of unit embeddings at sharpness lam. -> (K, V)"""
    a = torch.nn.functional.normalize(atlas, dim=1)
    s = torch.nn.functional.normalize(shape, dim=1)
    return torch.softmax(lam * a @ s.T + g, dim=1) * log_a.exp()[:, None]


def test_transport_potential_gives_a_plan_with_both_marginals():
    atlas, shape = _embeddings(40, 6, seed=20), _embeddings(70, 6, seed=21)
    gen = torch.Generator().manual_seed(22)
    a = torch.rand(40, generator=gen) + 0.5
    b = torch.rand(70, generator=gen) + 0.5
    log_a, log_b = torch.log(a / a.sum()), torch.log(b / b.sum())
    unit = torch.nn.functional.normalize
    g = transport_potential(20.0 * unit(atlas, dim=1), unit(shape, dim=1), log_a, log_b,
                            iterations=300)
    plan = _plan(atlas, shape, g, 20.0, log_a)
    torch.testing.assert_close(plan.sum(1), a / a.sum(), rtol=1e-5, atol=0)
    torch.testing.assert_close(plan.sum(0), b / b.sum(), rtol=1e-3, atol=0)
    # The plain softmax's plan (g = 0) is far from the shape's marginal.
    assert (_plan(atlas, shape, 0.0, 20.0, log_a).sum(0) - b / b.sum()).abs().max() > 1e-2
    # Chunked (a budget far below the 40 x 70 logits) gives the same potential.
    chunked = transport_potential(20.0 * unit(atlas, dim=1), unit(shape, dim=1), log_a, log_b,
                                  iterations=300, memory_budget_mb=1e-3)
    torch.testing.assert_close(chunked, g, rtol=0, atol=1e-4)


@pytest.mark.parametrize("budget_mb", [256.0, 0.01])  # kernel form; chunked (9 rows)
def test_over_relaxed_transport_reaches_the_same_plan_in_fewer_iterations(budget_mb):
    atlas, shape = _embeddings(40, 6, seed=30), _embeddings(70, 6, seed=31)
    gen = torch.Generator().manual_seed(32)
    b = torch.rand(70, generator=gen) + 0.5
    log_a, log_b = torch.full((40,), -math.log(40)), torch.log(b / b.sum())
    unit = torch.nn.functional.normalize
    lam = 100.0
    args = (lam * unit(atlas, dim=1), unit(shape, dim=1), log_a, log_b)

    def column_error(g):
        return float((_plan(atlas, shape, g, lam, log_a).sum(0) - b / b.sum()).abs().sum())

    def potential(iterations, relaxation):
        return transport_potential(*args, iterations=iterations, relaxation=relaxation,
                                   memory_budget_mb=budget_mb)

    limit = potential(3000, 1.0)
    assert column_error(limit) < 1e-5
    plain, relaxed = potential(40, 1.0), potential(40, 1.5)
    assert column_error(relaxed) < 0.2 * column_error(plain)
    # The same fixed point: the attention rows softmax(L + g) (g is defined up to a constant).
    def rows(g):
        return torch.softmax(lam * unit(atlas, dim=1) @ unit(shape, dim=1).T + g, dim=1)

    torch.testing.assert_close(rows(potential(1000, 1.5)), rows(limit), rtol=0, atol=1e-4)
    # omega = 1 is the plain iteration, bit for bit.
    assert torch.equal(potential(40, 1.0), transport_potential(*args, iterations=40,
                                                               memory_budget_mb=budget_mb))
    for bad in (0.5, 2.0, float("nan")):
        with pytest.raises(ValueError, match="relaxation must be in"):
            potential(5, bad)


def test_transport_spreads_atlas_vertices_over_the_whole_shape():
    # A 1-D toy: the atlas's embeddings cover angles [0, 0.5], the shape's [0, 1] (the shape's
    # features are stretched). The softmax sends each atlas vertex to the shape vertex of the
    # same angle, so the shape's second half gets nothing; balanced transport with uniform
    # masses is the monotone quantile map: atlas vertex k of K lands near (k + 0.5) / K.
    k, v = 20, 200
    t_atlas = (torch.arange(k) + 0.5) / k * 0.5
    t_shape = (torch.arange(v) + 0.5) / v
    emb = lambda t: torch.stack([torch.cos(t), torch.sin(t)], dim=1)  # noqa: E731
    pts = torch.stack([t_shape, torch.zeros(v), torch.zeros(v)], dim=1)
    soft = attention_correspondence(emb(t_atlas), emb(t_shape), pts, sharpness=1e4)
    assert soft.points[:, 0].max() < 0.55
    ot = attention_correspondence(emb(t_atlas), emb(t_shape), pts, sharpness=3e3,
                                  transport_iterations=5000)
    torch.testing.assert_close(ot.points[:, 0], (torch.arange(k) + 0.5) / k, rtol=0, atol=0.02)
    # Area weights move the quantiles: doubling the masses of the shape's first half puts two
    # thirds of the atlas there.
    w = torch.where(t_shape < 0.5, 2.0, 1.0)
    ot_w = attention_correspondence(emb(t_atlas), emb(t_shape), pts, sharpness=3e3,
                                    transport_iterations=5000, shape_weights=w)
    assert abs(int((ot_w.points[:, 0] < 0.5).sum()) - round(k * 2 / 3)) <= 1


def test_zero_transport_iterations_is_the_plain_softmax_and_weights_are_checked():
    atlas, shape, pts = _embeddings(30, 8, seed=23), _embeddings(50, 8, seed=24), \
        _embeddings(50, 3, seed=25)
    plain = attention_correspondence(atlas, shape, pts, sharpness=50.0)
    zero = attention_correspondence(atlas, shape, pts, sharpness=50.0, transport_iterations=0,
                                    shape_weights=torch.full((50,), float("nan")))
    assert torch.equal(plain.points, zero.points)
    ot = attention_correspondence(atlas, shape, pts, sharpness=50.0, transport_iterations=5)
    assert not torch.allclose(ot.points, plain.points)
    for bad in (torch.ones(49), torch.full((50,), float("nan")), -torch.ones(50),
                torch.zeros(50)):
        with pytest.raises(ValueError, match="shape_weights must be 50 finite non-negative"):
            attention_correspondence(atlas, shape, pts, sharpness=50.0, transport_iterations=3,
                                     shape_weights=bad)
    with pytest.raises(ValueError, match="iterations must be >= 0"):
        transport_potential(atlas, shape, torch.zeros(30), torch.zeros(50), iterations=-1)


def test_transport_gradients_flow_through_the_cosines():
    atlas = _embeddings(12, 4, seed=26).requires_grad_()
    shape = _embeddings(30, 4, seed=27).requires_grad_()
    pts = _embeddings(30, 3, seed=28)
    c = attention_correspondence(atlas, shape, pts, sharpness=20.0, transport_iterations=10,
                                 checkpoint=True, chunk_size=5)
    c.points.sum().backward()
    assert atlas.grad is not None and shape.grad is not None
    assert torch.isfinite(atlas.grad).all() and atlas.grad.abs().sum() > 0
