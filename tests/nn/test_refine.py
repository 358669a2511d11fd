"""Graph smoothing and mesh regularisers on the atlas connectivity."""

from __future__ import annotations

import math

import pytest
import torch

from shapeatlas.nn import (
    edge_length_loss,
    face_adjacency,
    laplacian_loss,
    mesh_graph,
    normal_consistency_loss,
    smooth_deformation,
    smooth_on_graph,
)
from shapeatlas.nn.refine import vertex_normals

PATH = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])  # the path graph 0 - 1 - 2, both directions
OCTA_V = torch.tensor(
    [[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=torch.float64
)
OCTA_F = torch.tensor(
    [[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]]
)


def test_smoothing_step_matches_a_hand_computation():
    h = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [5.0, 0, 0]])
    out = smooth_on_graph(h, PATH, gamma=1.0, iterations=1)
    # degrees (1, 2, 1), A h = (1, 5, 1): ((0 + 1) / 2, (1 + 5) / 3, (5 + 1) / 2)
    torch.testing.assert_close(out[:, 0], torch.tensor([0.5, 2.0, 3.0]))
    two = smooth_on_graph(h, PATH, gamma=1.0, iterations=2)
    torch.testing.assert_close(two, smooth_on_graph(out, PATH, gamma=1.0, iterations=1))
    assert torch.equal(h[:, 0], torch.tensor([0.0, 1.0, 5.0]))  # input untouched


def test_constants_are_fixed_points_and_gamma_zero_is_identity(make_ellipsoid):
    v, f = make_ellipsoid(2)
    ei = mesh_graph(v, f)
    const = torch.full_like(v, 2.5)
    torch.testing.assert_close(smooth_on_graph(const, ei, gamma=3.0, iterations=5), const)
    torch.testing.assert_close(smooth_on_graph(v, ei, gamma=0.0, iterations=3), v)
    assert torch.equal(smooth_on_graph(v, ei, gamma=1.0, iterations=0), v)


def test_smoothing_removes_noise_and_batches_like_single_meshes(make_ellipsoid):
    v, f = make_ellipsoid(2)
    ei = mesh_graph(v, f)
    noisy = v + 0.05 * torch.randn(v.shape, generator=torch.Generator().manual_seed(0))
    smooth = smooth_on_graph(noisy, ei, gamma=1.0, iterations=5)
    assert laplacian_loss(smooth, ei) < 0.2 * laplacian_loss(noisy, ei)
    batch = torch.stack([noisy, 2 * noisy])
    out = smooth_on_graph(batch, ei, gamma=1.0, iterations=5)
    assert out.shape == (2, 162, 3)
    torch.testing.assert_close(out[0], smooth)
    torch.testing.assert_close(out[1], 2 * smooth)


def test_deformation_smoothing_removes_noise_without_shrinking(make_ellipsoid):
    ref, f = make_ellipsoid(3, (1.0, 0.8, 0.6))
    ei = mesh_graph(ref, f)
    shape, _ = make_ellipsoid(3, (1.3, 0.9, 0.7))  # the same vertices on another ellipsoid
    shape = shape + torch.tensor([0.3, -0.2, 0.1])
    noise = 0.03 * torch.randn(shape.shape, generator=torch.Generator().manual_seed(1))
    noisy = shape + noise
    out = smooth_deformation(noisy, ref, ei, gamma=1.0, iterations=8)
    positions = smooth_on_graph(noisy, ei, gamma=1.0, iterations=8)

    def err(x):
        return (x - shape).norm(dim=1).mean()

    def rms(x):
        return (x - x.mean(0)).square().sum(1).mean().sqrt()

    # Most of the noise goes, the size and position stay; smoothing the positions as long
    # shrinks the shape and ends farther from it than the noise did.
    assert err(out) < 0.5 * err(noisy)
    assert abs(rms(out) / rms(shape) - 1) < 0.01
    torch.testing.assert_close(out.mean(0), noisy.mean(0), atol=1e-3, rtol=0)
    assert rms(positions) < 0.97 * rms(shape) and err(positions) > err(noisy)
    # A moved and rescaled copy of the reference has no deformation to smooth.
    copy = 1.7 * ref + torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(smooth_deformation(copy, ref, ei, gamma=1.0, iterations=5), copy)
    assert torch.equal(smooth_deformation(noisy, ref, ei, gamma=1.0, iterations=0), noisy)
    with pytest.raises(ValueError, match="reference"):
        smooth_deformation(noisy, ref[:-1], ei, gamma=1.0, iterations=2)
    # With normals, only the tangential part of each move is kept: noise along the surface
    # (what the normal-only pull cannot remove) goes, and the points stay on the surface.
    normals = vertex_normals(shape, f)
    along = noise - (noise * normals).sum(1, keepdim=True) * normals
    slid = shape + along
    out = smooth_deformation(slid, ref, ei, gamma=1.0, iterations=8,
                             normals=vertex_normals(slid, f))
    assert err(out) < 0.6 * err(slid)
    moved = out - slid
    assert (moved * vertex_normals(slid, f)).sum(1).abs().max() < 1e-5
    with pytest.raises(ValueError, match="normals"):
        smooth_deformation(slid, ref, ei, gamma=1.0, iterations=2, normals=normals[:-1])


