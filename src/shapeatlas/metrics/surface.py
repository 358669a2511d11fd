"""Surface distances, enclosed volume and surface area of triangle meshes.

All functions are pure (arrays in, floats or arrays out) and vectorised. Distances are Euclidean
and *unsquared*, in the units of the input (millimetres for meshes in mm).

Conventions
-----------
- Directed distances: ``d_ab[i] = min_j |a_i - b_j|`` (point sets) or the distance from ``a_i`` to
  the nearest point of surface B, on its triangles, not only its vertices (meshes).
- Chamfer distance: the mean of the two directed *mean unsquared* distances,
  ``0.5 * (mean(d_ab) + mean(d_ba))``. Some papers sum instead of averaging, or square the
  distances; divide or take square roots accordingly before comparing numbers.
- Hausdorff distance: ``max(max(d_ab), max(d_ba))``.
- HD95: the larger of the two *directed* 95th percentiles, ``max(P95(d_ab), P95(d_ba))`` (the
  convention of MONAI; medpy instead pools both directions before taking one percentile).
  Percentiles interpolate linearly between order statistics, as `numpy.percentile` does by
  default; with weights, see `weighted_percentile`.
- Mesh-to-mesh distances (`mesh_surface_distances`) are area-weighted so that they do not depend
  on how finely or evenly either surface is triangulated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import chain

import numpy as np
from scipy.spatial import cKDTree

from shapeatlas.errors import OpenMeshError
from shapeatlas.mesh import geometry as geo
from shapeatlas.mesh.core import Mesh

log = logging.getLogger(__name__)

#: Cubic millimetres in one millilitre.
MM3_PER_ML = 1000.0
#: The percentile used by `hausdorff95` and `SurfaceDistances.hd95`.
HD_PERCENTILE = 95.0
#: A triangle whose doubled area is below this fraction of its longest edge squared is treated as
#: a segment (only its edges are searched), so its plane normal is never divided by ~0.
SLIVER_REL_EPS = 1e-12
#: Slack, as a fraction of the scene's bounding-box diagonal, added to candidate-search radii so
#: that round-off can never drop the truly nearest triangle.
CANDIDATE_SLACK_REL = 1e-9
#: Nearest sub-triangle centres tried first for each query point before the exactness check.
KNN_CANDIDATES = 16
#: Sub-triangle centres indexed per triangle, on average at most, when large faces are cut up.
SUBDIVISION_BUDGET = 4
#: At most this many (point, triangle) pairs are evaluated at once, which bounds memory.
MAX_PAIRS_PER_CHUNK = 500_000


@dataclass(frozen=True)
class SurfaceDistances:
    """Symmetric distances between two surfaces, in mesh units (mm for meshes in mm).

    chamfer: ``0.5 * (mean_ab + mean_ba)``.
    hausdorff: largest distance in either direction.
    hd95: ``max`` of the two directed 95th percentiles.
    mean_ab: area-weighted mean distance from surface A to surface B.
    mean_ba: area-weighted mean distance from surface B to surface A.
    """

    chamfer: float
    hausdorff: float
    hd95: float
    mean_ab: float
    mean_ba: float


@dataclass(frozen=True)
class ClosestPoints:
    """Nearest surface points of a set of query points.

    distances: (N,) unsquared distances.
    points: (N, 3) closest points on the surface.
    face_index: (N,) index of the triangle each closest point lies on.
    """

    distances: np.ndarray
    points: np.ndarray
    face_index: np.ndarray


# ------------------------------------------------------------------------------------ helpers
def _as_points(x, name: str) -> np.ndarray:
    """A validated (N, 3) float64 array from an array-like or a `Mesh` (its vertices)."""
    if isinstance(x, Mesh):
        return x.vertices
    p = np.asarray(x, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3), got {p.shape}")
    if p.shape[0] == 0:
        raise ValueError(f"{name} is empty; at least one point is needed")
    if not np.isfinite(p).all():
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    return p


def _as_mesh(vertices, faces, name: str) -> Mesh:
    """A `Mesh` from a `Mesh`, a ``(vertices, faces)`` pair, or separate arrays.

    Building a `Mesh` runs its checks (shapes, finiteness, face indices in range), which raise
    `MeshError` (a `ValueError`) naming ``name``.
    """
    if isinstance(vertices, Mesh):
        if faces is not None:
            raise ValueError(f"{name}: pass either a Mesh or (vertices, faces) arrays, not both")
        return vertices
    if faces is None and isinstance(vertices, tuple) and len(vertices) == 2:
        vertices, faces = vertices
    if faces is None:
        raise ValueError(f"{name}: faces (F, 3) are required when vertices is an array")
    return Mesh(vertices, faces, name=name)


def _as_weights(w, n: int, name: str) -> np.ndarray | None:
    if w is None:
        return None
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match its points, got {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"{name} must be finite, non-negative and not all zero")
    return w


def weighted_percentile(values: np.ndarray, q: float, *, weights: np.ndarray | None = None) -> float:
    """The q-th percentile (0..100) of values, optionally weighted.

    values: (N,), weights: (N,) non-negative or None -> float

    Sorted values ``x_i`` with weights ``w_i`` and cumulative weights ``S_i`` sit at positions
    ``(S_i - w_i) / (S_N - w_N)`` in [0, 1], and the percentile interpolates linearly between them.
    With equal weights this is exactly `numpy.percentile`'s default (linear) method; zero-weight
    values are ignored.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"values must be a non-empty 1-D array, got shape {values.shape}")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be a percentile between 0 and 100, got {q}")
    if weights is None:
        return float(np.percentile(values, q))
    weights = _as_weights(weights, values.size, "weights")
    keep = weights > 0
    v, w = values[keep], weights[keep]
    order = np.argsort(v, kind="stable")
    v, w = v[order], w[order]
    if v.size == 1:
        return float(v[0])
    cw = np.cumsum(w)
    pos = (cw - w) / (cw[-1] - w[-1])
    return float(np.interp(q / 100.0, pos, v))


