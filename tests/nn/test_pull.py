"""The test-time pull onto the input surface (`nn.rasm.pull_to_surface`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from shapeatlas.nn.rasm import AtlasGraph, GraphInput, LossWeights, pull_to_surface
from shapeatlas.nn.refine import vertex_normals


def _graph(vertices: np.ndarray, faces: np.ndarray) -> AtlasGraph:
    p = torch.as_tensor(vertices, dtype=torch.float64)
    f = torch.as_tensor(faces, dtype=torch.long)
    e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    g = GraphInput(name="atlas", x=p, points=p, edge_index=torch.cat([e, e.flip(1)]).T,
                   weights=torch.full((len(p),), 1.0 / len(p), dtype=torch.float64))
    return AtlasGraph.build(g, f)


def test_normal_motion_moves_points_only_along_their_normals():
    # The atlas: a unit sphere; the input: a sphere of radius 1.2 with another triangulation,
    # shifted sideways, so that a free pull also slides the points along the surface.
    atlas_mesh = trimesh.creation.icosphere(subdivisions=3)
    atlas = _graph(atlas_mesh.vertices, atlas_mesh.faces)
    target_mesh = trimesh.creation.uv_sphere(radius=1.2, count=[24, 24])
    target = torch.as_tensor(target_mesh.vertices + [0.15, 0.0, 0.0], dtype=torch.float64)
    weights = torch.full((len(target),), 1.0 / len(target), dtype=torch.float64)
    start = atlas.graph.points
    lw = LossWeights(chamfer=1.0, recon=0.0, kl=0.0, normal=0.01, laplacian=0.1, edge=0.1)
    kw = dict(target_weights=weights, steps=60, lr=0.01, weights=lw)
    normal = pull_to_surface(start, target, atlas, motion="normal", **kw)
    free = pull_to_surface(start, target, atlas, **kw)
    # The vertex normals of a unit sphere point outwards, along the points themselves.
    n = vertex_normals(start, atlas.faces)
    assert torch.allclose(n.norm(dim=1), torch.ones(len(n), dtype=n.dtype))
    assert (n * start).sum(1).min() > 0.999
    # A normal move has no component across its normal.
    moved = normal - start
    assert (moved - (moved * n).sum(1, keepdim=True) * n).norm(dim=1).max() < 1e-12
    assert moved.norm(dim=1).mean() > 0.05  # and it did move, towards the larger sphere
    free_moved = free - start
    free_tangential = free_moved - (free_moved * n).sum(1, keepdim=True) * n
    assert free_tangential.norm(dim=1).max() > 1e-2  # a free pull slides too
    # Both end closer to the input surface than they started.
    def to_surface(p):
        return torch.cdist(p, target).min(dim=1).values.mean()
    assert to_surface(normal) < 0.5 * to_surface(start)
    assert to_surface(free) < 0.5 * to_surface(start)
    with pytest.raises(ValueError, match="motion"):
        pull_to_surface(start, target, atlas, motion="sideways", **kw)