def test_smoothing_is_differentiable():
    h = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    def smooth(x):
        return smooth_on_graph(x, PATH, gamma=0.7, iterations=3)

    assert torch.autograd.gradcheck(smooth, (h,))


def test_laplacian_loss_exact_values():
    line = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0]])
    # ends: neighbour mean minus self = +-1, middle: 0 -> mean squared norm 2 / 3
    assert math.isclose(float(laplacian_loss(line, PATH)), 2 / 3, rel_tol=1e-6)
    # each octahedron vertex's four neighbours average to the origin: |L v|^2 = |v|^2 = 1
    ei = mesh_graph(OCTA_V, OCTA_F)
    assert math.isclose(float(laplacian_loss(OCTA_V, ei)), 1.0, rel_tol=1e-12)
    batch = torch.stack([OCTA_V, 3 * OCTA_V])
    assert math.isclose(float(laplacian_loss(batch, ei)), (1 + 9) / 2, rel_tol=1e-12)


def test_edge_length_loss_variance_and_reference(tet):
    v, f = (torch.as_tensor(a) for a in tet)
    edges = torch.tensor([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]])
    # three unit edges and three of length sqrt(2): variance ((sqrt(2) - 1) / 2)^2
    expected = ((math.sqrt(2) - 1) / 2) ** 2
    assert math.isclose(float(edge_length_loss(v, edges)), expected, rel_tol=1e-9)
    lengths = (v[edges[:, 0]] - v[edges[:, 1]]).norm(dim=1)
    assert float(edge_length_loss(v, edges, reference_lengths=lengths)) < 1e-12
    # doubling the mesh: mean of (2 l - l)^2 = mean l^2 = (3 + 6) / 6
    doubled = edge_length_loss(2 * v, edges, reference_lengths=lengths)
    assert math.isclose(float(doubled), 1.5, rel_tol=1e-9)
    assert float(edge_length_loss(OCTA_V, torch.tensor([[0, 2], [2, 4], [4, 0]]))) < 1e-12


def test_face_adjacency_of_closed_meshes(tet, make_ellipsoid):
    pairs = face_adjacency(torch.as_tensor(tet[1]))
    assert {tuple(p) for p in pairs.tolist()} == {(i, j) for i in range(4) for j in range(i + 1, 4)}
    v, f = make_ellipsoid(2)
    pairs = face_adjacency(f)
    assert pairs.shape == (f.shape[0] * 3 // 2, 2) and bool((pairs[:, 0] < pairs[:, 1]).all())
    shared = [len(set(f[a].tolist()) & set(f[b].tolist())) for a, b in pairs.tolist()]
    assert set(shared) == {2}


def test_normal_consistency_exact_values(make_ellipsoid):
    square = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    assert float(normal_consistency_loss(square, faces)) < 1e-7
    folded = square.clone()
    folded[3] = torch.tensor([0.5, 0.5, math.sqrt(0.5)])  # second face turned by 90 degrees
    assert math.isclose(float(normal_consistency_loss(folded, faces)), 1.0, rel_tol=1e-6)
    # octahedron: neighbouring face normals meet at cos = 1/3
    oct_loss = normal_consistency_loss(OCTA_V, OCTA_F, face_pairs=face_adjacency(OCTA_F))
    assert math.isclose(float(oct_loss), 2 / 3, rel_tol=1e-12)
    coarse, fine = make_ellipsoid(1), make_ellipsoid(3)
    assert normal_consistency_loss(*fine) < 0.3 * normal_consistency_loss(*coarse)


def test_regularisers_give_gradients(make_ellipsoid):
    v, f = make_ellipsoid(1)
    noise = torch.randn(v.shape, generator=torch.Generator().manual_seed(0))
    x = (v + 0.01 * noise).requires_grad_()
    ei = mesh_graph(v, f)
    edges = ei[:, ei[0] < ei[1]].T
    loss = laplacian_loss(x, ei) + edge_length_loss(x, edges) + normal_consistency_loss(x, f)
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match=r"\(K, 3\)"):
        laplacian_loss(torch.zeros(4, 2), PATH)
    with pytest.raises(ValueError, match="vertex 2"):
        smooth_on_graph(torch.zeros(2, 3), PATH, gamma=1.0, iterations=1)
    with pytest.raises(ValueError, match="reference_lengths"):
        edge_length_loss(torch.zeros(3, 3), torch.tensor([[0, 1]]), reference_lengths=torch.ones(2))
