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

Point-to-surface distances (`closest_points_on_surface`, `point_to_surface_distance`,
`ClosestPoints`) live in `shapeatlas.mesh.closest` (libigl) and are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from shapeatlas.errors import OpenMeshError
from shapeatlas.mesh import geometry as geo
from shapeatlas.mesh.closest import (
    ClosestPoints,
    _as_mesh,
    _as_points,
    closest_points_on_surface,
    point_to_surface_distance,
)
from shapeatlas.mesh.core import Mesh

#: Cubic millimetres in one millilitre.
MM3_PER_ML = 1000.0
#: The percentile used by `hausdorff95` and `SurfaceDistances.hd95`.
HD_PERCENTILE = 95.0


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


# ------------------------------------------------------------------------------------ helpers
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
