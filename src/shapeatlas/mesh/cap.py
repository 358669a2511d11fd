"""Cap alignment: the turn of a capped, elongated shape about its long axis, from the outline
of its flat cap. Grooming (`mesh.groom`) turns the training shapes with it, a fitted model keeps
the cohort's cap outline (`cohort_cap`) and turns every new shape to it (`turn_cap`).

Rigid alignment by surface distance leaves the turn about the long axis of a nearly round,
elongated shape (a left-ventricle cavity, a long bone's shaft) poorly set: turning the shape
about that axis barely changes any closest-point distance, and whatever breaks the symmetry
(the apex displaced sideways, the basal plane's tilt, local bumps) decides the turn, not the
anatomy. Measured on the 50 synthetic LVs (docs/results.md): the minimum of the symmetric
closest-point distance to the cohort's true mean shape lies a median 3.5 degrees (up to 20)
from the true turn, and those turns alone cost 2.2 mm of ground-truth correspondence error,
above the 2%-of-long-axis target, however good the matching otherwise is.

Many anatomical surfaces carry a flat cap where the segmentation or the anatomy cuts them: the
basal (mitral) plane of a left-ventricle cavity, the cut of a truncated bone or vessel. Its
outline is a planar curve that the shape's bumps and bends do not touch, and its form (the
D-shaped annulus of an LV, flattened at the septum) fixes the turn. This module finds that cap
(`planar_cap`: the largest connected set of coplanar faces, and its outer boundary loop), reads
the loop in its own plane, evenly resampled and scaled to a mean radius of 1 (`cap_outline`),
and turns a shape so that its outline best superimposes on a reference's (`outline_turn`: a
search over turns, each with its best shift, then `linear_turn`, which takes out whatever linear
map lies between the two outlines; `cap_twist`).

It does nothing where it cannot be trusted: a shape without a flat cap of at least
`CAP_MIN_AREA_FRACTION` of its area, a cap not roughly across the long axis, a reference outline
too round to set a turn (`OUTLINE_MIN_SD`), or no best turn inside `MAX_TWIST_DEG` (the alignment
already chose the basin; this only refines within it). The one exception is `cap_basin`: where
the outline fits far better half a turn (or any turn beyond the window) away and the surface
fits there as well as where the alignment left it, the surface could not choose, and the
outline does. On the 50 synthetic LVs of cohort seed 0 one shape was aligned 171 degrees off:
the two basins' surface RMS distances were 4.629 and 4.622 mm, the outline costs 0.0004 and
0.0011. An outline read in its own cap's plane is a
linear image of the anatomy's: a basal plane sheared up by its tilt (the synthetic LVs') looks
stretched along the tilt, and a stretch of 2% moves the best rigid turn of a nearly round outline
by up to 5 degrees; `linear_turn` removes that bias (tests/mesh/test_cap.py). No maintained mesh
library offers this step (trimesh's `registration` and ICP variants see surfaces, not cap
outlines), hence the few lines here; face normals and areas come from `mesh.geometry`, nearest
neighbours from scipy's cKDTree, connected components from scipy's csgraph.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh import geometry as geo
from shapeatlas.mesh.align import principal_frame, symmetric_icp, symmetric_rms
from shapeatlas.mesh.core import Mesh

log = logging.getLogger(__name__)

#: Faces whose normals are within this angle of the cap's plane normal count as coplanar.
CAP_ANGLE_DEG = 3.0
#: ... and whose centroids lie within this share of the bounding-box diagonal of the plane.
CAP_PLANE_TOLERANCE = 0.005
#: A cap must hold at least this share of the surface's area.
CAP_MIN_AREA_FRACTION = 0.04
#: Candidate plane normals tried (the largest faces first, then evenly spread).
CAP_CANDIDATES = 256
#: A cap whose normal is further than this from the long axis is not across it.
CAP_MAX_AXIS_ANGLE_DEG = 35.0
#: Fewest vertices on a cap's outline.
MIN_CAP_POINTS = 12
#: Points a cap's outline is resampled to (evenly along it), for a shape and for the reference.
OUTLINE_POINTS = 90
REFERENCE_OUTLINE_POINTS = 360
#: A reference outline whose radius varies by less than this share of its mean (standard
#: deviation) is too round to set a turn.
OUTLINE_MIN_SD = 0.01
#: Turns (degrees) searched either way, and the search step; a best turn at the edge of the
#: window is not applied (the rigid alignment chose the basin; this refines within it).
MAX_TWIST_DEG = 20.0
TWIST_STEP_DEG = 0.5
#: Step (degrees) of the coarse check that no turn outside the window fits better.
OUTSIDE_STEP_DEG = 5.0
#: `cap_basin` moves a shape to another basin of the alignment only where the outline fits
#: there at most this share of its best cost inside the window, and the surface, after a local
#: ICP, within this share of the RMS distance it had (a nearly symmetric shape, whose two
#: basins the surface cannot tell apart).
BASIN_COST_RATIO = 0.7
BASIN_RMS_TOLERANCE = 0.02
#: Closest-point rounds that re-centre the outline at each tried turn.
CENTRE_ITERATIONS = 8
#: Rounds of `linear_turn` (pair, fit the affine map, apply, resample), the turns (degrees)
#: either way of the current one that its pairings may take, and the most its accumulated map
#: may stretch one direction against the other (larger ratios of its singular values: not
#: the same outline, the rigid turn is kept).
LINEAR_ROUNDS = 5
LINEAR_WINDOW_DEG = 10.0
LINEAR_MAX_STRETCH = 1.3
#: A cohort's shapes are turned (grooming) or followed (a model's cap outline) only where at
#: least this share of them, the reference included, have a flat cap that lines up with the
#: reference's.
CAP_COHORT_SHARE = 0.5

#: Training shapes whose caps are turned a median of this many degrees or more from the
#: reference's do not follow their caps (`cohort_cap`).
CAP_CONSISTENT_DEG = 1.0

@dataclass(frozen=True)
class Cap:
    """The flat cap of a surface.

    normal: (3,) unit normal of the cap's plane (the faces' outward side).
    outline: (P, 3) the vertices of the cap's outer boundary, in order along it (the mesh's
        frame).
    area_fraction: the cap's share of the surface's area.
    """

    normal: np.ndarray
    outline: np.ndarray
    area_fraction: float

    def transformed(self, matrix: np.ndarray) -> "Cap":
        """The cap moved by a (4, 4) rigid transform (its outline and normal)."""
        m = np.asarray(matrix, dtype=np.float64)
        normal = m[:3, :3] @ self.normal
        return Cap(normal=normal / np.linalg.norm(normal),
                   outline=self.outline @ m[:3, :3].T + m[:3, 3],
                   area_fraction=self.area_fraction)


def planar_cap(mesh: Mesh, *, min_area_fraction: float = CAP_MIN_AREA_FRACTION) -> Cap | None:
    """The largest connected set of coplanar faces, if it holds at least `min_area_fraction` of
    the area. -> Cap, or None"""
    v, f = np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces)
    if len(f) == 0:
        return None
    areas = geo.face_areas(v, f)
    total = float(areas.sum())
    if not total > 0:
        return None
    normals = geo.face_normals(v, f)
    centroids = v[f].mean(axis=1)
    tol = CAP_PLANE_TOLERANCE * float(np.linalg.norm(v.max(axis=0) - v.min(axis=0)))
    cos_tol = np.cos(np.radians(CAP_ANGLE_DEG))
    order = np.argsort(-areas)
    picks = np.unique(np.concatenate([order[:CAP_CANDIDATES // 2],
                                      np.linspace(0, len(f) - 1, CAP_CANDIDATES // 2).astype(int)]))
    best, best_area = None, 0.0
    for i in picks:
        mask = ((normals @ normals[i] > cos_tol)
                & (np.abs((centroids - centroids[i]) @ normals[i]) < tol))
        a = float(areas[mask].sum())
        if a > best_area:
            best, best_area = mask, a
    if best is None or best_area < min_area_fraction * total:
        return None
    cap = _largest_face_component(f, np.flatnonzero(best), areas)
    cap_area = float(areas[cap].sum())
    if cap_area < min_area_fraction * total:
        return None
    n = (normals[cap] * areas[cap, None]).sum(axis=0)
    n /= np.linalg.norm(n)
    outline = _outer_boundary(f[cap], v)
    if outline is None or len(outline) < MIN_CAP_POINTS:
        return None
    return Cap(normal=n, outline=outline, area_fraction=cap_area / total)


def _outer_boundary(faces: np.ndarray, verts: np.ndarray) -> np.ndarray | None:
    """Vertices of the longest boundary loop of a set of faces (a decimated cap may have holes,
    whose loops are shorter), in their order along the loop. -> (P, 3), or None"""
    edges, counts = geo.edge_face_counts(faces)
    rim = edges[counts == 1]
    if len(rim) == 0:
        return None
    ids, local = np.unique(rim, return_inverse=True)
    local = local.reshape(-1, 2)
    graph = sparse.coo_matrix((np.ones(len(local)), (local[:, 0], local[:, 1])),
                              shape=(len(ids), len(ids))).tocsr()
    _, labels = csgraph.connected_components(graph, directed=False)
    lengths = np.bincount(labels[local[:, 0]],
                          weights=np.linalg.norm(verts[ids[local[:, 0]]] - verts[ids[local[:, 1]]],
                                                 axis=1))
    keep = labels == int(np.argmax(lengths))
    # A boundary loop is a cycle: a depth-first walk from any of its vertices follows it.
    order = csgraph.depth_first_order(graph + graph.T, int(np.flatnonzero(keep)[0]),
                                      directed=False, return_predecessors=False)
    return verts[ids[order]]


def _largest_face_component(faces: np.ndarray, chosen: np.ndarray,
                            areas: np.ndarray) -> np.ndarray:
    """Of the `chosen` faces, those of the edge-connected component with the largest area."""
    sub = faces[chosen]
    edges = np.sort(geo.directed_edges(sub), axis=1)
    owner = np.tile(np.arange(len(sub)), 3)
    codes, _ = geo.pair_codes(edges)
    order = np.argsort(codes, kind="stable")
    same = codes[order][1:] == codes[order][:-1]
    a, b = owner[order][:-1][same], owner[order][1:][same]
    graph = sparse.coo_matrix((np.ones(len(a)), (a, b)), shape=(len(sub), len(sub)))
    _, labels = csgraph.connected_components(graph, directed=False)
    comp_area = np.bincount(labels, weights=areas[chosen])
    return chosen[labels == int(np.argmax(comp_area))]


def _plane_basis(normal: np.ndarray, like: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors (e1, e2) spanning the plane across `normal`, with e1 x e2 = normal.
    like: another plane's basis, carried over by the smallest rotation between the normals,
    so that angles in the two planes compare. -> (e1, e2)"""
    n = np.asarray(normal, dtype=np.float64)
    n = n / np.linalg.norm(n)
    if like is not None:
        other = np.cross(like[0], like[1])
        rot, _ = Rotation.align_vectors(n[None], other[None])
        e1 = rot.apply(like[0])
        e1 -= (e1 @ n) * n
        e1 /= np.linalg.norm(e1)
    else:
        seed = np.eye(3)[int(np.argmin(np.abs(n)))]
        e1 = seed - (seed @ n) * n
        e1 /= np.linalg.norm(e1)
    return e1, np.cross(n, e1)


