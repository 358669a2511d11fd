"""Mesh graphs, packing and node features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data

from shapeatlas.mesh import Mesh
from shapeatlas.nn import PackedGraphs, mesh_graph, node_features, pack_graphs


def test_tetrahedron_graph_is_complete_symmetric_and_sorted(tet):
    ei = mesh_graph(*tet)
    assert ei.dtype == torch.long and ei.shape == (2, 12)
    pairs = set(map(tuple, ei.T.tolist()))
    assert pairs == {(i, j) for i in range(4) for j in range(4) if i != j}
    key = ei[0] * 4 + ei[1]
    assert torch.all(key[1:] > key[:-1])


def test_icosphere_graph_matches_mesh_edges_and_degrees(make_ellipsoid):
    v, f = make_ellipsoid(2)
    ei = mesh_graph(v, f)
    mesh = Mesh(v.numpy(), f.numpy())
    assert ei.shape[1] == 2 * len(mesh.edges) == 2 * 480
    undirected = {tuple(sorted(p)) for p in ei.T.tolist()}
    assert undirected == set(map(tuple, mesh.edges.tolist()))
    deg = torch.bincount(ei[0], minlength=len(v))
    assert sorted(set(deg.tolist())) == [5, 6] and int((deg == 5).sum()) == 12
    assert ei.device == v.device


def test_degenerate_faces_give_no_self_loops_and_isolated_vertices_keep_their_index():
    faces = np.array([[0, 1, 2], [2, 2, 3]])
    ei = mesh_graph(np.zeros((5, 3)), faces)
    assert not bool((ei[0] == ei[1]).any())
    undirected = {(0, 1), (1, 2), (0, 2), (2, 3)}
    assert set(map(tuple, ei.T.tolist())) == undirected | {(j, i) for i, j in undirected}


def test_mesh_graph_rejects_out_of_range_faces():
    with pytest.raises(ValueError, match="3 vertices"):
        mesh_graph(np.zeros((3, 3)), np.array([[0, 1, 3]]))


def test_pack_graphs_offsets_and_matches_pyg_batch(tet, make_ellipsoid):
    v1, f1 = torch.as_tensor(tet[0], dtype=torch.float32), torch.as_tensor(tet[1])
    v2, f2 = make_ellipsoid(1)
    g1, g2 = (v1, mesh_graph(v1, f1)), (v2, mesh_graph(v2, f2))
    packed = pack_graphs([g1, g2])
    assert isinstance(packed, PackedGraphs)
    assert packed.ptr.tolist() == [0, 4, 46] and packed.num_graphs == 2 and packed.num_nodes == 46
    assert packed.batch.tolist() == [0] * 4 + [1] * 42
    assert int(packed.edge_index[:, 12:].min()) == 4
    assert torch.equal(packed.edge_index[:, 12:] - 4, g2[1])
    ref = Batch.from_data_list([Data(x=g1[0], edge_index=g1[1]), Data(x=g2[0], edge_index=g2[1])])
    for name in ("x", "edge_index", "batch", "ptr"):
        assert torch.equal(getattr(packed, name), getattr(ref, name)), name
    parts = packed.split(packed.x)
    assert torch.equal(parts[0], v1) and torch.equal(parts[1], v2)


def test_pack_graphs_rejects_mismatched_channels_and_bad_indices():
    x = torch.zeros(3, 3)
    ei = torch.tensor([[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="graph 1"):
        pack_graphs([(x, ei), (torch.zeros(3, 6), ei)])
    with pytest.raises(ValueError, match="graph 0"):
        pack_graphs([(x, torch.tensor([[0, 5], [5, 0]]))])
    with pytest.raises(ValueError):
        pack_graphs([])


def test_node_features_spatial_and_hybrid(tet):
    mesh = Mesh(*tet)
    spatial = node_features(mesh.vertices, kind="spatial")
    assert spatial.shape == (4, 3) and spatial.dtype == torch.get_default_dtype()
    hybrid = node_features(mesh.vertices, mesh.vertex_normals, kind="hybrid")
    assert hybrid.shape == (4, 6)
    np.testing.assert_allclose(hybrid[:, 3:].numpy(), mesh.vertex_normals, atol=1e-6)
    np.testing.assert_allclose(hybrid[:, :3].numpy(), tet[0], atol=1e-6)
    v64 = torch.as_tensor(tet[0])  # float64 tensors keep their dtype
    n64 = torch.zeros(4, 3, dtype=torch.float64)
    assert node_features(v64, n64, kind="hybrid").dtype == torch.float64
    with pytest.raises(ValueError, match="normals"):
        node_features(mesh.vertices, kind="hybrid")
