"""Tangential relaxation: even out vertices along a surface without changing its shape.

Generated shapes (a decoder's or PCA's output) inherit the small tangential jitter of the
training correspondences; random combinations of it fold thin triangles even where the surface is
smooth. Each step moves every vertex towards the mean of its neighbours with the component along
the vertex normal removed, so the vertices slide along the surface: on the LV samples measured it
removed most folds while the enclosed volume changed by about 0.01%. What relaxation leaves is
removed by the projection onto valid meshes (`shapeatlas.mesh.projection`).
Vectorised over a batch of shapes that share one set of faces.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from shapeatlas.mesh import geometry as geo

#: Fraction of the tangential Laplacian applied per step (0 < step <= 1).
RELAX_STEP = 0.5
#: Shapes relaxed together (bounds the temporaries).
RELAX_BLOCK = 64
#: Vertex normals shorter than this (degenerate neighbourhoods) leave the Laplacian untouched.
NORMAL_EPS = 1e-12


def umbrella_operator(faces: np.ndarray, n_vertices: int) -> sp.csr_matrix:
    """L = D^-1 A - I over the edge graph of `faces` (uniform weights). -> (K, K)"""
    a = geo.vertex_adjacency(np.asarray(faces, dtype=np.int64), n_vertices)
    deg = np.asarray(a.sum(axis=1)).ravel()
    return (sp.diags(1.0 / np.maximum(deg, 1.0)) @ a - sp.eye(n_vertices)).tocsr()


def relax_tangentially(vertices: np.ndarray, faces: np.ndarray, *, iterations: int,
                       step: float = RELAX_STEP) -> np.ndarray:
    """(S, K, 3) shapes sharing `faces` (F, 3) -> (S, K, 3) relaxed copies (input untouched)."""
    x = np.array(vertices, dtype=np.float64, copy=True)
    if iterations <= 0:
        return x
    if x.ndim == 2:
        return relax_tangentially(x[None], faces, iterations=iterations, step=step)[0]
    if len(x) > RELAX_BLOCK:  # blocks keep the (S, F, 3) temporaries in cache
        return np.concatenate([relax_tangentially(x[i:i + RELAX_BLOCK], faces,
                                                  iterations=iterations, step=step)
                               for i in range(0, len(x), RELAX_BLOCK)])
    s, k, _ = x.shape
    f = np.asarray(faces, dtype=np.int64)
    lap = umbrella_operator(f, k)
    # vertex normal = sum of incident (area-weighted) face normals, via a (K, F) incidence matrix
    inc = sp.coo_matrix((np.ones(3 * len(f)), (f.ravel(), np.repeat(np.arange(len(f)), 3))),
                        shape=(k, len(f))).tocsr()
    for _ in range(iterations):
        p0 = x[:, f[:, 0]]
        fn = np.cross(x[:, f[:, 1]] - p0, x[:, f[:, 2]] - p0)  # (S, F, 3)
        vn = (inc @ fn.transpose(1, 0, 2).reshape(len(f), -1)).reshape(k, s, 3).transpose(1, 0, 2)
        norm = np.linalg.norm(vn, axis=2, keepdims=True)
        vn = np.where(norm > NORMAL_EPS, vn / np.maximum(norm, NORMAL_EPS), 0.0)
        d = (lap @ x.transpose(1, 0, 2).reshape(k, -1)).reshape(k, s, 3).transpose(1, 0, 2)
        d -= np.sum(d * vn, axis=2, keepdims=True) * vn
        x += step * d
    return x