def _even(loop: np.ndarray, points: int, phase: float = 0.0) -> np.ndarray:
    """A closed 2D loop (P, 2) resampled to `points` points evenly spaced along it, the first
    `phase` spacings past its first point."""
    closed = np.concatenate([loop, loop[:1]])
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(closed, axis=0), axis=1))])
    at = np.mod((np.arange(points) + phase) * (arc[-1] / points), arc[-1])
    return np.stack([np.interp(at, arc, closed[:, 0]), np.interp(at, arc, closed[:, 1])], axis=1)


def cap_outline(outline: np.ndarray, basis: tuple[np.ndarray, np.ndarray], *,
                points: int = OUTLINE_POINTS) -> np.ndarray:
    """A cap's outline in its plane, resampled to `points` points evenly spaced along it,
    centred on their mean and scaled to a mean radius of 1 (so caps of different size
    compare). outline: (P, 3) in order along the loop; basis: the plane's (e1, e2).
    -> (points, 2)"""
    even = _even(np.stack([outline @ basis[0], outline @ basis[1]], axis=1), points)
    even -= even.mean(axis=0)
    return even / np.linalg.norm(even, axis=1).mean()


def _turn_costs(outline: np.ndarray, tree: cKDTree, reference: np.ndarray,
                turns: np.ndarray) -> np.ndarray:
    """Mean squared closest-point distance from `outline` turned by each of `turns` (radians),
    with its best shift, to the reference outline. -> (len(turns),)"""
    c, s = np.cos(turns)[:, None, None], np.sin(turns)[:, None, None]
    # (T, P, 2): every turn at once, so each centring step is one tree query.
    p = (outline[None, :, 0:1] * np.concatenate([c, s], axis=2)
         + outline[None, :, 1:2] * np.concatenate([-s, c], axis=2))
    shift = np.zeros((len(turns), 1, 2))
    for _ in range(CENTRE_ITERATIONS):
        _, j = tree.query(p + shift)
        shift = (reference[j] - p).mean(axis=1, keepdims=True)
    return np.mean(tree.query(p + shift)[0] ** 2, axis=1)


