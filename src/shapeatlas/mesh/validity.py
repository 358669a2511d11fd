"""Mesh validity of generated shapes: self-intersections and inverted faces.

Written here because none of our dependencies offers it without a heavy extra: trimesh has no
triangle-triangle intersection test, and libigl's (`remesh_self_intersections`) needs its CGAL
build, which the pip wheel does not ship.

Self-intersection test: candidate face pairs come from a cKDTree on face bounding spheres; a pair
intersects when an edge of one triangle crosses the other (Möller-Trumbore on the segment).
Pairs sharing a vertex are skipped (adjacent faces always touch), as are exactly coplanar
overlaps (measure zero for generated coordinates).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from shapeatlas.mesh import geometry as geo

#: Determinants below this (relative to the edge lengths) mean "segment parallel to the plane".
PARALLEL_EPS = 1e-12
#: Candidate pairs tested at once (bounds the temporary arrays).
PAIR_BLOCK = 200_000
#: Reference triangles with a quality (1 = equilateral) below this are not judged for inversion.
SLIVER_QUALITY = 0.1
#: Faces with a bounding radius above this many times the median are searched on their own.
BIG_FACE_FACTOR = 2.0


@dataclass(frozen=True)
class Validity:
    """Validity flags of one mesh. n_self_intersecting: faces involved in an intersection;
    n_inverted: faces whose normal opposes the reference's (-1 when no reference was given)."""

    watertight: bool
    n_self_intersecting: int
    n_inverted: int

    @property
    def valid(self) -> bool:
        return self.watertight and self.n_self_intersecting == 0 and self.n_inverted <= 0


def _segments_cross(p0: np.ndarray, p1: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Does segment p0->p1 cross triangle tri? p0, p1: (P, 3), tri: (P, 3, 3) -> (P,) bool."""
    d = p1 - p0
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    h = np.cross(d, e2)
    a = np.einsum("ij,ij->i", e1, h)
    scale = np.linalg.norm(d, axis=1) * np.linalg.norm(e1, axis=1) * np.linalg.norm(e2, axis=1)
    ok = np.abs(a) > PARALLEL_EPS * np.maximum(scale, PARALLEL_EPS)
    f = np.where(ok, 1.0 / np.where(ok, a, 1.0), 0.0)
    s = p0 - tri[:, 0]
    u = f * np.einsum("ij,ij->i", s, h)
    q = np.cross(s, e1)
    v = f * np.einsum("ij,ij->i", d, q)
    t = f * np.einsum("ij,ij->i", e2, q)
    return ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t >= 0) & (t <= 1)


def _candidate_pairs(centre: np.ndarray, radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Face pairs (i < j) whose bounding spheres might overlap.

    Faces far larger than typical (stretched by a bad sample) are queried one by one so that they
    do not inflate the search radius of every other face.
    """
    big = radius > BIG_FACE_FACTOR * np.median(radius)
    small = np.flatnonzero(~big)
    tree = cKDTree(centre)
    out = []
    if len(small) > 1:
        sub = cKDTree(centre[small]).query_pairs(r=2.0 * float(radius[small].max()),
                                                 output_type="ndarray")
        out.append(small[sub])
    r_any = float(radius.max())
    for b in np.flatnonzero(big):
        js = np.asarray(tree.query_ball_point(centre[b], radius[b] + r_any), dtype=np.int64)
        js = js[js != b]
        out.append(np.stack([np.minimum(js, b), np.maximum(js, b)], axis=1))
    if not out:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    pairs = np.concatenate(out).reshape(-1, 2).astype(np.int64)
    if len(out) > 1:  # big faces' pairs may repeat: deduplicate on a 1-D key
        n = len(centre)
        key = np.unique(pairs[:, 0] * n + pairs[:, 1])
        return key // n, key % n
    return pairs[:, 0], pairs[:, 1]


def self_intersecting_faces(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Indices of faces that cross a non-adjacent face. vertices (V, 3), faces (F, 3) -> (n,)."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    tri = v[f]
    centre = tri.mean(axis=1)
    radius = np.linalg.norm(tri - centre[:, None], axis=2).max(axis=1)
    i, j = _candidate_pairs(centre, radius)
    if len(i) == 0:
        return np.zeros(0, dtype=np.int64)
    near = np.linalg.norm(centre[i] - centre[j], axis=1) <= radius[i] + radius[j]
    i, j = i[near], j[near]
    shared = (f[i][:, :, None] == f[j][:, None, :]).any(axis=(1, 2))
    i, j = i[~shared], j[~shared]
    hit = np.zeros(len(f), dtype=bool)
    for start in range(0, len(i), PAIR_BLOCK):
        a, b = i[start:start + PAIR_BLOCK], j[start:start + PAIR_BLOCK]
        cross = np.zeros(len(a), dtype=bool)
        for x, y in ((a, b), (b, a)):
            for k in range(3):
                cross |= _segments_cross(tri[x, k], tri[x, (k + 1) % 3], tri[y])
        hit[a[cross]] = True
        hit[b[cross]] = True
    return np.flatnonzero(hit)


def triangle_quality(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """4 sqrt(3) area / (sum of squared edge lengths): 1 for equilateral, 0 for degenerate."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    tri = v[f]
    edges2 = sum(np.square(tri[:, i] - tri[:, (i + 1) % 3]).sum(axis=1) for i in range(3))
    return 4.0 * np.sqrt(3.0) * geo.face_areas(v, f) / np.maximum(edges2, np.finfo(float).tiny)


def inverted_faces(vertices: np.ndarray, faces: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Faces whose normal points against the same face of `reference` (V, 3), e.g. the atlas.

    Faces that are slivers in the reference (quality below `SLIVER_QUALITY`) are not judged:
    their orientation is numerically ill-defined, and on the LV atlases measured a handful of
    them decided the flag for every sample.
    """
    v, r = np.asarray(vertices, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    dots = np.einsum("ij,ij->i", geo.face_cross(v, f), geo.face_cross(r, f))
    judged = triangle_quality(reference, faces) >= SLIVER_QUALITY
    return np.flatnonzero((dots < 0) & judged)


def mesh_validity(vertices: np.ndarray, faces: np.ndarray, *,
                  reference: np.ndarray | None = None) -> Validity:
    """Watertightness (every edge shared by exactly two faces), self-intersections, and inverted
    faces against `reference` vertices with the same faces."""
    from shapeatlas.mesh.core import Mesh

    mesh = Mesh(vertices, faces, name="generated")
    inverted = -1 if reference is None else len(inverted_faces(vertices, faces, reference))
    return Validity(watertight=bool(mesh.is_watertight),
                    n_self_intersecting=len(self_intersecting_faces(vertices, faces)),
                    n_inverted=inverted)