def _summarise(d_ab, d_ba, *, w_a=None, w_b=None) -> SurfaceDistances:
    mean_ab = float(np.average(d_ab, weights=w_a))
    mean_ba = float(np.average(d_ba, weights=w_b))
    hd95 = max(
        weighted_percentile(d_ab, HD_PERCENTILE, weights=w_a),
        weighted_percentile(d_ba, HD_PERCENTILE, weights=w_b),
    )
    return SurfaceDistances(
        chamfer=0.5 * (mean_ab + mean_ba),
        hausdorff=float(max(d_ab.max(), d_ba.max())),
        hd95=hd95,
        mean_ab=mean_ab,
        mean_ba=mean_ba,
    )


# ------------------------------------------------------------------------- point-set distances
def surface_distances(a_points, b_points) -> tuple[np.ndarray, np.ndarray]:
    """Directed nearest-neighbour distances between two point sets (vertex to vertex).

    a_points: (N, 3), b_points: (M, 3) (arrays or `Mesh` objects, whose vertices are used)
    -> d_ab: (N,) distance from each a to its nearest b; d_ba: (M,) from each b to its nearest a.
    Units are those of the input (mm for meshes in mm).
    """
    a = _as_points(a_points, "a_points")
    b = _as_points(b_points, "b_points")
    d_ab, _ = cKDTree(b).query(a, k=1)
    d_ba, _ = cKDTree(a).query(b, k=1)
    return d_ab, d_ba


def point_set_distances(a_points, b_points) -> SurfaceDistances:
    """Chamfer, Hausdorff and HD95 of two point sets from one pair of nearest-neighbour queries.

    a_points: (N, 3), b_points: (M, 3) -> `SurfaceDistances` (unweighted, input units).
    """
    return _summarise(*surface_distances(a_points, b_points))


def chamfer_distance(a_points, b_points, *, a_weights=None, b_weights=None) -> float:
    """Chamfer distance ``0.5 * (mean_a d(a, B) + mean_b d(b, A))`` of two point sets.

    a_points: (N, 3), b_points: (M, 3), a_weights: (N,) or None, b_weights: (M,) or None -> float

    Distances are unsquared nearest-neighbour distances in the input's units (mm). Optional
    non-negative weights (such as vertex areas) turn each directed mean into a weighted mean.
    """
    d_ab, d_ba = surface_distances(a_points, b_points)
    w_a = _as_weights(a_weights, d_ab.size, "a_weights")
    w_b = _as_weights(b_weights, d_ba.size, "b_weights")
    return 0.5 * (float(np.average(d_ab, weights=w_a)) + float(np.average(d_ba, weights=w_b)))