def _counter_clockwise(loop: np.ndarray) -> np.ndarray:
    """The loop traversed counter-clockwise (positive signed area)."""
    x, y = loop[:, 0], loop[:, 1]
    area = 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))
    return loop if area >= 0 else loop[::-1]


def _polar_angles(a: np.ndarray) -> np.ndarray:
    """Angle (radians) of the rotation in the polar decomposition of 2x2 maps (..., 2, 2)
    with a positive determinant."""
    return np.arctan2(a[..., 1, 0] - a[..., 0, 1], a[..., 0, 0] + a[..., 1, 1])


def _best_pairing(q: np.ndarray, fy: np.ndarray, window_deg: float):
    """The cyclic pairing of the evenly resampled loop `q` (P, 2) with the reference (its FFT
    `fy`) whose least-squares affine map explains the most, among maps with a positive
    determinant that turn by at most `window_deg`. -> (shift, explained (P,), map (2, 2)),
    or None"""
    points = len(q)
    x = np.concatenate([q - q.mean(axis=0), np.ones((points, 1))], axis=1)
    gram_inv = np.linalg.inv(x.T @ x)
    # xty[k] = sum_i x[i]^T ref[i + k]: the normal equations of every cyclic pairing at once.
    xty = np.real(np.fft.ifft(np.conj(np.fft.fft(x, axis=0))[:, :, None] * fy[:, None, :],
                              axis=0))
    sol = np.einsum("ab,kbc->kac", gram_inv, xty)
    maps = np.swapaxes(sol[:, :2, :], 1, 2)  # ref[i + k] ~ maps[k] @ q[i] + shift
    explained = np.einsum("kab,kab->k", xty, sol)
    inside = (np.abs(_polar_angles(maps)) <= np.radians(window_deg)) & (np.linalg.det(maps) > 0)
    if not inside.any():
        return None
    k = int(np.flatnonzero(inside)[np.argmax(explained[inside])])
    return k, explained, maps[k]


