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


def unique_edges(faces: np.ndarray) -> np.ndarray:
    """Undirected edges, each once, as sorted pairs `(i < j)`, sorted lexicographically.

    faces: (F, 3) -> (E, 2)
    """
    if len(faces) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    e = np.sort(directed_edges(faces), axis=1)
    return np.unique(e, axis=0)


def edge_face_counts(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undirected edges and how many faces share each. faces: (F, 3) -> (E, 2), (E,)"""
    e = np.sort(directed_edges(faces), axis=1)
    edges, counts = np.unique(e, axis=0, return_counts=True)
    return edges, counts


def is_watertight(faces: np.ndarray) -> bool:
    """True when every edge is shared by exactly two faces with opposite orientation.

    This is the condition under which the enclosed volume is well defined: closed, manifold along
    edges and consistently oriented.
    """
    if len(faces) == 0:
        return False
    d = directed_edges(faces)
    # Each directed half-edge must appear exactly once, and its twin exactly once.
    uniq, counts = np.unique(d, axis=0, return_counts=True)
    if np.any(counts != 1):
        return False
    twins = uniq[:, ::-1]
    # uniq is sorted lexicographically; look each twin up by a structured key.
    key = uniq[:, 0].astype(np.int64) * (int(uniq.max()) + 1) + uniq[:, 1]
    tkey = twins[:, 0].astype(np.int64) * (int(uniq.max()) + 1) + twins[:, 1]
    return bool(np.all(np.isin(tkey, key)))


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