def hausdorff_distance(a_points, b_points) -> float:
    """Symmetric Hausdorff distance ``max(max_a d(a, B), max_b d(b, A))`` of two point sets.

    a_points: (N, 3), b_points: (M, 3) -> float, in the input's units (mm).
    """
    d_ab, d_ba = surface_distances(a_points, b_points)
    return float(max(d_ab.max(), d_ba.max()))


def hausdorff95(a_points, b_points, *, a_weights=None, b_weights=None) -> float:
    """95th-percentile Hausdorff distance: ``max(P95(d_ab), P95(d_ba))``.

    a_points: (N, 3), b_points: (M, 3), a_weights: (N,) or None, b_weights: (M,) or None -> float

    The larger of the two directed 95th percentiles (linear interpolation, as `numpy.percentile`;
    weighted as in `weighted_percentile` when weights are given). Never exceeds the Hausdorff
    distance.
    """
    d_ab, d_ba = surface_distances(a_points, b_points)
    w_a = _as_weights(a_weights, d_ab.size, "a_weights")
    w_b = _as_weights(b_weights, d_ba.size, "b_weights")
    return max(
        weighted_percentile(d_ab, HD_PERCENTILE, weights=w_a),
        weighted_percentile(d_ba, HD_PERCENTILE, weights=w_b),
    )


# ---------------------------------------------------------------------- point-to-surface distance
def _dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise dot products of component-first arrays. (3, P), (3, P) -> (P,)"""
    return x[0] * y[0] + x[1] * y[1] + x[2] * y[2]


def _cross(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cross products of component-first arrays. (3, P), (3, P) -> (3, P)"""
    return np.stack(
        [x[1] * y[2] - x[2] * y[1], x[2] * y[0] - x[0] * y[2], x[0] * y[1] - x[1] * y[0]]
    )


def _triangle_table(tri: np.ndarray) -> dict[str, np.ndarray]:
    """Per-triangle quantities the point-triangle kernel reuses. tri: (F, 3, 3) -> arrays (.., F)

    Component-first ``(3, F)`` layout so that gathered rows are contiguous. ``start[k]`` and
    ``edge[k]`` describe edge k (a->b, b->c, c->a); ``inward[k]`` is perpendicular to it, in the
    plane, pointing into the triangle; ``unit_normal`` is zero for slivers, which are then
    searched by their edges only.
    """
    a, b, c = (np.ascontiguousarray(tri[:, i].T) for i in range(3))
    edge = np.stack([b - a, c - b, a - c])  # (3 edges, 3, F)
    len2 = np.stack([_dot(e, e) for e in edge])  # (3, F)
    n = _cross(edge[0], -edge[2])
    nn = _dot(n, n)
    flat = nn > (SLIVER_REL_EPS * len2.max(axis=0)) ** 2
    unit_normal = np.where(flat, n / np.sqrt(np.where(flat, nn, 1.0)), 0.0)
    return {
        "start": np.stack([a, b, c]),
        "edge": edge,
        "inv_len2": np.where(len2 > 0.0, 1.0 / np.where(len2 > 0.0, len2, 1.0), 0.0),
        "inward": np.stack([_cross(n, e) for e in edge]),
        "unit_normal": unit_normal,
        "flat": flat,
    }


def _closest_on_triangles(p: np.ndarray, table: dict, face: np.ndarray):
    """Exact closest points on triangles ``face`` to points p.

    p: (3, P), face: (P,) -> closest points (3, P), squared distances (P,)

    If p projects inside its triangle the answer is that projection; otherwise it lies on the
    boundary, so it is the nearest of the three edge points.
    """
    inside = table["flat"][face]
    best_q, best_d2 = None, None
    for k in range(3):
        s, e = table["start"][k][:, face], table["edge"][k][:, face]
        w = p - s
        u = np.clip(_dot(w, e) * table["inv_len2"][k][face], 0.0, 1.0)
        q = s + u * e
        d = p - q
        d2 = _dot(d, d)
        if best_q is None:
            best_q, best_d2 = q, d2
        else:
            better = d2 < best_d2
            best_q = np.where(better, q, best_q)
            best_d2 = np.where(better, d2, best_d2)
        inside &= _dot(w, table["inward"][k][:, face]) >= 0.0
        if k == 0:
            w0 = w
    if inside.any():
        nrm = table["unit_normal"][:, face[inside]]
        h = _dot(w0[:, inside], nrm)
        best_q[:, inside] = p[:, inside] - h * nrm
        best_d2[inside] = h * h
    return best_q, best_d2


