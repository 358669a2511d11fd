"""Closest points on triangle surfaces: exact point-to-surface distances for query points.

`closest_points_on_surface` finds, for each query point, the nearest point of a triangle mesh on
its *triangles* (interiors and edges, not only its vertices), with that point's unsquared distance
and the index of the triangle it lies on; `point_to_surface_distance` returns the distances only.
Surface distances (`shapeatlas.metrics.surface`), correspondence errors and the point model's
projection back onto each shape are built on these two functions.

Build vs buy: the search is libigl's (``igl.point_mesh_squared_distance``: an axis-aligned
bounding-box tree over the triangles, then an exact point-triangle kernel per candidate), not a
hand-written one. libigl is already a hard dependency, is widely used and tested, handles
degenerate triangles (a collinear or repeated-vertex triangle counts as its segment or point), and
on the package's sizes (1.5k-5k query points against 0.6k-10k vertex meshes) it was 3-10x faster
than the ~200-line k-d-tree engine it replaced, with distances equal to within 1e-14 mm. When a
point is equally close to several triangles (a shared vertex or edge), which of them
``face_index`` reports is libigl's choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import igl
import numpy as np

from shapeatlas.mesh.core import Mesh


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


def closest_points_on_surface(points, vertices, faces=None) -> ClosestPoints:
    """Exact nearest points on a triangle surface (on the triangles, not only the vertices).

    points: (N, 3) (or a `Mesh`, whose vertices are used); vertices: (V, 3) and faces: (F, 3),
    a ``(vertices, faces)`` pair, or a `Mesh` as ``vertices`` with ``faces`` left out
    -> `ClosestPoints` with distances (N,), points (N, 3), face_index (N,).

    Exact up to round-off (libigl's AABB search, see the module docstring). Raises `ValueError`
    for malformed points and `MeshError` (a `ValueError`) naming "surface" for a malformed mesh.
    """
    pts = np.ascontiguousarray(_as_points(points, "points"), dtype=np.float64)
    mesh = _as_mesh(vertices, faces, "surface")
    # A Mesh holds C-contiguous float64 vertices and int64 faces: libigl's types, so no copies.
    sq_dist, face, closest = igl.point_mesh_squared_distance(pts, mesh.vertices, mesh.faces)
    return ClosestPoints(distances=np.sqrt(sq_dist), points=closest, face_index=face)


def point_to_surface_distance(points, vertices, faces=None) -> np.ndarray:
    """Distance from each point to the nearest point of a triangle surface (not just its vertices).

    points: (N, 3); vertices: (V, 3) and faces: (F, 3), or a `Mesh` as ``vertices`` -> (N,)
    Unsquared, in the input's units (mm). See `closest_points_on_surface` for the method.
    """
    return closest_points_on_surface(points, vertices, faces).distances


__all__ = ["ClosestPoints", "closest_points_on_surface", "point_to_surface_distance"]
