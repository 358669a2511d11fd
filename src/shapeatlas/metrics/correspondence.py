"""Correspondence error against ground truth given on a shared spherical domain.

Convention: every shape B comes with the domain coordinate (a unit vector on the shared domain
sphere) of each of its vertices, `domain_b` (Vb, 3), so B's faces also triangulate the domain
sphere. The true correspondent on B of a domain coordinate `u` is found by locating `u` in that
spherical triangulation, by central projection: the face whose cone from the sphere's centre
holds `u`, with barycentric coordinates `w` such that `u` is parallel to `sum_i w_i domain_b[f_i]`.
The same `w` applied to B's vertex positions gives the true point, so the truth is B's piecewise
linear surface, the surface a method predicting points on B can actually reach. A query equal to
one of B's domain vertices returns that vertex's position exactly.

Units: distances are in the units of `b_vertices` (mm for shapeatlas cohorts); predicted points
must be in the same frame as `b_vertices` (file frame for meshes read from disk).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from shapeatlas.mesh.closest import closest_points_on_surface

#: A query within this chord distance of a domain vertex is that vertex (exact interpolation).
VERTEX_SNAP_EPS = 1e-12
#: Barycentric coordinates down to minus this still count as inside a face (rounding at edges).
INSIDE_EPS = 1e-9
#: A query whose best face has a barycentric coordinate below minus this is not covered at all.
COVER_FAIL_EPS = 1e-6
#: Faces whose domain triangle has |det| below this are skipped when locating.
DEGENERATE_DET_EPS = 1e-18
#: Nearest faces (by centroid) tried before searching every face.
N_CANDIDATE_FACES = 16
#: Queries per block when every face is searched.
BRUTE_FORCE_BLOCK = 64


@dataclass(frozen=True, kw_only=True)
class DomainLocation:
    """Where domain points fall in a spherical triangulation.

    face: (K,) index of the face holding each point.
    barycentric: (K, 3) non-negative weights of that face's corners, summing to 1.
    """

    face: np.ndarray
    barycentric: np.ndarray


def _points(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"{what} must have shape (K, 3), got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return a


def _faces(faces: np.ndarray, n_vertices: int) -> np.ndarray:
    f = np.asarray(faces)
    if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise ValueError(f"faces must have shape (F, 3) with F > 0, got {f.shape}")
    if not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"faces must hold integer vertex indices, got dtype {f.dtype}")
    if f.min() < 0 or f.max() >= n_vertices:
        raise ValueError(f"faces index vertices {f.min()}..{f.max()}, but there are {n_vertices}")
    return f.astype(np.int64)


def _cone_weights(cof: np.ndarray, det: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Normalised cone coordinates of queries in faces; -inf rows for the opposite cone.

    cof: (..., 3, 3) rows u1 x u2, u2 x u0, u0 x u1; det: (...,); q: (..., 3) -> (..., 3)
    """
    w = np.einsum("...ij,...j->...i", cof, q) / det[..., None]
    total = w.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        wn = w / total
    return np.where(total > 0, wn, -np.inf)