def _subdivision_centres(tri: np.ndarray, reach: np.ndarray):
    """Centres of congruent sub-triangles that cut large triangles into small pieces.

    tri: (F, 3, 3), reach: (F,) largest centre-to-corner distance of each triangle
    -> centres (S, 3), parent triangle of each (S,), reach of each sub-triangle (S,)

    Triangle t is cut into ``n_t**2`` similar sub-triangles with ``n_t = ceil(reach_t / delta)``,
    each of reach ``reach_t / n_t <= delta``, so every point of t lies within that distance of a
    centre. ``delta`` is the smallest of a few reach quantiles that keeps the count at most
    ``SUBDIVISION_BUDGET * F``: one centre for most triangles, more only for the large ones.
    """
    n_faces = tri.shape[0]
    for q in (0.5, 0.75, 0.9, 1.0):
        delta = max(float(np.quantile(reach, q)), np.finfo(float).tiny)
        with np.errstate(over="ignore"):  # a huge (even inf) count just fails the budget test
            n_sub = np.maximum(np.ceil(reach / delta), 1.0)
        if (n_sub**2).sum() <= SUBDIVISION_BUDGET * n_faces:
            break  # always reached by q = 1.0, where every n_sub is 1
    n_sub = n_sub.astype(np.int64)
    centres, parents, sub_reach = [], [], []
    for n in np.unique(n_sub):
        idx = np.flatnonzero(n_sub == n)
        i, j = (g.ravel() for g in np.meshgrid(np.arange(n), np.arange(n), indexing="ij"))
        up, down = i + j <= n - 1, i + j <= n - 2
        # Barycentric (u, v) of the centres of the n^2 sub-triangles: "up" ones, then "down" ones.
        u = np.concatenate([i[up] + 1 / 3, i[down] + 2 / 3]) / n
        v = np.concatenate([j[up] + 1 / 3, j[down] + 2 / 3]) / n
        a, b, c = tri[idx, 0], tri[idx, 1], tri[idx, 2]
        pts = a[:, None] + u[None, :, None] * (b - a)[:, None] + v[None, :, None] * (c - a)[:, None]
        centres.append(pts.reshape(-1, 3))
        parents.append(np.repeat(idx, u.size))
        sub_reach.append(np.repeat(reach[idx] / n, u.size))
    return np.concatenate(centres), np.concatenate(parents), np.concatenate(sub_reach)