def linear_turn(outline: np.ndarray, reference: np.ndarray, start_deg: float, *,
                window_deg: float = LINEAR_WINDOW_DEG) -> float | None:
    """The turn (degrees) that lines `outline` up with `reference` (both (P, 2) closed loops,
    centred, unit mean radius) whatever linear map also lies between them, starting from
    `start_deg` (the rigid search's).

    A cap read in its own plane is a linear image of the anatomy's outline: a basal plane
    sheared up by its tilt (the synthetic LVs') appears stretched along the tilt, one
    projected along a slightly wrong axis appears sheared. For a nearly round outline a
    stretch of 2% moves the best rigid turn by up to 5 degrees (on the 50 synthetic LVs the
    turns about the long axis then followed the tilts, correlation 0.95). Here each round
    pairs the two loops point by point (both evenly resampled, every cyclic shift tried at
    once by FFT cross-correlation, keeping shifts whose turn is within `window_deg` of the
    current one), fits the least-squares affine map, applies it and resamples; the turn is the
    rotation of the accumulated map's polar decomposition (exact for any linear map with a
    positive determinant). None where the map stretches by more than `LINEAR_MAX_STRETCH` or
    no shift stays inside the window.
    """
    ref = _counter_clockwise(_even(reference, len(reference)))
    ref = ref - ref.mean(axis=0)
    points = len(ref)
    t = np.radians(start_deg)
    total = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    fy = np.fft.fft(ref, axis=0)
    phase = 0.0
    for _ in range(LINEAR_ROUNDS):
        loop = _counter_clockwise(outline @ total.T)
        best = _best_pairing(_even(loop, points, phase), fy, window_deg)
        if best is None:
            return None
        # The pairing's phase between whole shifts (a parabola through the neighbours' fits),
        # so that sampling does not set the turn: on a round loop a shift of part of a
        # spacing is a turn the affine fit would take.
        k, explained, _ = best
        y0, y1, y2 = explained[[k - 1, k, (k + 1) % points]]
        den = y0 - 2.0 * y1 + y2
        phase -= 0.5 * (y0 - y2) / den if den < 0 else 0.0
        best = _best_pairing(_even(loop, points, phase), fy, window_deg)
        if best is None:
            return None
        total = best[2] @ total
    sv = np.linalg.svd(total, compute_uv=False)
    if sv[0] > LINEAR_MAX_STRETCH * sv[1]:
        return None
    return float(np.degrees(_polar_angles(total)))


