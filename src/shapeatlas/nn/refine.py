"""Refining a corresponded shape on the atlas mesh: graph smoothing and mesh regularisers.

After attention places the atlas vertices on a shape, the result lives on the atlas connectivity
(K vertices, the atlas's edges and faces). `smooth_on_graph` is the implicit-style smoothing step of
Atlas-R-ASMG (arXiv 2403.06317),

    h <- (I + gamma D)^{-1} (h + gamma A h),

with A the 0/1 adjacency and D the degree matrix; since D is diagonal the inverse is a division.
A constant field is a fixed point, and as gamma grows each vertex moves to its neighbours' mean.
Applied to positions it also shrinks the shape and rounds off its detail; `smooth_deformation`
applies the same step to the displacement from a reference shape on the same graph (the atlas,
centred on h and scaled to its RMS radius), which removes the noise of a correspondence without
shrinking h or flattening what it shares with the reference (a smooth deformation of the atlas,
the prior the Laplacian regulariser states as a loss). Given h's normals it keeps only the
tangential part of each move: the points slide along the surface h describes and do not leave
it where the shape differs from the reference more than a smooth deformation can say (a real
liver's lobes: docs/results.md).

The regularisers keep the refined shape a good mesh when it is optimised: a uniform Laplacian
(smoothness), edge lengths (even sampling) and normal consistency (no folds). All are pure,
differentiable functions of the vertex positions and accept one mesh (K, 3) or a batch (B, K, 3)
sharing the atlas connectivity. Connectivity-only work (`face_adjacency`) is done once, outside any
training loop, and passed in.

Shapes: `B` meshes, `K` atlas vertices, `E` edges (directed in edge_index, undirected in edges),
`F` faces, `P` pairs of faces sharing an edge.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "edge_length_loss",
    "face_adjacency",
    "laplacian_loss",
    "normal_consistency_loss",
    "smooth_deformation",
    "smooth_on_graph",
]

#: Face normals shorter than this (twice a degenerate face's area) are treated as this long.
NORMAL_EPS = 1e-12


def _check_verts(verts: Tensor, what: str = "verts") -> None:
    if verts.ndim not in (2, 3) or verts.shape[-1] != 3:
        raise ValueError(f"{what} must have shape (K, 3) or (B, K, 3), got {tuple(verts.shape)}")


def _check_edge_index(edge_index: Tensor, n_verts: int) -> None:
    if edge_index.ndim != 2 or edge_index.shape[0] != 2 or edge_index.is_floating_point():
        raise ValueError(
            f"edge_index must be an integer (2, E) tensor, got {tuple(edge_index.shape)}"
        )
    if edge_index.numel() and int(edge_index.max()) >= n_verts:
        raise ValueError(
            f"edge_index refers to vertex {int(edge_index.max())}, but there are {n_verts} vertices"
        )


def _neighbour_sum_and_degree(h: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
    """(A h, degree). h: (..., K, C), symmetric edge_index: (2, E) -> (..., K, C), (K, 1)."""
    src, dst = edge_index[0].long(), edge_index[1].long()
    k = h.shape[-2]
    summed = torch.zeros_like(h).index_add(-2, dst, h.index_select(-2, src))
    degree = torch.bincount(dst, minlength=k).to(h.dtype).unsqueeze(1)
    return summed, degree


def smooth_on_graph(h: Tensor, edge_index: Tensor, *, gamma: float, iterations: int) -> Tensor:
    """Smooth a per-vertex field on the atlas graph: h <- (I + gamma D)^{-1} (h + gamma A h).

    Parameters
    ----------
    h: (K, 3) or (B, K, 3) (any channel count works) positions on the atlas vertices.
    edge_index: (2, E) symmetric atlas graph (both directions of each edge, no self loops), as
        from `mesh_graph`.
    gamma: smoothing strength, >= 0 (0 returns h unchanged).
    iterations: number of steps, >= 0.

    Returns
    -------
    Same shape, dtype and device as h; differentiable with respect to h.
    """
    if h.ndim not in (2, 3):
        raise ValueError(f"h must have shape (K, C) or (B, K, C), got {tuple(h.shape)}")
    if gamma < 0 or iterations < 0:
        raise ValueError(f"gamma and iterations must be >= 0, got {gamma} and {iterations}")
    _check_edge_index(edge_index, h.shape[-2])
    out = h
    for _ in range(iterations):
        summed, degree = _neighbour_sum_and_degree(out, edge_index)
        out = (out + gamma * summed) / (1.0 + gamma * degree)
    return out if iterations else h.clone()


def smooth_deformation(h: Tensor, reference: Tensor, edge_index: Tensor, *, gamma: float,
                       iterations: int, normals: Tensor | None = None) -> Tensor:
    """Smooth the displacement of h from `reference` on the atlas graph (`smooth_on_graph`).

    The reference is first given h's centroid and RMS radius (a similarity without rotation:
    both are in the same aligned frame), so a difference in size or position is not treated as
    a deformation to smooth; then h <- ref + smooth(h - ref). With `normals`, each vertex's move
    loses its component along its normal (the points slide along h's surface).

    h: (K, 3) positions; reference: (K, 3) the same vertices on another shape (the atlas);
    edge_index: (2, E) symmetric atlas graph; gamma, iterations: as `smooth_on_graph`;
    normals: None or (K, 3) unit normals of h (e.g. `vertex_normals`)
    -> (K, 3), same dtype and device as h (differentiable with respect to h).
    """
    _check_verts(h, "h")
    if h.ndim != 2 or reference.shape != h.shape:
        raise ValueError(f"h and reference must both have shape (K, 3), got {tuple(h.shape)} and "
                         f"{tuple(reference.shape)}")
    if normals is not None and normals.shape != h.shape:
        raise ValueError(f"normals must have the shape of h, {tuple(h.shape)}, got "
                         f"{tuple(normals.shape)}")
    if not iterations:
        return smooth_on_graph(h, edge_index, gamma=gamma, iterations=0)
    ref = reference.to(h.dtype) - reference.to(h.dtype).mean(0)
    hc = h.mean(0)
    ref_rms = ref.square().sum(1).mean().sqrt().clamp_min(torch.finfo(h.dtype).tiny)
    ref = ref * ((h - hc).square().sum(1).mean().sqrt() / ref_rms) + hc
    out = ref + smooth_on_graph(h - ref, edge_index, gamma=gamma, iterations=iterations)
    if normals is None:
        return out
    move = out - h
    return h + move - (move * normals).sum(1, keepdim=True) * normals


def laplacian_loss(verts: Tensor, edge_index: Tensor) -> Tensor:
    """Mean squared norm of the uniform Laplacian, mean over neighbours minus the vertex itself.

    verts: (K, 3) or (B, K, 3); edge_index: (2, E) symmetric atlas graph -> scalar. Vertices without
    neighbours contribute zero. Zero exactly when every vertex is its neighbours' centroid.
    """
    _check_verts(verts)
    _check_edge_index(edge_index, verts.shape[-2])
    summed, degree = _neighbour_sum_and_degree(verts, edge_index)
    lap = torch.where(degree > 0, summed / degree.clamp_min(1.0) - verts, torch.zeros_like(verts))
    return lap.square().sum(dim=-1).mean()


def _edge_lengths(verts: Tensor, edges: Tensor) -> Tensor:
    """verts: (..., K, 3), edges: (E, 2) -> (..., E)."""
    d = verts.index_select(-2, edges[:, 0].long()) - verts.index_select(-2, edges[:, 1].long())
    sq = d.square().sum(dim=-1)
    # Zero-length edges get length 0 and gradient 0 (a plain sqrt would give NaN gradients).
    positive = sq > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, sq, torch.ones_like(sq))), 0.0)


def edge_length_loss(
    verts: Tensor, edges: Tensor, *, reference_lengths: Tensor | None = None
) -> Tensor:
    """Regularity of edge lengths.

    Without `reference_lengths`: the variance of the edge lengths (squared mesh units), averaged
    over the batch; zero when all edges are equally long, which favours an even sampling. With
    `reference_lengths`: the mean squared deviation from them (e.g. the atlas's own lengths, so
    the refined shape keeps the atlas's sampling pattern).

    verts: (K, 3) or (B, K, 3); edges: (E, 2) undirected (each edge once, e.g. `Mesh.edges`);
    reference_lengths: (E,) or (B, E) -> scalar.
    """
    _check_verts(verts)
    if edges.ndim != 2 or edges.shape[1] != 2 or edges.shape[0] == 0:
        raise ValueError(f"edges must be a non-empty (E, 2) tensor, got {tuple(edges.shape)}")
    lengths = _edge_lengths(verts, edges)
    if reference_lengths is None:
        return lengths.var(dim=-1, unbiased=False).mean()
    ref = reference_lengths.to(device=lengths.device, dtype=lengths.dtype)
    if ref.shape[-1] != lengths.shape[-1]:
        raise ValueError(
            f"reference_lengths must have {lengths.shape[-1]} entries (one per edge), "
            f"got {tuple(ref.shape)}"
        )
    return (lengths - ref).square().mean()


def face_adjacency(faces: Tensor) -> Tensor:
    """Pairs of faces that share an edge, computed from connectivity alone (do it once).

    faces: (F, 3) integer -> (P, 2) long, on faces' device, each pair once (i < j for manifold
    edges). An edge shared by m > 2 faces (non-manifold) yields the m - 1 pairs of consecutive
    faces in index order rather than all m (m - 1) / 2.
    """
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.is_floating_point():
        raise ValueError(f"faces must be an integer (F, 3) tensor, got {tuple(faces.shape)}")
    f = faces.long()
    n_faces = f.shape[0]
    a = torch.cat([f[:, 0], f[:, 1], f[:, 2]])
    b = torch.cat([f[:, 1], f[:, 2], f[:, 0]])
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    key = lo * (int(f.max()) + 1 if f.numel() else 1) + hi
    face_id = torch.arange(n_faces, device=f.device).repeat(3)
    # Sort by edge, ties by face (two stable sorts), so faces sharing an edge are neighbours.
    by_face = torch.argsort(face_id, stable=True)
    order = by_face[torch.argsort(key[by_face], stable=True)]
    key, face_id = key[order], face_id[order]
    same = key[1:] == key[:-1]
    pairs = torch.stack([face_id[:-1][same], face_id[1:][same]], dim=1)
    return pairs[pairs[:, 0] != pairs[:, 1]]


def _face_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """verts: (..., K, 3), faces: (F, 3) -> (..., F, 3) normals of length twice the face's
    area (right-hand rule)."""
    f = faces.long()
    v0, v1, v2 = (verts.index_select(-2, f[:, i]) for i in range(3))
    return torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)


def _unit_face_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """verts: (..., K, 3), faces: (F, 3) -> (..., F, 3) unit normals (right-hand rule)."""
    n = _face_normals(verts, faces)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(NORMAL_EPS)


def vertex_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """Unit area-weighted vertex normals (K, 3) of `verts` (K, 3) on `faces` (detached; a
    vertex of no face, or of faces of no area, gets 0)."""
    verts = verts.detach()
    f = faces.long()
    n = torch.zeros_like(verts).index_add_(
        0, f.reshape(-1), _face_normals(verts, f).repeat_interleave(3, dim=0))
    length = n.norm(dim=1, keepdim=True)
    return torch.where(length > 0, n / length.clamp_min(torch.finfo(verts.dtype).tiny), 0.0)


def normal_consistency_loss(
    verts: Tensor, faces: Tensor, *, face_pairs: Tensor | None = None
) -> Tensor:
    """Mean of 1 - cos between the normals of faces sharing an edge.

    verts: (K, 3) or (B, K, 3); faces: (F, 3) consistently oriented; face_pairs: (P, 2) from
    `face_adjacency(faces)` (computed here if not given; pass it in a training loop) -> scalar in
    [0, 2]; 0 for a flat patch, small for a fine smooth surface, large for folds and spikes.
    """
    _check_verts(verts)
    pairs = face_adjacency(faces) if face_pairs is None else face_pairs.long()
    if pairs.shape[0] == 0:
        return verts.new_zeros(())
    normals = _unit_face_normals(verts, faces)
    n0 = normals.index_select(-2, pairs[:, 0])
    n1 = normals.index_select(-2, pairs[:, 1])
    return (1.0 - (n0 * n1).sum(dim=-1)).mean()