def closest_points_on_surface(points, vertices, faces=None) -> ClosestPoints:
    """Exact nearest points on a triangle surface (on the triangles, not only the vertices).

    points: (N, 3); vertices: (V, 3) and faces: (F, 3), or a `Mesh` as ``vertices`` with
    ``faces`` left out -> `ClosestPoints` with distances (N,), points (N, 3), face_index (N,).

    Candidates come from a k-d tree over the centres of sub-triangles, large triangles being cut
    into pieces of reach (centre-to-corner distance) at most ``delta`` so that one big face does
    not widen every search. The ``KNN_CANDIDATES`` nearest centres give exact distances and an
    upper bound ``u`` per point. Every untried triangle is at least ``d_k - delta`` away (``d_k``
    the k-th centre's distance), so only points with ``d_k - delta < u`` search further: all
    centres within ``u + delta``, which include one of every triangle closer than ``u``, pruned
    by each sub-triangle's own reach. The result is exact up to round-off. Points deep inside a
    closed surface, nearly equidistant to much of it, cost the most.
    """
    pts = _as_points(points, "points")
    mesh = _as_mesh(vertices, faces, "surface")
    tri = mesh.vertices[mesh.faces]  # (F, 3, 3)
    reach = np.sqrt(((tri - tri.mean(axis=1, keepdims=True)) ** 2).sum(axis=2).max(axis=1))
    centres, parents, sub_reach = _subdivision_centres(tri, reach)
    delta = float(sub_reach.max())
    table = _triangle_table(tri)
    p_all = np.ascontiguousarray(pts.T)
    scene = np.concatenate([mesh.bounds, pts.min(axis=0)[None], pts.max(axis=0)[None]])
    slack = CANDIDATE_SLACK_REL * float(np.linalg.norm(scene.max(axis=0) - scene.min(axis=0)))

    n, n_centres, n_faces = pts.shape[0], centres.shape[0], mesh.n_faces
    best_d2 = np.full(n, np.inf)
    best_q = np.zeros((3, n))
    best_f = np.zeros(n, dtype=np.int64)

    def evaluate(pair_p: np.ndarray, pair_f: np.ndarray) -> None:
        # Several centres of one big triangle often hit the same point: try each pair once.
        key = np.unique(pair_p * n_faces + pair_f)
        pair_p, pair_f = key // n_faces, key % n_faces
        for lo in range(0, pair_p.size, MAX_PAIRS_PER_CHUNK):
            pp = pair_p[lo : lo + MAX_PAIRS_PER_CHUNK]
            ff = pair_f[lo : lo + MAX_PAIRS_PER_CHUNK]
            q, d2 = _closest_on_triangles(p_all[:, pp], table, ff)
            order = np.lexsort((d2, pp))  # by point, then distance: first of each run is its min
            pp_sorted = pp[order]
            first = order[np.r_[True, pp_sorted[1:] != pp_sorted[:-1]]]
            sel = first[d2[first] < best_d2[pp[first]]]
            who = pp[sel]
            best_d2[who], best_q[:, who], best_f[who] = d2[sel], q[:, sel], ff[sel]

    tree = cKDTree(centres)
    k = min(KNN_CANDIDATES, n_centres)
    dist, idx = tree.query(pts, k=k)
    dist, idx = dist.reshape(n, k), idx.reshape(n, k)
    evaluate(np.repeat(np.arange(n), k), parents[idx.ravel()])
    if k == n_centres:
        return _closest_result(best_d2, best_q, best_f)

    # Centres not yet tried are at least dist[:, -1] away, so their triangles at least
    # dist[:, -1] - delta: only points where that could beat the best so far search further,
    # within upper + delta, which reaches a centre of every triangle closer than upper.
    upper = np.sqrt(best_d2)
    todo = np.flatnonzero(dist[:, -1] - delta - slack < upper)
    log.debug("closest_points_on_surface: %d of %d points need a radius search", todo.size, n)
    if todo.size == 0:
        return _closest_result(best_d2, best_q, best_f)
    radius = upper[todo] + delta + slack
    counts = tree.query_ball_point(pts[todo], radius, return_length=True)
    # Chunks of points whose hits together stay within MAX_PAIRS_PER_CHUNK bound memory.
    chunk_id = np.cumsum(counts) // MAX_PAIRS_PER_CHUNK
    for c in np.unique(chunk_id):
        sel = chunk_id == c
        ids = todo[sel]
        hits = tree.query_ball_point(pts[ids], radius[sel], return_sorted=False)
        n_hits = np.fromiter(map(len, hits), dtype=np.int64, count=len(hits))
        cand = np.fromiter(chain.from_iterable(hits), dtype=np.int64, count=int(n_hits.sum()))
        rows = np.repeat(ids, n_hits)
        # A triangle can beat the best so far only if one of its sub-triangles can.
        gap = pts[rows] - centres[cand]
        keep = np.sqrt(np.einsum("ij,ij->i", gap, gap)) - sub_reach[cand] - slack < upper[rows]
        evaluate(rows[keep], parents[cand[keep]])
    return _closest_result(best_d2, best_q, best_f)


def _closest_result(best_d2, best_q, best_f) -> ClosestPoints:
    return ClosestPoints(distances=np.sqrt(best_d2), points=best_q.T.copy(), face_index=best_f)


def point_to_surface_distance(points, vertices, faces=None) -> np.ndarray:
    """Distance from each point to the nearest point of a triangle surface (not just its vertices).

    points: (N, 3); vertices: (V, 3) and faces: (F, 3), or a `Mesh` as ``vertices`` -> (N,)
    Unsquared, in the input's units (mm). See `closest_points_on_surface` for the method.
    """
    return closest_points_on_surface(points, vertices, faces).distances


# ------------------------------------------------------------------------ mesh-to-mesh distances
def _vertex_areas(mesh: Mesh) -> np.ndarray:
    """Barycentric vertex areas: a third of each incident triangle's area. -> (V,)"""
    return np.bincount(
        mesh.faces.ravel(), weights=np.repeat(mesh.face_areas / 3.0, 3), minlength=mesh.n_vertices
    )