def outline_turn(outline: np.ndarray, reference: np.ndarray, *,
                 max_turn_deg: float = MAX_TWIST_DEG,
                 step_deg: float = TWIST_STEP_DEG, linear: bool = True) -> float | None:
    """The turn (degrees, counter-clockwise in the plane) that best superimposes `outline` on
    `reference` (both (P, 2), centred, unit mean radius): the least mean squared
    closest-point distance over turns within `max_turn_deg` either way, each with its best
    shift, refined by a parabola, then (`linear`) by `linear_turn`, which removes the bias
    that a stretch between the outlines gives the rigid turn (kept where that step fails).
    None where the best rigid turn is at the window's edge, or where a turn outside the
    window fits better (the outlines then disagree with the alignment's basin, which this
    step does not overrule)."""
    tree = cKDTree(reference)
    turns = np.radians(np.arange(-max_turn_deg, max_turn_deg + step_deg / 2, step_deg))
    cost = _turn_costs(outline, tree, reference, turns)
    k = int(np.argmin(cost))
    if k in (0, len(turns) - 1):
        return None
    outside = np.radians(np.arange(max_turn_deg + OUTSIDE_STEP_DEG, 360.0 - max_turn_deg,
                                   OUTSIDE_STEP_DEG))
    if _turn_costs(outline, tree, reference, outside).min() < cost[k]:
        return None
    y0, y1, y2 = cost[k - 1:k + 2]
    den = y0 - 2.0 * y1 + y2
    frac = 0.5 * (y0 - y2) / den if den > 0 else 0.0
    rigid = float(np.degrees(turns[k]) + frac * step_deg)
    if not linear:
        return rigid
    refined = linear_turn(outline, reference, rigid)
    if refined is None:
        log.info("cap outline: the linear-map refinement failed; the rigid turn %.2f degrees "
                 "is kept", rigid)
        return rigid
    return refined


