"""FeaStConv reordering and the graph VAE."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch_geometric.nn import FeaStConv

from shapeatlas.nn import (
    EncoderConfig,
    GraphVAE,
    ReorderedFeaStConv,
    mesh_graph,
    pack_graphs,
)
from shapeatlas.nn.feast import neighbour_table
from shapeatlas.nn.losses import kl_divergence, l1_reconstruction

TINY = EncoderConfig(widths=(16, 24), heads=4, latent_dim=8)


@pytest.mark.parametrize("c_in,c_out", [(3, 16), (32, 32), (48, 4)])
@pytest.mark.parametrize("padded", [True, False])
def test_reordered_feastconv_equals_pyg_values_and_gradients(make_ellipsoid, c_in, c_out, padded):
    v, f = make_ellipsoid(2, (1.2, 1.0, 0.8))
    ei = mesh_graph(v, f)
    torch.manual_seed(0)
    ref = FeaStConv(c_in, c_out, heads=4)
    new = ReorderedFeaStConv(c_in, c_out, heads=4)
    new.load_state_dict(ref.state_dict())
    x = torch.randn(v.shape[0], c_in, dtype=torch.float64)
    ref, new = ref.double(), new.double()
    table = dataclasses.replace(neighbour_table(ei, v.shape[0], dtype=x.dtype), padded=padded)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ref(xa, ei), new(xb, neighbours=table)
    torch.testing.assert_close(yb, ya, rtol=1e-10, atol=1e-12)
    w = torch.randn_like(ya)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-10, atol=1e-12)
    for (name, pa), pb in zip(ref.named_parameters(), new.parameters()):
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-9, atol=1e-12, msg=name)


def test_without_self_loops_matches_pyg_too(make_ellipsoid):
    v, f = make_ellipsoid(1)
    ei = mesh_graph(v, f)
    torch.manual_seed(0)
    ref = FeaStConv(3, 8, heads=2, add_self_loops=False)
    new = ReorderedFeaStConv(3, 8, heads=2, add_self_loops=False)
    new.load_state_dict(ref.state_dict())
    torch.testing.assert_close(new(v, ei), ref(v, ei))


def test_neighbour_table_rows_list_each_vertex_and_its_neighbours(tet):
    ei = mesh_graph(*tet)
    table = neighbour_table(ei, 4)
    assert table.index.shape == (4, 4) and bool(table.mask.all()) and table.padded
    for i in range(4):
        assert sorted(table.index[i].tolist()) == [0, 1, 2, 3]
    assert table.count.squeeze(1).tolist() == [4.0] * 4


def _packed(make_ellipsoid):
    g = [make_ellipsoid(1, (1.5, 1.0, 0.7)), make_ellipsoid(2, (1.0, 0.8, 1.2))]
    return pack_graphs([(v, mesh_graph(v, f)) for v, f in g])


def test_vae_shapes_and_eval_is_deterministic(make_ellipsoid):
    p = _packed(make_ellipsoid)
    torch.manual_seed(0)
    vae = GraphVAE(TINY).eval()
    out = vae(p.x, p.edge_index, p.batch)
    assert out.mu.shape == out.logvar.shape == out.z.shape == (42 + 162, 8)
    assert out.recon.shape == (204, 3)
    assert torch.equal(out.z, out.mu)
    again = vae(p.x, p.edge_index, p.batch)
    assert torch.equal(again.recon, out.recon)


def test_each_mesh_is_encoded_independently_of_the_rest_of_the_batch(make_ellipsoid):
    p = _packed(make_ellipsoid)
    torch.manual_seed(0)
    vae = GraphVAE(TINY).eval()
    packed_mu = p.split(vae(p.x, p.edge_index, p.batch).mu)
    v, f = make_ellipsoid(2, (1.0, 0.8, 1.2))
    alone = vae(v, mesh_graph(v, f)).mu
    torch.testing.assert_close(packed_mu[1], alone, rtol=1e-5, atol=1e-5)


def test_training_samples_follow_the_generator(make_ellipsoid):
    p = _packed(make_ellipsoid)
    vae = GraphVAE(TINY).train()
    z1 = vae(p.x, p.edge_index, p.batch, generator=torch.Generator().manual_seed(3)).z
    z2 = vae(p.x, p.edge_index, p.batch, generator=torch.Generator().manual_seed(3)).z
    z3 = vae(p.x, p.edge_index, p.batch, generator=torch.Generator().manual_seed(4)).z
    assert torch.equal(z1, z2) and not torch.equal(z1, z3)


def test_pyg_and_reordered_convolutions_are_interchangeable(make_ellipsoid):
    p = _packed(make_ellipsoid)
    torch.manual_seed(0)
    fast = GraphVAE(TINY).eval()
    stock = GraphVAE(dataclasses.replace(TINY, conv="pyg")).eval()
    stock.load_state_dict(fast.state_dict())
    a, b = fast(p.x, p.edge_index, p.batch), stock(p.x, p.edge_index, p.batch)
    torch.testing.assert_close(a.mu, b.mu, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.recon, b.recon, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("norm", ["graph", "layer"])
def test_a_few_steps_of_training_reduce_the_loss(make_ellipsoid, norm):
    p = _packed(make_ellipsoid)
    torch.manual_seed(0)
    vae = GraphVAE(dataclasses.replace(TINY, norm=norm, in_channels=3)).train()
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        out = vae(p.x, p.edge_index, p.batch, generator=gen)
        loss = l1_reconstruction(out.recon, p.x) + 1e-3 * kl_divergence(out.mu, out.logvar)
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(q.grad).all() for q in vae.parameters() if q.grad is not None)
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0]


def test_config_is_validated_and_frozen():
    with pytest.raises(ValueError, match="widths"):
        EncoderConfig(widths=())
    with pytest.raises(ValueError, match="norm"):
        EncoderConfig(norm="batch")
    with pytest.raises(dataclasses.FrozenInstanceError):
        EncoderConfig().heads = 2
    assert EncoderConfig(widths=[8, 8]).widths == (8, 8)


def test_wrong_feature_count_and_nan_are_rejected(make_ellipsoid):
    v, f = make_ellipsoid(1)
    vae = GraphVAE(TINY)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        vae(torch.zeros(len(v), 6), mesh_graph(v, f))
    bad = v.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        vae(bad, mesh_graph(v, f))