def _sample_surface(mesh: Mesh, n: int, rng: np.random.Generator) -> np.ndarray:
    """n points uniformly distributed over the surface area. -> (n, 3)"""
    cdf = np.cumsum(mesh.face_areas)
    face = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), mesh.n_faces - 1)
    r1, r2 = rng.random((2, n))
    s = np.sqrt(r1)  # the square root makes the barycentric samples uniform in area
    tri = mesh.vertices[mesh.faces[face]]
    return (
        (1.0 - s)[:, None] * tri[:, 0]
        + (s * (1.0 - r2))[:, None] * tri[:, 1]
        + (s * r2)[:, None] * tri[:, 2]
    )


def mesh_surface_distances(
    mesh_a, mesh_b, *, n_samples: int | None = None, random_state=None
) -> SurfaceDistances:
    """Area-weighted symmetric point-to-surface distances between two triangle meshes.

    mesh_a, mesh_b: `Mesh` objects or ``(vertices (V, 3), faces (F, 3))`` pairs
    -> `SurfaceDistances` (chamfer, hausdorff, hd95, mean_ab, mean_ba) in mesh units (mm).

    Each direction measures the exact distance from points on one surface to the *triangles* of
    the other. Which points, and how they are weighted, so that neither mesh's triangulation
    biases the result:

    - ``n_samples=None`` (default, deterministic): every vertex used by a face, weighted by its
      barycentric area (a third of the area of each incident triangle). Means and HD95 are
      area-weighted; the Hausdorff distance is the maximum over vertices.
    - ``n_samples=k``: k points sampled uniformly over each surface's area (seeded by
      ``random_state``, an int or `numpy.random.Generator`), equally weighted.

    Either way the Hausdorff distance is a maximum over finitely many points, so it can slightly
    underestimate the supremum over the continuous surface.
    """
    a = _as_mesh(mesh_a, None, "mesh_a")
    b = _as_mesh(mesh_b, None, "mesh_b")
    for m in (a, b):
        m.check_area()
    if n_samples is None:
        wa, wb = _vertex_areas(a), _vertex_areas(b)
        used_a, used_b = np.unique(a.faces), np.unique(b.faces)
        pa, wa = a.vertices[used_a], wa[used_a]
        pb, wb = b.vertices[used_b], wb[used_b]
    else:
        if int(n_samples) < 1:
            raise ValueError(f"n_samples must be a positive integer or None, got {n_samples}")
        rng = np.random.default_rng(random_state)
        pa, pb = _sample_surface(a, int(n_samples), rng), _sample_surface(b, int(n_samples), rng)
        wa = wb = None
    d_ab = point_to_surface_distance(pa, b)
    d_ba = point_to_surface_distance(pb, a)
    return _summarise(d_ab, d_ba, w_a=wa, w_b=wb)


# ----------------------------------------------------------------------------- volume and area
def enclosed_volume_ml(vertices, faces=None) -> float:
    """Volume enclosed by a closed surface, in millilitres for vertices in mm (1 mL = 1000 mm^3).

    vertices: (V, 3) with faces: (F, 3), or a `Mesh` as ``vertices`` -> float (>= 0)

    The absolute value of the divergence-theorem volume, so an inward-oriented surface gives the
    same answer. Raises `OpenMeshError` when the surface is not watertight (closed, edge-manifold
    and consistently oriented), because the volume is then undefined.
    """
    mesh = _as_mesh(vertices, faces, "mesh")
    if not geo.is_watertight(mesh.faces):
        raise OpenMeshError(
            mesh.name,
            "the enclosed volume is undefined because the surface is not watertight "
            "(close its holes and make its orientation consistent first)",
        )
    return abs(geo.signed_volume(mesh.vertices, mesh.faces)) / MM3_PER_ML


def surface_area(vertices, faces=None) -> float:
    """Total triangle area, in mm^2 for vertices in mm.

    vertices: (V, 3) with faces: (F, 3), or a `Mesh` as ``vertices`` -> float
    """
    mesh = _as_mesh(vertices, faces, "mesh")
    return float(geo.face_areas(mesh.vertices, mesh.faces).sum())


__all__ = [
    "HD_PERCENTILE",
    "MM3_PER_ML",
    "ClosestPoints",
    "SurfaceDistances",
    "chamfer_distance",
    "closest_points_on_surface",
    "enclosed_volume_ml",
    "hausdorff95",
    "hausdorff_distance",
    "mesh_surface_distances",
    "point_to_surface_distance",
    "surface_area",
    "surface_distances",
    "weighted_percentile",
]