@dataclass(frozen=True)
class CapReference:
    """What `cap_twist` compares a shape with: the reference's cap normal (3,), its plane's
    basis (e1, e2) and its outline (`REFERENCE_OUTLINE_POINTS`, 2) in that basis, all in the
    aligned frame."""

    normal: np.ndarray
    basis: tuple[np.ndarray, np.ndarray]
    outline: np.ndarray

    @classmethod
    def of(cls, reference: Mesh, *, cap: Cap | None = None) -> "CapReference | None":
        """The reference's cap (`cap`: the one given, e.g. of the same surface before it was
        decimated; default `planar_cap(reference)`), or None where it has none that can set a
        turn: no flat cap of `CAP_MIN_AREA_FRACTION` of its area, one not across its long axis,
        or an outline too round (`OUTLINE_MIN_SD`)."""
        cap = planar_cap(reference) if cap is None else cap
        if cap is None or not _across(cap.normal, principal_frame(reference)[1][:, 0]):
            return None
        basis = _plane_basis(cap.normal)
        outline = cap_outline(cap.outline, basis, points=REFERENCE_OUTLINE_POINTS)
        if np.linalg.norm(outline, axis=1).std() < OUTLINE_MIN_SD:
            return None
        return cls(normal=cap.normal, basis=basis, outline=outline)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """-> {"normal": (3,), "basis": (2, 3), "outline": (P, 2)}, as `from_arrays` reads."""
        return {"normal": np.asarray(self.normal, dtype=np.float64),
                "basis": np.array(self.basis, dtype=np.float64),
                "outline": np.ascontiguousarray(self.outline, dtype=np.float64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], *, source: str) -> "CapReference":
        """The inverse of `to_arrays`, refusing (naming `source`) arrays that are missing, do
        not fit together or hold NaN."""
        try:
            normal, basis, outline = (np.asarray(arrays[k], dtype=np.float64)
                                      for k in ("normal", "basis", "outline"))
        except KeyError as exc:
            raise ShapeAtlasError(f"{source}: the cap outline lacks {exc.args[0]}") from None
        if (normal.shape != (3,) or basis.shape != (2, 3) or outline.ndim != 2
                or outline.shape[1] != 2 or len(outline) < MIN_CAP_POINTS
                or not all(np.isfinite(a).all() for a in (normal, basis, outline))):
            raise ShapeAtlasError(f"{source}: cap outline normal {normal.shape}, basis "
                                  f"{basis.shape} and outline {outline.shape} do not fit "
                                  "together (or hold NaN)")
        return cls(normal=normal, basis=(basis[0], basis[1]), outline=outline)


def _across(normal: np.ndarray, axis: np.ndarray) -> bool:
    return abs(float(normal @ axis)) >= np.cos(np.radians(CAP_MAX_AXIS_ANGLE_DEG))


def _outline_like(mesh: Mesh, reference: CapReference, cap: Cap | None) -> np.ndarray | None:
    """`mesh`'s cap outline read as `reference`'s is (`cap_outline`), or None where the mesh
    has no flat cap across the reference's. cap: as in `cap_twist`. -> (points, 2) or None"""
    cap = planar_cap(mesh) if cap is None else cap
    if cap is None or not _across(cap.normal, reference.normal):
        return None
    # Each outline is read in its own cap's plane (the bases agree through the smallest
    # rotation between the normals); `outline_turn` allows for the stretch that a different
    # tilt gives it.
    normal = cap.normal if cap.normal @ reference.normal >= 0 else -cap.normal
    return cap_outline(cap.outline, _plane_basis(normal, like=reference.basis))


