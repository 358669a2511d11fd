"""Rigid or similarity alignment of a surface to a reference without known correspondences.

Principal axes give a start, but their signs and (for nearly equal moments) their order are
arbitrary, the classic cause of 180-degree flips. So every one of the 24 rotations that map the
shape's principal frame onto the reference's (all signed axis permutations with determinant +1) is
tried with a short, coarse ICP, and the best is refined at full resolution.

When two principal moments are nearly equal (a round cross-section: left ventricles, tori, long
bones), the axes in their plane are set by noise, so the 24 starts, 90 degrees apart about the
third axis, can all miss the basin of the right turn. Each start is then also tried turned by
30 and 60 degrees about that axis, and about all three axes when all moments are close.

The ICP here is symmetric (closest points are taken from the shape to the reference *and* back),
which resists the pull of partial overlap better than trimesh's one-directional
`registration.icp`; it is small enough to keep in-house. Nearest neighbours use scipy's cKDTree.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from shapeatlas.errors import MeshError, ShapeAtlasError
from shapeatlas.mesh import geometry as geo
from shapeatlas.mesh.core import Mesh

#: Points used per shape in the coarse multi-start search.
COARSE_POINTS = 1000
#: ICP iterations from each start, how many starts survive (per turn, see `_start_turns`), and
#: their further steps.
SCREEN_ITERATIONS = 8
SCREEN_KEEP = 8
COARSE_ITERATIONS = 15
#: Candidates (per turn) refined at full resolution before the best is chosen.
FINALISTS = 3
FINE_ITERATIONS = 60
#: Relative change of the RMS distance below which ICP stops.
ICP_TOLERANCE = 1e-6
#: A surface whose smallest principal moment is below this share of its largest (a standard
#: deviation 100 times smaller) is too flat to whiten.
FLAT_MOMENT_RATIO = 1e-4
#: Two principal moments whose standard deviations differ by less than this factor are "nearly
#: equal": the turn about the remaining axis is then searched in 30-degree steps.
ROUND_SD_RATIO = 1.05
#: Extra turns (degrees) tried about such an axis; the 24 starts already give 0 and 90.
ROUND_TURNS_DEG = (30.0, 60.0)
#: Grid cells along the longest side of the box in which the consensus shape is built.
CONSENSUS_CELLS = 80


@dataclass(frozen=True)
class Alignment:
    """Result of aligning one shape to a reference.

    matrix: (4, 4) homogeneous transform from the shape's frame to the reference's frame.
    scale: isotropic scale contained in `matrix` (1.0 for rigid alignment).
    rms: symmetric RMS closest-point distance after alignment (mesh units).
    """

    matrix: np.ndarray
    scale: float
    rms: float


def principal_frame(mesh: Mesh) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area-weighted centroid, principal axes and moments of the surface.

    -> centroid (3,), axes (3, 3) with axes as columns sorted by decreasing moment, moments (3,)
    """
    v, f = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    a = geo.face_areas(v, f)
    c = v[f].mean(axis=1)
    w = a / a.sum()
    centroid = (c * w[:, None]).sum(axis=0)
    d = c - centroid
    cov = (d * w[:, None]).T @ d
    moments, axes = np.linalg.eigh(cov)
    order = np.argsort(moments)[::-1]
    return centroid, axes[:, order], moments[order]