def locate_on_domain(domain_query: np.ndarray, *, domain_vertices: np.ndarray,
                     faces: np.ndarray) -> DomainLocation:
    """Locate unit vectors in a triangulation of the unit sphere by central projection.

    domain_query: (K, 3) directions (normalised here). domain_vertices: (V, 3) unit vectors.
    faces: (F, 3) triangles covering the sphere (either orientation).
    Raises ValueError when a query is not covered (the faces do not triangulate the sphere).
    """
    q = _points(domain_query, "domain_query")
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    if (norm == 0).any():
        raise ValueError("domain_query contains zero vectors; domain coordinates are unit vectors")
    q = q / norm
    u = _points(domain_vertices, "domain_vertices")
    f = _faces(faces, len(u))
    u0, u1, u2 = u[f[:, 0]], u[f[:, 1]], u[f[:, 2]]
    cof = np.stack([np.cross(u1, u2), np.cross(u2, u0), np.cross(u0, u1)], axis=1)
    det = np.einsum("ij,ij->i", u0, cof[:, 0])
    usable = np.abs(det) > DEGENERATE_DET_EPS
    safe_det = np.where(usable, det, 1.0)

    k = min(N_CANDIDATE_FACES, len(f))
    centroids = u0 + u1 + u2
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), DEGENERATE_DET_EPS)
    _, cand = cKDTree(centroids).query(q, k=k)
    cand = np.asarray(cand).reshape(len(q), k)
    w = _cone_weights(cof[cand], safe_det[cand], q[:, None, :])
    score = np.where(usable[cand], w.min(axis=2), -np.inf)
    best = score.argmax(axis=1)
    rows = np.arange(len(q))
    face, bary, best_score = cand[rows, best], w[rows, best], score[rows, best]

    missed = np.flatnonzero(best_score < -INSIDE_EPS)
    for start in range(0, missed.size, BRUTE_FORCE_BLOCK):
        idx = missed[start:start + BRUTE_FORCE_BLOCK]
        wa = _cone_weights(cof[None], safe_det[None], q[idx, None, :])
        sa = np.where(usable[None], wa.min(axis=2), -np.inf)
        ba = sa.argmax(axis=1)
        r = np.arange(idx.size)
        face[idx], bary[idx], best_score[idx] = ba, wa[r, ba], sa[r, ba]
    if (best_score < -COVER_FAIL_EPS).any():
        bad = int(np.flatnonzero(best_score < -COVER_FAIL_EPS)[0])
        raise ValueError(
            f"domain_query[{bad}] lies in no face: the faces do not triangulate the domain "
            "sphere (pass the shape's own domain coordinates and faces)"
        )
    bary = np.clip(bary, 0.0, None)
    bary /= bary.sum(axis=1, keepdims=True)

    # Queries that are domain vertices get exact one-hot weights, so they return the vertex.
    dist, vert = cKDTree(u).query(q)
    corner_face = np.full(len(u), -1, dtype=np.int64)
    corner = np.zeros(len(u), dtype=np.int64)
    for c in range(3):
        corner_face[f[:, c]] = np.arange(len(f))
        corner[f[:, c]] = c
    snap = np.flatnonzero((dist <= VERTEX_SNAP_EPS) & (corner_face[vert] >= 0))
    face[snap] = corner_face[vert[snap]]
    bary[snap] = 0.0
    bary[snap, corner[vert[snap]]] = 1.0
    return DomainLocation(face=face, barycentric=bary)


def true_correspondence(domain_query: np.ndarray, *, domain_b: np.ndarray,
                        b_vertices: np.ndarray, b_faces: np.ndarray) -> np.ndarray:
    """True points on shape B for given domain coordinates.

    domain_query: (K, 3) unit domain coordinates (e.g. the domain coordinates of shape A's
    vertices). domain_b: (Vb, 3) domain coordinates of B's vertices. b_vertices: (Vb, 3) B's
    vertex positions (any frame). b_faces: (Fb, 3) B's triangles.
    Returns (K, 3) points on B's surface, in the frame of `b_vertices`.
    """
    xb = _points(b_vertices, "b_vertices")
    ub = _points(domain_b, "domain_b")
    if len(ub) != len(xb):
        raise ValueError(f"domain_b has {len(ub)} rows but b_vertices has {len(xb)}; "
                         "give one domain coordinate per vertex of B")
    loc = locate_on_domain(domain_query, domain_vertices=ub, faces=b_faces)
    corners = xb[np.asarray(b_faces, dtype=np.int64)[loc.face]]
    return np.einsum("ki,kij->kj", loc.barycentric, corners)


def correspondence_error(pred_points_on_b: np.ndarray, *, domain_query: np.ndarray,
                         domain_b: np.ndarray, b_vertices: np.ndarray,
                         b_faces: np.ndarray) -> np.ndarray:
    """Distance from each predicted correspondent on B to the true one.

    pred_points_on_b: (K, 3) predicted points, in the frame of `b_vertices`.
    domain_query: (K, 3) domain coordinates of the source points (e.g. shape A's vertices'
    `domain`) whose correspondents were predicted.
    domain_b: (Vb, 3), b_vertices: (Vb, 3), b_faces: (Fb, 3): shape B and its ground truth.
    Returns (K,) Euclidean distances in the units of `b_vertices` (mm). The identity map of a
    shape onto itself (pred = its vertices, query = its domain) gives exactly zero.
    For a per-shape summary that does not depend on A's sampling, weight by A's vertex areas.
    """
    pred = _points(pred_points_on_b, "pred_points_on_b")
    q = np.asarray(domain_query)
    if q.shape != pred.shape:
        raise ValueError(f"pred_points_on_b {pred.shape} and domain_query {q.shape} must have "
                         "the same shape (one domain coordinate per predicted point)")
    truth = true_correspondence(q, domain_b=domain_b, b_vertices=b_vertices, b_faces=b_faces)
    return np.linalg.norm(pred - truth, axis=1)


