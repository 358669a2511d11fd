"""Mesh validity: is this surface a closed, 2-manifold, outward-oriented, non-self-intersecting
triangle mesh without degenerate faces, i.e. one a volume mesher (TetGen) would accept?

`mesh_validity` is the one check every verb that writes a mesh records; it returns a frozen
`Validity` with a `valid` flag and short human-readable `problems`.

Written here because none of our dependencies offers it without a heavy extra: trimesh has no
triangle-triangle intersection test, and libigl's (`remesh_self_intersections`) needs its CGAL
build, which the pip wheel does not ship. The tests check it against TetGen as an oracle.

Self-intersection test: candidate face pairs come from a cKDTree on face bounding spheres, then
each pair is judged by how many vertices it shares:

- none: an edge of one triangle crosses the other (Möller-Trumbore on the segment, touching
  included), or the two are coplanar and overlap (2-D edge/containment tests);
- one (a fan around a vertex): the edge opposite the shared vertex of one crosses the other, or,
  when coplanar, their angular sectors at the shared vertex overlap;
- two (an edge): they overlap only when folded flat onto each other: on the same side of the
  edge and within `FOLD_ANGLE_DEG` of each other (TetGen refused a groomed liver with two
  folds of 0.8° and 1.1°, which exact arithmetic calls apart, and accepted it once they were
  smoothed open);
- three: duplicate faces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph
from scipy.spatial import cKDTree

from shapeatlas.mesh import geometry as geo

#: Determinants below this (relative to the edge lengths) mean "segment parallel to the plane".
PARALLEL_EPS = 1e-12
#: Relative distance to a plane (and sine of an angle) below which points count as coplanar;
#: as strict as PARALLEL_EPS, so every pair Möller-Trumbore cannot judge is judged in the plane.
COPLANAR_EPS = 1e-12
#: Candidate pairs tested at once (bounds the temporary arrays).
PAIR_BLOCK = 200_000
#: Two faces sharing an edge and folded onto each other within this angle count as overlapping.
FOLD_ANGLE_DEG = 2.0
#: Reference triangles with a quality (1 = equilateral) below this are not judged for inversion.
SLIVER_QUALITY = 0.1
#: Faces with a bounding radius above this many times the median are searched on their own.
BIG_FACE_FACTOR = 2.0
#: Triangles with a quality (1 = equilateral) below this are degenerate: zero area, coincident
#: or collinear corners. 1e-6 is a height of a millionth of the longest edge.
DEGENERATE_QUALITY = 1e-6


@dataclass(frozen=True)
class Validity:
    """Validity of one triangle mesh, as a volume mesher sees it.

    watertight: every edge shared by exactly two faces traversing it in opposite directions.
    n_self_intersecting: faces involved in an intersection (touching and coplanar overlaps too).
    n_inverted: faces whose normal opposes the reference's (-1 when no reference was given).
    n_boundary_edges / n_nonmanifold_edges: edges in one face / in more than two faces (fins).
    n_nonmanifold_vertices: vertices whose faces form more than one fan (bow-ties), not counting
        vertices on non-manifold edges.
    n_misoriented_edges: edges whose two faces traverse it in the same direction.
    n_degenerate: faces with a repeated vertex index, zero area or collinear corners.
    signed_volume: enclosed volume (mesh units cubed), positive when the faces point outwards;
        None when the surface is not closed and consistently oriented.
    """

    watertight: bool
    n_self_intersecting: int
    n_inverted: int = -1
    n_faces: int = 0
    n_boundary_edges: int = 0
    n_nonmanifold_edges: int = 0
    n_nonmanifold_vertices: int = 0
    n_misoriented_edges: int = 0
    n_degenerate: int = 0
    signed_volume: float | None = None

    @property
    def problems(self) -> list[str]:
        """Each failed condition as a short phrase; empty for a valid mesh."""
        out = []
        if self.n_boundary_edges:
            out.append(f"open surface: {self.n_boundary_edges} boundary edges")
        if self.n_nonmanifold_edges:
            out.append(f"{self.n_nonmanifold_edges} non-manifold edges (in more than two faces)")
        if self.n_nonmanifold_vertices:
            out.append(f"{self.n_nonmanifold_vertices} non-manifold vertices (bow-ties)")
        if self.n_misoriented_edges:
            out.append(f"inconsistent face orientation across {self.n_misoriented_edges} edges")
        if self.n_degenerate:
            what = (f"all {self.n_faces} faces are" if self.n_degenerate == self.n_faces
                    else f"{self.n_degenerate} of {self.n_faces} faces are")
            out.append(f"{what} degenerate (zero area, repeated or collinear corners)")
        if self.watertight and self.signed_volume is not None and self.signed_volume <= 0:
            out.append("encloses no volume" if self.signed_volume == 0 else
                       "faces point inwards (negative enclosed volume)")
        if self.n_self_intersecting:
            out.append(f"{self.n_self_intersecting} self-intersecting faces")
        if self.n_inverted > 0:
            out.append(f"{self.n_inverted} faces inverted relative to the reference")
        return out

    @property
    def valid(self) -> bool:
        """Closed, 2-manifold, outward, no self-intersections, no degenerate or inverted faces."""
        return self.watertight and not self.problems

    def as_dict(self) -> dict:
        """JSON-ready counts, `valid` and `problems`."""
        return {"valid": self.valid, "watertight": self.watertight,
                "self_intersecting_faces": self.n_self_intersecting,
                "inverted_faces": self.n_inverted,
                "boundary_edges": self.n_boundary_edges,
                "nonmanifold_edges": self.n_nonmanifold_edges,
                "nonmanifold_vertices": self.n_nonmanifold_vertices,
                "misoriented_edges": self.n_misoriented_edges,
                "degenerate_faces": self.n_degenerate,
                "signed_volume": (None if self.signed_volume is None
                                  else float(self.signed_volume)),
                "problems": self.problems}


# --------------------------------------------------------------------- self-intersections
def _segments_cross(p0: np.ndarray, p1: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Does segment p0->p1 cross (or touch) triangle tri? p0, p1: (P, 3), tri: (P, 3, 3) -> (P,)"""
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


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, np.finfo(float).tiny)