def solid_frame(mesh: Mesh) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`principal_frame`, refusing a surface too flat to be whitened (a moment near zero)."""
    c, axes, moments = principal_frame(mesh)
    if not moments[-1] > FLAT_MOMENT_RATIO * max(moments[0], 1e-300):
        raise MeshError(mesh.name, "flat or degenerate (its surface spans fewer than 3 "
                        "dimensions), so it cannot be whitened")
    return c, axes, moments


def _proper_signed_permutations() -> list[np.ndarray]:
    """The 24 rotation matrices that permute and flip coordinate axes."""
    mats = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            m = np.zeros((3, 3))
            m[np.arange(3), perm] = signs
            if np.linalg.det(m) > 0:
                mats.append(m)
    return mats


def _start_turns(moments_a: np.ndarray, moments_b: np.ndarray) -> list[np.ndarray]:
    """Turns (3, 3), in principal-frame coordinates, composed with each of the 24 starts.

    The identity, plus 30 and 60 degrees about every principal axis that is set only by nearly
    equal moments of the two others, in either shape. -> list of rotation matrices
    """
    turns = [np.eye(3)]
    for axis in range(3):
        others = [i for i in range(3) if i != axis]
        if any(_nearly_equal(m[others[0]], m[others[1]]) for m in (moments_a, moments_b)):
            turns += [Rotation.from_rotvec(np.radians(deg) * np.eye(3)[axis]).as_matrix()
                      for deg in ROUND_TURNS_DEG]
    return turns


def _nearly_equal(m1: float, m2: float) -> bool:
    """Whether two principal moments (variances) are within `ROUND_SD_RATIO` in standard
    deviation."""
    lo, hi = sorted((float(m1), float(m2)))
    return hi <= ROUND_SD_RATIO**2 * max(lo, 1e-300)


def similarity_fit(src: np.ndarray, dst: np.ndarray, *, scale: bool) -> tuple[np.ndarray, float]:
    """Least-squares rotation, translation (and scale) mapping `src` onto `dst` (Umeyama, 1991).

    src, dst: (N, 3) paired points -> matrix (4, 4), scale
    """
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[2, 2] = -1.0
    rot = u @ e @ vt
    var_s = (s0**2).sum() / len(src)
    k = float((sig * np.diag(e)).sum() / var_s) if scale and var_s > 0 else 1.0
    m = np.eye(4)
    m[:3, :3] = k * rot
    m[:3, 3] = mu_d - k * rot @ mu_s
    return m, k


def relaxed_rigid_step(src: np.ndarray, dst: np.ndarray, relaxation: float) -> np.ndarray:
    """One over-relaxed Procrustes step of paired points `src` towards `dst` (N, 3 each).

    The least-squares rotation of `src` onto `dst` has its angle multiplied by `relaxation`
    (1 = plain Procrustes) about the centroid of `src`, which then moves onto the centroid of
    `dst`. Over-relaxation speeds up an iteration whose pairs follow the moving shape (each
    plain step then recovers only part of the misalignment); too large a factor overshoots.
    -> (4, 4) rigid map
    """
    if not relaxation > 0:
        raise ValueError(f"relaxation must be positive, got {relaxation}")
    fit, _ = similarity_fit(src, dst, scale=False)
    rotvec = Rotation.from_matrix(fit[:3, :3]).as_rotvec() * relaxation
    c_src, c_dst = src.mean(axis=0), dst.mean(axis=0)
    m = rotation_about(Rotation.from_rotvec(rotvec).as_matrix(), c_src)
    m[:3, 3] += c_dst - c_src
    return m


def _apply(m: np.ndarray, p: np.ndarray) -> np.ndarray:
    return p @ m[:3, :3].T + m[:3, 3]


def _pair_rms(d1: np.ndarray, d2: np.ndarray) -> float:
    """RMS of two sets of closest-point distances, one each way. d1: (V,), d2: (T,) -> float"""
    return float(np.sqrt((np.sum(d1**2) + np.sum(d2**2)) / (len(d1) + len(d2))))


def symmetric_rms(points: np.ndarray, reference: np.ndarray, *,
                  reference_tree: cKDTree | None = None) -> float:
    """Symmetric RMS closest-point distance between two point sets (V, 3) and (T, 3)."""
    d1, _ = (reference_tree or cKDTree(reference)).query(points)
    d2, _ = cKDTree(points).query(reference)
    return _pair_rms(d1, d2)


def symmetric_icp(
    src: np.ndarray,
    dst: np.ndarray,
    init: np.ndarray,
    *,
    scale: bool = False,
    iterations: int = FINE_ITERATIONS,
    src_tree: cKDTree | None = None,
    dst_tree: cKDTree | None = None,
) -> tuple[np.ndarray, float, float]:
    """Symmetric point-to-point ICP from `init`.

    src: (N, 3), dst: (M, 3), init: (4, 4) -> matrix (4, 4), scale, rms
    """
    src_tree = src_tree or cKDTree(src)
    dst_tree = dst_tree or cKDTree(dst)
    m = init.copy()
    k = float(np.cbrt(abs(np.linalg.det(m[:3, :3]))))
    prev = np.inf
    rms = np.inf
    for _ in range(iterations):
        moved = _apply(m, src)
        d1, j1 = dst_tree.query(moved)
        inv = np.linalg.inv(m)
        d2, j2 = src_tree.query(_apply(inv, dst))
        pairs_src = np.concatenate([src, src[j2]])
        pairs_dst = np.concatenate([dst[j1], dst])
        rms = _pair_rms(d1, d2 * k)
        m, k = similarity_fit(pairs_src, pairs_dst, scale=scale)
        if abs(prev - rms) <= ICP_TOLERANCE * max(rms, 1e-12):
            break
        prev = rms
    return m, k, symmetric_rms(_apply(m, src), dst, reference_tree=dst_tree)


def _subsample(p: np.ndarray, n: int) -> np.ndarray:
    """A deterministic, spatially even subsample (every k-th point of a Morton-free stride)."""
    if len(p) <= n:
        return p
    idx = np.linspace(0, len(p) - 1, n).round().astype(int)
    return p[idx]


def _map(fn, items: list, workers: int) -> list:
    """[fn(x) for x in items], on `workers` threads when more than 1 (in order; the ICP runs
    spend most of their time in cKDTree queries, which release the GIL)."""
    if workers <= 1 or len(items) < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def _axis_mismatch(sd_shape: np.ndarray, sd_reference: np.ndarray, perms: list) -> np.ndarray:
    """For each start (signed permutation `p`, reference axis i <- shape axis argmax|p[i]|),
    the largest ratio (>= 1) between the standard deviations it pairs. -> (len(perms),)"""
    out = []
    for p in perms:
        paired = sd_shape[np.abs(p).argmax(axis=1)]
        ratio = np.maximum(paired, 1e-300) / np.maximum(sd_reference, 1e-300)
        out.append(float(np.max(np.maximum(ratio, 1.0 / ratio))))
    return np.array(out)


def align_to_reference(mesh: Mesh, reference: Mesh, *, scale: bool = False,
                       workers: int = 1, axis_sd_ratio: float | None = None,
                       finalist_rms_ratio: float | None = None) -> Alignment:
    """Align `mesh` onto `reference` (rigid, or similarity with `scale=True`).

    Tries the 24 principal-frame rotations (each also turned in 30-degree steps about an axis
    that nearly equal moments leave undetermined) with a short coarse similarity ICP, continues
    the best few, refines the finalists at full resolution (rigid unless `scale`) and keeps
    the one that fits best; the result does not depend on the shape's initial orientation (so
    180-degree flips are undone).
    workers: threads for the independent ICP runs of each stage (the same result for any
    number; 1 where the caller already runs shapes in parallel, as grooming does).
    axis_sd_ratio: skip the starts that pair a principal axis of the shape with one of the
    reference whose standard deviation (the shape's scaled by the search's initial size
    ratio) differs by more than this factor; the best pairing stays even when every one is
    beyond it (None: try all 24).
    finalist_rms_ratio: refine at full resolution only the finalists whose coarse RMS is within
    this factor of the best one's (the best always; None: all `FINALISTS` per turn).
    """
    c_s, ax_s, mo_s = principal_frame(mesh)
    c_r, ax_r, mo_r = principal_frame(reference)
    turns = _start_turns(mo_s, mo_r)
    # The search always allows a scale: a larger or smaller shape then still finds the rotation
    # that matches its form (rigid ICP between shapes of different size flipped nearly symmetric
    # left ventricles by 180 degrees). The final refinement uses the requested mode.
    k0 = float(np.sqrt(reference.area / mesh.area))
    src_all = np.asarray(mesh.vertices)
    dst_all = np.asarray(reference.vertices)
    src, dst = _subsample(src_all, COARSE_POINTS), _subsample(dst_all, COARSE_POINTS)
    src_tree, dst_tree = cKDTree(src), cKDTree(dst)
    starts = []
    perms = _proper_signed_permutations()
    if axis_sd_ratio is not None:
        mismatch = _axis_mismatch(k0 * np.sqrt(np.maximum(mo_s, 0.0)),
                                  np.sqrt(np.maximum(mo_r, 0.0)), perms)
        limit = max(axis_sd_ratio, float(mismatch.min()))
        perms = [p for p, x in zip(perms, mismatch) if x <= limit]
    for p in perms:
        for turn in turns:
            rot = ax_r @ p @ turn @ ax_s.T
            init = np.eye(4)
            init[:3, :3] = k0 * rot
            init[:3, 3] = c_r - k0 * rot @ c_s
            starts.append(init)
    # Successive halving: a few ICP steps from every start, then only the best go on (as many
    # more as there are turns, so the extra starts add candidates instead of crowding them out).
    keeps = ((len(starts), SCREEN_ITERATIONS), (SCREEN_KEEP * len(turns), COARSE_ITERATIONS))
    for keep, iters in keeps:
        runs = _map(lambda m0, iters=iters: symmetric_icp(
            src, dst, m0, scale=True, iterations=iters, src_tree=src_tree, dst_tree=dst_tree),
            starts[:keep], workers)
        order = sorted(range(len(runs)), key=lambda i: (runs[i][2], i))
        starts = [runs[i][0] for i in order]
        coarse_rms = [runs[i][2] for i in order]
    # The finalists are refined at full resolution before the choice: near-symmetric shapes
    # (left ventricles) have basins whose coarse RMS differs by well under 1%.
    finalists = []
    for m0, rms0 in zip(starts[:FINALISTS * len(turns)], coarse_rms):
        if finalist_rms_ratio is not None and rms0 > finalist_rms_ratio * coarse_rms[0]:
            break
        m0 = m0.copy()
        if not scale:
            m0[:3, :3] /= np.cbrt(np.linalg.det(m0[:3, :3]))
        finalists.append(m0)
    tree_all, reference_tree_all = cKDTree(src_all), cKDTree(dst_all)
    finals = _map(lambda m0: symmetric_icp(src_all, dst_all, m0, scale=scale,
                                           iterations=FINE_ITERATIONS, src_tree=tree_all,
                                           dst_tree=reference_tree_all), finalists, workers)
    m, k, rms = min(finals, key=lambda r: r[2])
    return Alignment(matrix=m, scale=k, rms=rms)


def rotation_about(rotation: np.ndarray, center: np.ndarray) -> np.ndarray:
    """The (4, 4) rotation by `rotation` (3, 3) that keeps `center` (3,) fixed."""
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = rotation, np.asarray(center) - rotation @ np.asarray(center)
    return m


def translation(offset: np.ndarray) -> np.ndarray:
    """A (4, 4) homogeneous translation by `offset` (3,)."""
    m = np.eye(4)
    m[:3, 3] = offset
    return m


def _psd_power(c: np.ndarray, power: float) -> np.ndarray:
    """A symmetric positive (semi-)definite matrix (3, 3) to a real power, e.g. -0.5. -> (3, 3)"""
    w, u = np.linalg.eigh(c)
    return (u * np.maximum(w, 1e-300) ** power) @ u.T


def _colour_icp(w: np.ndarray, colour: np.ndarray, template: np.ndarray, tree: cKDTree,
                init: np.ndarray, iterations: int) -> np.ndarray:
    """Rotation q of whitened points `w` (V, 3) such that the coloured shape
    `(w @ q.T) @ colour.T` fits `template` (T, 3).

    Closest points are taken in the coloured space (both ways) and mapped back through `colour`,
    where the rotation is solved by Procrustes. That solve minimises the whitened, not the
    coloured, residual of the pairs: an approximation (exact when `colour` is isotropic) that
    converges in practice; the loop also stops after `iterations`. -> (3, 3)
    """
    back = np.linalg.inv(colour)
    q = init
    prev = np.inf
    for _ in range(iterations):
        y = w @ (colour @ q).T
        d1, j1 = tree.query(y)
        d2, j2 = cKDTree(y).query(template)
        src = np.concatenate([w, w[j2]])
        dst = np.concatenate([template[j1], template]) @ back.T
        q = similarity_fit(src, dst, scale=False)[0][:3, :3]
        rms = _pair_rms(d1, d2)
        if abs(prev - rms) <= ICP_TOLERANCE * max(rms, 1e-12):
            break
        prev = rms
    return q


def consensus_rotations(meshes: list[Mesh], *, rounds: int, cells: int = CONSENSUS_CELLS,
                        progress=None) -> list[np.ndarray]:
    """Rotations (about each shape's centroid) that align already roughly aligned shapes to
    their consensus, generalised-Procrustes style, without point correspondences.

    Sizes and proportions differ most between shapes and pull a plain ICP: a longer or rounder
    ventricle fits best slightly tilted. So each shape is first normalised to the cohort's
    mean second moments: whitened by its own covariance S (w = S^(-1/2) x, which commutes with
    rotations), rotated, then coloured by the cohort's mean covariance C (y = C^(1/2) R w). Every
    normalised shape then has covariance C whatever R, so second moments carry no rotation
    information: the fit rests on the rest of the form (apex, base, bumps), with closest points
    measured as on a shape of typical proportions (whitening alone, without colouring, made a
    test shape nearly symmetric and lost its rotation). The shared rotation left free by
    aligning shapes only to each other is removed at the end (mean rotation = identity), so the
    cohort keeps the frame of its initial alignment. Each round
    re-fits every shape's rotation R (`_colour_icp`) onto the consensus of the others: the 0.5
    level set of the mean occupancy of their normalised shapes (occupancy by the generalised
    winding number, so open surfaces count too). Needs at least 2 shapes (3 for a consensus).
    -> one (3, 3) rotation per mesh.
    progress: called with 1 after each shape of each round.
    """
    import igl
    from skimage.measure import marching_cubes

    if len(meshes) < 2:
        raise ValueError(f"a consensus needs at least 2 shapes, got {len(meshes)}")
    frames = [solid_frame(m) for m in meshes]
    covs = [(ax * mo) @ ax.T for _, ax, mo in frames]
    # Whitening commutes with rotations: whitening the rotated shape gives the rotated w.
    white = [(np.asarray(m.vertices) - f[0]) @ _psd_power(c, -0.5).T
             for m, f, c in zip(meshes, frames, covs)]
    faces = [np.asarray(m.faces, dtype=np.int64) for m in meshes]
    rots = [np.eye(3) for _ in meshes]
    for _ in range(rounds):
        colour = _psd_power(np.mean([r @ c @ r.T for r, c in zip(rots, covs)], axis=0), 0.5)
        moved = [w @ (colour @ r).T for w, r in zip(white, rots)]
        allp = np.concatenate(moved)
        pad = 0.05 * float(np.ptp(allp, axis=0).max())
        lo, hi = allp.min(axis=0) - pad, allp.max(axis=0) + pad
        pitch = float((hi - lo).max()) / cells
        shape = np.ceil((hi - lo) / pitch).astype(int) + 1
        grid = np.stack(np.meshgrid(*[np.arange(k) for k in shape], indexing="ij"), -1)
        grid = grid.reshape(-1, 3) * pitch + lo
        total = np.zeros(len(grid))
        inside = []  # bit-packed: 1/8 byte per cell and shape
        for p, f in zip(moved, faces):
            occ = np.abs(igl.fast_winding_number(np.ascontiguousarray(p), f, grid)) >= 0.5
            total += occ
            inside.append(np.packbits(occ))
        for i, w in enumerate(white):
            # Leave-one-out: a shape's own occupancy would hold the consensus near its pose.
            own = np.unpackbits(inside[i], count=len(grid))
            occ = (total - own) / (len(meshes) - 1)
            if not occ.min() < 0.5 < occ.max():
                raise ShapeAtlasError(
                    "consensus alignment: the other shapes never overlap enough to define a "
                    "consensus surface (open or very dissimilar shapes?)")
            tv = marching_cubes(occ.reshape(tuple(shape)), 0.5, spacing=(pitch,) * 3)[0] + lo
            rots[i] = _colour_icp(w, colour, tv, cKDTree(tv), rots[i], FINE_ITERATIONS)
            if progress:
                progress(1)
    shared = Rotation.from_matrix(np.array(rots)).mean().as_matrix()
    return [shared.T @ r for r in rots]