def barycentric_in_triangles(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Barycentric coordinates of points lying on (or projected onto) their triangles.

    points: (K, 3), triangles: (K, 3, 3) -> (K, 3), clipped to be non-negative and sum to 1.
    """
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    v0, v1, v2 = b - a, c - a, points - a
    d00 = np.einsum("ij,ij->i", v0, v0)
    d01 = np.einsum("ij,ij->i", v0, v1)
    d11 = np.einsum("ij,ij->i", v1, v1)
    d20 = np.einsum("ij,ij->i", v2, v0)
    d21 = np.einsum("ij,ij->i", v2, v1)
    den = d00 * d11 - d01 * d01
    den = np.where(np.abs(den) > DEGENERATE_DET_EPS, den, 1.0)
    v = (d11 * d20 - d01 * d21) / den
    w = (d00 * d21 - d01 * d20) / den
    bary = np.clip(np.stack([1.0 - v - w, v, w], axis=1), 0.0, None)
    return bary / np.maximum(bary.sum(axis=1, keepdims=True), DEGENERATE_DET_EPS)


def domain_of_surface_points(points: np.ndarray, *, vertices: np.ndarray, faces: np.ndarray,
                             domain: np.ndarray) -> np.ndarray:
    """Ground-truth domain coordinates of arbitrary points on (or near) a shape's surface.

    Each point is projected to the closest point of the triangles, whose corners' domain
    coordinates are interpolated barycentrically and renormalised to the unit sphere.
    points: (K, 3), vertices: (V, 3) (same frame), faces: (F, 3), domain: (V, 3) -> (K, 3)
    """

    x = _points(vertices, "vertices")
    f = np.asarray(faces, dtype=np.int64)
    cp = closest_points_on_surface(_points(points, "points"), x, f)
    tri = f[cp.face_index]
    bary = barycentric_in_triangles(cp.points, x[tri])
    u = np.einsum("ki,kij->kj", bary, np.asarray(domain, dtype=np.float64)[tri])
    return u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), DEGENERATE_DET_EPS)


def paired_atlas_error(points_a: np.ndarray, points_b: np.ndarray, *, a_vertices: np.ndarray,
                       a_faces: np.ndarray, a_domain: np.ndarray, b_vertices: np.ndarray,
                       b_faces: np.ndarray, b_domain: np.ndarray) -> np.ndarray:
    """Ground-truth error of atlas-based correspondences between two shapes.

    Atlas vertex k was mapped to points_a[k] on A and points_b[k] on B, so the method claims that
    these correspond. The truth says which point of B corresponds to points_a[k]: its domain
    coordinate on A, located on B. -> (K,) distances |points_b[k] - truth_k| (units of b_vertices).
    points_a: (K, 3) in A's vertex frame; points_b: (K, 3) in B's.
    """
    u = domain_of_surface_points(points_a, vertices=a_vertices, faces=a_faces, domain=a_domain)
    truth = true_correspondence(u, domain_b=b_domain, b_vertices=b_vertices, b_faces=b_faces)
    return np.linalg.norm(_points(points_b, "points_b") - truth, axis=1)


def nearest_point_baseline_error(*, a_aligned: np.ndarray, b_aligned: np.ndarray,
                                 b_faces: np.ndarray, b_vertices: np.ndarray,
                                 a_domain: np.ndarray, b_domain: np.ndarray,
                                 b_to_file: np.ndarray) -> np.ndarray:
    """Error of the classic baseline "rigid alignment, then nearest point on the other shape".

    a_aligned, b_aligned: (Va, 3), (Vb, 3) the two shapes' vertices after rigid alignment;
    b_to_file: (4, 4) from the aligned frame back to B's vertex frame (`b_vertices`).
    -> (Va,) distances from each of A's vertices' nearest point on B to its true correspondent.
    """

    near = closest_points_on_surface(_points(a_aligned, "a_aligned"),
                                     _points(b_aligned, "b_aligned"), b_faces).points
    pred = near @ b_to_file[:3, :3].T + b_to_file[:3, 3]
    truth = true_correspondence(a_domain, domain_b=b_domain, b_vertices=b_vertices, b_faces=b_faces)
    return np.linalg.norm(pred - truth, axis=1)
