"""Pure geometry of triangle meshes: arrays in, arrays out.

These are the few per-mesh quantities everything else relies on. They are written here (rather
than taken from trimesh) so that they have one documented convention, work on plain arrays without
building a trimesh object, and are cheap enough to call in tight loops. Shapes use the project's
letters: `V` vertices, `F` faces, `E` edges.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

#: Lengths below this (in the mesh's units) count as zero when normalising normals.
NORMAL_EPS = 1e-12


def face_cross(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unnormalised face normals, twice the face area in length.

    verts: (V, 3), faces: (F, 3) -> (F, 3)
    """
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return np.cross(v1 - v0, v2 - v0)


def face_areas(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area of each triangle. verts: (V, 3), faces: (F, 3) -> (F,)"""
    return 0.5 * np.linalg.norm(face_cross(verts, faces), axis=1)


def face_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit face normals (right-hand rule on the vertex order); zero for degenerate faces.

    verts: (V, 3), faces: (F, 3) -> (F, 3)
    """
    n = face_cross(verts, faces)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return np.where(length > NORMAL_EPS, n / np.maximum(length, NORMAL_EPS), 0.0)


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals; zero for vertices in no (non-degenerate) face.

    verts: (V, 3), faces: (F, 3) -> (V, 3)
    """
    n = face_cross(verts, faces)  # area-weighted already
    acc = np.zeros_like(verts, dtype=np.float64)
    for k in range(3):
        np.add.at(acc, faces[:, k], n)
    length = np.linalg.norm(acc, axis=1, keepdims=True)
    return np.where(length > NORMAL_EPS, acc / np.maximum(length, NORMAL_EPS), 0.0)


def directed_edges(faces: np.ndarray) -> np.ndarray:
    """The three directed half-edges of every face, in face order. faces: (F, 3) -> (3F, 2)"""
    return np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], axis=0)


def pair_codes(pairs: np.ndarray) -> tuple[np.ndarray, int]:
    """Encode integer pairs (P, 2) as one int64 each (1-D unique is ~10x faster than axis=0)."""
    base = int(pairs.max()) + 1 if pairs.size else 1
    return pairs[:, 0].astype(np.int64) * base + pairs[:, 1], base


def unique_edges(faces: np.ndarray) -> np.ndarray:
    """Undirected edges, each once, as sorted pairs `(i < j)`, sorted lexicographically.

    faces: (F, 3) -> (E, 2)
    """
    edges, _ = edge_face_counts(faces)
    return edges


def edge_face_counts(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undirected edges and how many faces share each. faces: (F, 3) -> (E, 2), (E,)"""
    if len(faces) == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64)
    e = np.sort(directed_edges(faces), axis=1)
    codes, base = pair_codes(e)
    uniq, counts = np.unique(codes, return_counts=True)
    return np.stack([uniq // base, uniq % base], axis=1), counts


def is_watertight(faces: np.ndarray) -> bool:
    """True when every edge is shared by exactly two faces with opposite orientation.

    This is the condition under which the enclosed volume is well defined: closed, manifold along
    edges and consistently oriented.
    """
    if len(faces) == 0:
        return False
    d = directed_edges(faces)
    codes, base = pair_codes(d)
    uniq, counts = np.unique(codes, return_counts=True)
    if np.any(counts != 1):  # a half-edge used twice: non-manifold or inconsistently oriented
        return False
    twins = d[:, 1].astype(np.int64) * base + d[:, 0]
    pos = np.searchsorted(uniq, twins)
    return bool(np.all(pos < len(uniq)) and np.all(uniq[np.minimum(pos, len(uniq) - 1)] == twins))


def signed_volume(verts: np.ndarray, faces: np.ndarray) -> float:
    """Signed enclosed volume by the divergence theorem (positive for outward-facing normals).

    Meaningful only for a closed surface; the value is then independent of the origin.
    """
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    # Shift to the centroid to keep the triple products small (less cancellation).
    c = verts.mean(axis=0)
    return float(np.einsum("ij,ij->i", v0 - c, np.cross(v1 - c, v2 - c)).sum() / 6.0)


def vertex_adjacency(faces: np.ndarray, n_verts: int) -> sparse.csr_matrix:
    """Symmetric 0/1 vertex adjacency of the mesh graph. -> (V, V) sparse"""
    e = unique_edges(faces)
    data = np.ones(2 * len(e), dtype=np.float64)
    rows = np.concatenate([e[:, 0], e[:, 1]])
    cols = np.concatenate([e[:, 1], e[:, 0]])
    return sparse.csr_matrix((data, (rows, cols)), shape=(n_verts, n_verts))


def component_labels(faces: np.ndarray, n_verts: int) -> np.ndarray:
    """Connected-component label of every vertex (isolated vertices get their own). -> (V,)"""
    _, labels = csgraph.connected_components(vertex_adjacency(faces, n_verts), directed=False)
    return labels


def euler_characteristic(n_verts: int, faces: np.ndarray) -> int:
    """V - E + F over the vertices that appear in faces (2 for a sphere, 0 for a torus)."""
    used = np.unique(faces).size
    return int(used - len(unique_edges(faces)) + len(faces))


def area_weighted_centroid(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Centroid of the surface (not of the vertices), so it does not depend on the sampling. -> (3,)"""
    a = face_areas(verts, faces)
    centres = verts[faces].mean(axis=1)
    total = a.sum()
    if total <= 0:
        return verts.mean(axis=0)
    return (centres * a[:, None]).sum(axis=0) / total


def orient_faces_consistently(faces: np.ndarray) -> np.ndarray:
    """Flip faces so neighbours traverse every shared (manifold) edge in opposite directions.

    faces: (F, 3) -> (F, 3). Works component by component: a breadth-first spanning tree of the
    face graph (faces joined across edges shared by exactly two faces) propagates the first
    face's orientation. Non-manifold edges are ignored. Which side is "outward" is left to the
    caller (see `signed_volume`). Vectorised except for one cheap pass over the BFS order; this
    replaces trimesh's `repair.fix_winding`, which took ~0.6 s per 7k-face liver.
    """
    f = np.asarray(faces, dtype=np.int64)
    n_faces = len(f)
    if n_faces == 0:
        return f.copy()
    he = directed_edges(f)  # (3F, 2); half-edge h belongs to face h % F
    face_of = np.tile(np.arange(n_faces), 3)
    key, _ = pair_codes(np.sort(he, axis=1))
    _, edge_id, counts = np.unique(key, return_inverse=True, return_counts=True)
    edge_id = edge_id.reshape(-1)
    interior = counts[edge_id] == 2
    idx = np.flatnonzero(interior)
    idx = idx[np.argsort(edge_id[idx], kind="stable")]
    h1, h2 = idx[0::2], idx[1::2]
    fa, fb = face_of[h1], face_of[h2]
    # Same direction along the shared edge means the two faces disagree in orientation.
    disagree = (he[h1, 0] == he[h2, 0]).astype(np.int8)
    data = np.concatenate([disagree, disagree]) + 1  # +1 keeps zeros in the sparse matrix
    graph = sparse.csr_matrix(
        (data, (np.concatenate([fa, fb]), np.concatenate([fb, fa]))), shape=(n_faces, n_faces)
    )
    n_comp, labels = csgraph.connected_components(graph, directed=False)
    flip = np.zeros(n_faces, dtype=bool)
    seen = np.zeros(n_comp, dtype=bool)
    for root in range(n_faces):
        if seen[labels[root]]:
            continue
        seen[labels[root]] = True
        order, pred = csgraph.breadth_first_order(graph, root, directed=False,
                                                  return_predecessors=True)
        if order.size < 2:  # a face with no manifold neighbour (a fin): nothing to propagate
            continue
        parity = np.asarray(graph[pred[order[1:]], order[1:]]).ravel() - 1
        for child, p, d in zip(order[1:].tolist(), pred[order[1:]].tolist(), parity.tolist()):
            flip[child] = flip[p] ^ bool(d)
    out = f.copy()
    out[flip] = out[flip][:, ::-1]
    return out