def _coplanar(a: np.ndarray, b: np.ndarray, n: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Do the corners of triangles b lie in the planes of triangles a (unit normals n), within
    COPLANAR_EPS * scale? (P, 3, 3) x2, (P, 3), (P,) -> (P,)"""
    dist = np.abs(np.einsum("pkj,pj->pk", b - a[:, :1], n)).max(axis=1)
    return dist <= COPLANAR_EPS * scale


def _project(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coplanar triangles to 2-D by dropping the dominant axis of a's normal. -> (P, 3, 2) x2"""
    n = np.abs(np.cross(a[:, 1] - a[:, 0], a[:, 2] - a[:, 0]))
    drop = np.argmax(n, axis=1)
    keep = np.array([[1, 2], [0, 2], [0, 1]])[drop]  # (P, 2)
    idx = np.arange(len(a))[:, None, None]
    return a[idx, np.arange(3)[None, :, None], keep[:, None, :]], \
        b[idx, np.arange(3)[None, :, None], keep[:, None, :]]


def _orient2d(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    return (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - \
        (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])


def _coplanar_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Do coplanar triangles a and b (no shared vertex) overlap or touch? (P, 3, 3) x2 -> (P,)"""
    a2, b2 = _project(a, b)
    hit = np.zeros(len(a), dtype=bool)
    for i in range(3):  # edge-edge intersections, touching included
        p, q = a2[:, i], a2[:, (i + 1) % 3]
        for j in range(3):
            r, s = b2[:, j], b2[:, (j + 1) % 3]
            d1, d2 = _orient2d(p, q, r), _orient2d(p, q, s)
            d3, d4 = _orient2d(r, s, p), _orient2d(r, s, q)
            hit |= (d1 * d2 <= 0) & (d3 * d4 <= 0) & ~((d1 == 0) & (d2 == 0))
    for x, y in ((a2, b2), (b2, a2)):  # one triangle inside the other
        o = [_orient2d(y[:, k], y[:, (k + 1) % 3], x[:, 0]) for k in range(3)]
        hit |= ((o[0] >= 0) & (o[1] >= 0) & (o[2] >= 0)) | ((o[0] <= 0) & (o[1] <= 0) & (o[2] <= 0))
    return hit


def _strictly_inside(w: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Is direction w strictly inside the (convex) sector spanned by u and v? (P, 3) -> (P,)"""
    s = np.cross(u, v)
    tol = COPLANAR_EPS * np.linalg.norm(s, axis=1)
    return (np.einsum("ij,ij->i", np.cross(u, w), s) > tol) & \
        (np.einsum("ij,ij->i", np.cross(w, v), s) > tol)


def _pairs_intersect(tri: np.ndarray, f: np.ndarray, normal: np.ndarray, radius: np.ndarray,
                     a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Judge candidate face pairs (a, b). tri: (F, 3, 3), f: (F, 3), normal: (F, 3) unit face
    normals, radius: (F,) bounding radii, a, b: (P,) -> (P,) bool"""
    ta, tb = tri[a], tri[b]
    scale = 2.0 * (radius[a] + radius[b])  # bounds every distance within a candidate pair
    eq = f[a][:, :, None] == f[b][:, None, :]  # (P, 3, 3): corner k of a is corner l of b
    n_shared = eq.any(axis=2).sum(axis=1)
    out = np.zeros(len(a), dtype=bool)

    g = np.flatnonzero(n_shared == 0)
    if len(g):
        x, y = ta[g], tb[g]
        cross = np.zeros(len(g), dtype=bool)
        for p, q in ((x, y), (y, x)):
            for k in range(3):
                cross |= _segments_cross(p[:, k], p[:, (k + 1) % 3], q)
        flat = ~cross & _coplanar(x, y, normal[a[g]], scale[g])
        if flat.any():
            cross[flat] = _coplanar_overlap(x[flat], y[flat])
        out[g] = cross

    g = np.flatnonzero(n_shared == 1)
    if len(g):
        ka = np.argmax(eq[g].any(axis=2), axis=1)  # shared corner's position in a
        kb = np.argmax(eq[g].any(axis=1), axis=1)  # ... and in b
        r = np.arange(len(g))
        x, y = ta[g], tb[g]
        xo1, xo2 = x[r, (ka + 1) % 3], x[r, (ka + 2) % 3]  # edge opposite the shared vertex
        yo1, yo2 = y[r, (kb + 1) % 3], y[r, (kb + 2) % 3]
        cross = _segments_cross(xo1, xo2, y) | _segments_cross(yo1, yo2, x)
        flat = ~cross & _coplanar(x, y, normal[a[g]], scale[g]) \
            & _coplanar(y, x, normal[b[g]], scale[g])
        if flat.any():
            p = x[r, ka][flat]
            u1, v1 = xo1[flat] - p, xo2[flat] - p
            u2, v2 = yo1[flat] - p, yo2[flat] - p
            m1, m2 = _unit(u1) + _unit(v1), _unit(u2) + _unit(v2)  # bisectors
            cross[flat] = (_strictly_inside(u2, u1, v1) | _strictly_inside(v2, u1, v1)
                           | _strictly_inside(m2, u1, v1) | _strictly_inside(u1, u2, v2)
                           | _strictly_inside(v1, u2, v2) | _strictly_inside(m1, u2, v2))
        out[g] = cross

    g = np.flatnonzero(n_shared == 2)
    if len(g):
        # Sharing an edge, two triangles meet beyond it only when folded flat onto each other.
        lone_a = np.argmin(eq[g].any(axis=2), axis=1)
        lone_b = np.argmin(eq[g].any(axis=1), axis=1)
        r = np.arange(len(g))
        x, y = ta[g], tb[g]
        e0, e1 = x[r, (lone_a + 1) % 3], x[r, (lone_a + 2) % 3]
        na = np.cross(e1 - e0, x[r, lone_a] - e0)
        nb = np.cross(e1 - e0, y[r, lone_b] - e0)
        sin = np.linalg.norm(np.cross(_unit(na), _unit(nb)), axis=1)
        out[g] = (sin <= np.sin(np.radians(FOLD_ANGLE_DEG))) \
            & (np.einsum("ij,ij->i", na, nb) > 0)

    out[n_shared >= 3] = True  # the same three vertices twice: duplicate faces
    return out


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


def self_intersecting_faces(vertices: np.ndarray, faces: np.ndarray, *,
                            active: np.ndarray | None = None) -> np.ndarray:
    """Indices of faces that cross, touch or overlap a face they should only meet along a shared
    edge or vertex (see the module docstring). vertices (V, 3), faces (F, 3) -> (n,)

    active: optional (F,) bool mask; only pairs with at least one active face are judged (for a
    mesh whose other faces are known not to meet each other, e.g. after a local change).
    Degenerate faces (zero area) are left to `degenerate_faces`: their plane is undefined.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if len(f) < 2:
        return np.zeros(0, dtype=np.int64)
    tri = v[f]
    centre = tri.mean(axis=1)
    radius = np.linalg.norm(tri - centre[:, None], axis=2).max(axis=1)
    i, j = _candidate_pairs(centre, radius)
    if len(i) == 0:
        return np.zeros(0, dtype=np.int64)
    near = np.linalg.norm(centre[i] - centre[j], axis=1) <= radius[i] + radius[j]
    if active is not None:
        near &= active[i] | active[j]
    i, j = i[near], j[near]
    solid = ~degenerate_mask(v, f)
    keep = solid[i] & solid[j]
    i, j = i[keep], j[keep]
    normal = _unit(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]))
    hit = np.zeros(len(f), dtype=bool)
    for start in range(0, len(i), PAIR_BLOCK):
        a, b = i[start:start + PAIR_BLOCK], j[start:start + PAIR_BLOCK]
        cross = _pairs_intersect(tri, f, normal, radius, a, b)
        hit[a[cross]] = True
        hit[b[cross]] = True
    return np.flatnonzero(hit)


# ------------------------------------------------------------------ faces and topology
def triangle_quality(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """4 sqrt(3) area / (sum of squared edge lengths): 1 for equilateral, 0 for degenerate."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    tri = v[f]
    edges2 = sum(np.square(tri[:, i] - tri[:, (i + 1) % 3]).sum(axis=1) for i in range(3))
    return 4.0 * np.sqrt(3.0) * geo.face_areas(v, f) / np.maximum(edges2, np.finfo(float).tiny)


def degenerate_mask(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Faces with a repeated vertex index, or zero area / collinear corners (quality below
    `DEGENERATE_QUALITY`). vertices (V, 3), faces (F, 3) -> (F,) bool"""
    f = np.asarray(faces, dtype=np.int64)
    repeated = (f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 0] == f[:, 2])
    return repeated | (triangle_quality(vertices, f) < DEGENERATE_QUALITY)


def nonmanifold_vertices(faces: np.ndarray) -> np.ndarray:
    """Vertices whose faces form more than one fan (bow-ties), among vertices on no non-manifold
    edge. Fans are joined across edges shared by exactly two faces. faces (F, 3) -> (n,)"""
    f = np.asarray(faces, dtype=np.int64)
    n_faces = len(f)
    he = geo.directed_edges(f)  # half-edge h: corner h // F of face h % F -> the next corner
    corner_from = np.arange(3 * n_faces)
    corner_to = ((corner_from // n_faces + 1) % 3) * n_faces + corner_from % n_faces
    codes, base = geo.pair_codes(np.sort(he, axis=1))
    order = np.argsort(codes, kind="stable")
    uniq, start, counts = np.unique(codes[order], return_index=True, return_counts=True)
    two = start[counts == 2]
    h1, h2 = order[two], order[two + 1]
    same = he[h1, 0] == he[h2, 0]  # same direction (misoriented): from joins from
    rows = np.concatenate([corner_from[h1], corner_to[h1]])
    cols = np.concatenate([np.where(same, corner_from[h2], corner_to[h2]),
                           np.where(same, corner_to[h2], corner_from[h2])])
    graph = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(3 * n_faces,) * 2)
    _, label = csgraph.connected_components(graph, directed=False)
    vertex_of = f.T.reshape(-1)  # corner c is vertex f[c % F, c // F]
    fans = np.unique(vertex_of.astype(np.int64) * (3 * n_faces) + label)
    n_fans = np.bincount(fans // (3 * n_faces))
    bad = np.flatnonzero(n_fans > 1)
    fins = uniq[counts > 2]
    on_fins = np.unique(np.concatenate([fins // base, fins % base]))
    return np.setdiff1d(bad, on_fins)


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
                  reference: np.ndarray | None = None,
                  self_intersections: bool = True) -> Validity:
    """The validity check: closed, 2-manifold (edges and vertices), consistently and outwards
    oriented, no degenerate faces, no self-intersections, and (given `reference` vertices with
    the same faces, e.g. the atlas) no faces inverted relative to it.

    vertices (V, 3), faces (F, 3). self_intersections=False skips the one costly test (the count
    is then 0). Never raises for arrays a `Mesh` accepts.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    _, counts = geo.edge_face_counts(f)
    watertight = geo.is_watertight(f)
    inverted = -1 if reference is None else len(inverted_faces(v, f, reference))
    n_self = len(self_intersecting_faces(v, f)) if self_intersections else 0
    return Validity(watertight=bool(watertight), n_self_intersecting=n_self,
                    n_inverted=inverted, n_faces=len(f),
                    n_boundary_edges=int((counts == 1).sum()),
                    n_nonmanifold_edges=int((counts > 2).sum()),
                    n_nonmanifold_vertices=len(nonmanifold_vertices(f)),
                    n_misoriented_edges=_misoriented_in_pairs(f),
                    n_degenerate=int(degenerate_mask(v, f).sum()),
                    signed_volume=geo.signed_volume(v, f) if watertight else None)


def _misoriented_in_pairs(faces: np.ndarray) -> int:
    """Edges shared by exactly two faces that traverse it in the same direction."""
    he = geo.directed_edges(faces)
    codes, _ = geo.pair_codes(np.sort(he, axis=1))
    order = np.argsort(codes, kind="stable")
    _, start, counts = np.unique(codes[order], return_index=True, return_counts=True)
    two = start[counts == 2]
    return int((he[order[two], 0] == he[order[two + 1], 0]).sum())