def cap_twist(mesh: Mesh, reference: CapReference, *, cap: Cap | None = None
              ) -> np.ndarray | None:
    """The turn about the reference cap's normal that lines `mesh`'s cap outline up with the
    reference's, for a mesh already aligned to it (same frame). cap: the mesh's cap in that
    frame where it is known better than `planar_cap(mesh)` (e.g. read before decimation).
    -> (4, 4) rotation about the axis through the mesh's centroid, or None where the step
    does not apply: no flat cap, a cap more than `CAP_MAX_AXIS_ANGLE_DEG` from the
    reference's, or no best turn within `MAX_TWIST_DEG`."""
    outline = _outline_like(mesh, reference, cap)
    if outline is None:
        return None
    deg = outline_turn(outline, reference.outline)
    if deg is None:
        log.info("%s: no best cap-outline turn within %g degrees of its alignment: the "
                 "alignment's turn is kept", mesh.name, MAX_TWIST_DEG)
        return None
    return _turn_about(deg, reference.normal, mesh.centroid)


def _turn_about(deg: float, axis: np.ndarray, center: np.ndarray) -> np.ndarray:
    """The (4, 4) turn by `deg` degrees about unit `axis` (3,) through `center` (3,)."""
    rot = Rotation.from_rotvec(np.radians(deg) * axis).as_matrix()
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = rot, center - rot @ center
    return m


def cap_basin(mesh: Mesh, reference: CapReference, surface: np.ndarray, *,
              cap: Cap | None = None) -> np.ndarray | None:
    """The move of `mesh` (aligned to `surface`, (T, 3) points in the same frame) to the basin
    of the alignment that its cap outline points to, where the surface cannot tell the two
    apart: the outline's best turn over the whole circle (`OUTSIDE_STEP_DEG` steps) lies beyond
    `MAX_TWIST_DEG`, costs at most `BASIN_COST_RATIO` of the best inside, and from that turn a
    local symmetric ICP on `surface` settles outside the window at a surface RMS distance
    within `BASIN_RMS_TOLERANCE` of the mesh's own. `cap_twist` then refines within the new
    basin. cap: as in `cap_twist`. -> (4, 4) rigid map (that turn, then the ICP) or None"""
    outline = _outline_like(mesh, reference, cap)
    if outline is None:
        return None
    degs = np.arange(0.0, 360.0, OUTSIDE_STEP_DEG)
    cost = _turn_costs(outline, cKDTree(reference.outline), reference.outline, np.radians(degs))
    inside = np.minimum(degs, 360.0 - degs) <= MAX_TWIST_DEG
    k = int(np.argmin(cost))
    if inside[k] or cost[k] > BASIN_COST_RATIO * cost[inside].min():
        return None
    start = _turn_about(degs[k], reference.normal, mesh.centroid)
    points = np.asarray(mesh.vertices, dtype=np.float64)
    surface = np.asarray(surface, dtype=np.float64)
    move, _, rms = symmetric_icp(points, surface, start)
    before = symmetric_rms(points, surface)
    about = float(np.degrees(Rotation.from_matrix(move[:3, :3]).as_rotvec() @ reference.normal))
    if abs(about) <= MAX_TWIST_DEG:
        return None  # the ICP went back to the alignment's basin
    if rms > (1.0 + BASIN_RMS_TOLERANCE) * before:
        log.info("%s: its cap outline fits best %.0f degrees from its alignment, but the "
                 "surface fits worse there (RMS %.2f against %.2f): the alignment is kept",
                 mesh.name, degs[k], rms, before)
        return None
    log.info("%s: turned %.0f degrees about its cap to the basin its cap outline fits (outline "
             "cost %.4f against %.4f; surface RMS %.3f against %.3f)", mesh.name, about,
             cost[k], cost[inside].min(), rms, before)
    return move


def basin_turn(mesh: Mesh, reference: CapReference, surface: np.ndarray, *,
               cap: Cap | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """For a mesh that `cap_twist` left unturned: `cap_basin`'s move to the basin its outline
    points to, then `cap_twist` within that basin. Arguments as in `cap_basin`.
    -> ((4, 4) whole turn, the move alone) or None where `cap_basin` moves nothing"""
    move = cap_basin(mesh, reference, surface, cap=cap)
    if move is None:
        return None
    turn = cap_twist(mesh.transformed(move), reference,
                     cap=None if cap is None else cap.transformed(move))
    return (move if turn is None else turn @ move), move


def cohort_turns(meshes: Sequence[Mesh], reference: CapReference, *, skip: int | None,
                 caps: Sequence[Cap | None] | None = None) -> list[np.ndarray | None]:
    """`cap_twist` of every mesh against `reference`: None at position `skip` (the reference's
    own shape, if it is one of them) and for shapes whose cap does not line up. caps: each
    mesh's cap where known (`cap_twist`'s `cap`; None entries: found on the mesh).
    -> one entry per mesh"""
    caps = [None] * len(meshes) if caps is None else caps
    return [None if i == skip else cap_twist(m, reference, cap=c)
            for i, (m, c) in enumerate(zip(meshes, caps, strict=True))]


def capped_count(turns: Sequence[np.ndarray | None]) -> int:
    """How many shapes of `cohort_turns`'s cohort have a cap that lines up, the reference
    counted."""
    return sum(t is not None for t in turns) + 1


def covers_cohort(turns: Sequence[np.ndarray | None]) -> bool:
    """Whether at least `CAP_COHORT_SHARE` of `cohort_turns`'s cohort have such a cap."""
    return capped_count(turns) >= CAP_COHORT_SHARE * len(turns)


def turn_degrees(turn: np.ndarray) -> float:
    """The angle (degrees) of a (4, 4) turn such as `cap_twist` gives."""
    return float(np.degrees(Rotation.from_matrix(turn[:3, :3]).magnitude()))


def cohort_cap(meshes: Sequence[Mesh], reference: Mesh, *, at: int | None = None):
    """The cap outline that new shapes are turned to at `correspond` , or None.

    Kept only where the training shapes (aligned frame) already follow their caps: at least
    `CAP_COHORT_SHARE` of them have a flat cap like `reference`'s (one of them) and their
    median turn against it is under `CAP_CONSISTENT_DEG`, as after grooming with
    `cap_twist`. A cohort groomed without it keeps other turns, which a new shape turned to
    the cap would not share. at: `reference`'s place in `meshes`, where it is one of them
    (default: found by identity). -> `CapReference` or None
    """

    ref = CapReference.of(reference)
    if ref is None:
        return None
    if at is None:
        at = next((i for i, m in enumerate(meshes) if m is reference), None)
    turns = cohort_turns(meshes, ref, skip=at)
    if not covers_cohort(turns):
        return None
    degs = [turn_degrees(t) for t in turns if t is not None]
    median = float(np.median(degs)) if degs else 0.0
    if median >= CAP_CONSISTENT_DEG:
        log.info("the training shapes' caps are turned a median %.1f degrees from %s's (groomed "
                 "without the cap twist?): new shapes are not turned to it", median,
                 reference.name)
        return None
    return ref


def turn_cap(mesh: Mesh, t: np.ndarray, cap, *, surface: np.ndarray | None = None
             ) -> np.ndarray:
    """A new shape's rigid pose `t` (4, 4) composed with the turn about its flat cap that lines
    the cap up with `cap` (a `CapReference`, the model's; None: no turn), as grooming
    turned the training shapes. surface: (T, 3) the points `t` aligned the mesh to (the
    atlas's vertices); with it, a shape whose outline lines up only beyond the turn's window
    is first moved to the basin the outline points to where the surface fits as well
    (`basin_turn`), as grooming does. A shape without such a cap keeps `t`. -> (4, 4)"""

    if cap is None:
        return t
    moved = mesh.transformed(t)
    turn = cap_twist(moved, cap)
    if turn is None and surface is not None:
        basin = basin_turn(moved, cap, surface)
        turn = None if basin is None else basin[0]
    return t if turn is None else turn @ t
