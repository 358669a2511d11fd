"""Rigid or similarity alignment of a surface to a reference without known correspondences.

Principal axes give a start, but their signs and (for nearly equal moments) their order are
arbitrary, the classic cause of 180-degree flips. So every one of the 24 rotations that map the
shape's principal frame onto the reference's (all signed axis permutations with determinant +1) is
tried with a short, coarse ICP, and the best is refined at full resolution.

The ICP here is symmetric (closest points are taken from the shape to the reference *and* back),
which resists the pull of partial overlap better than trimesh's one-directional
`registration.icp`; it is small enough to keep in-house. Nearest neighbours use scipy's cKDTree.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from shapeatlas.mesh import geometry as geo
from shapeatlas.mesh.core import Mesh

#: Points used per shape in the coarse multi-start search.
COARSE_POINTS = 1000
#: ICP iterations from each of the 24 starts, how many starts survive, and their further steps.
SCREEN_ITERATIONS = 8
SCREEN_KEEP = 8
COARSE_ITERATIONS = 15
#: Candidates refined at full resolution before the best is chosen.
FINALISTS = 3
FINE_ITERATIONS = 60
#: Relative change of the RMS distance below which ICP stops.
ICP_TOLERANCE = 1e-6


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


def _apply(m: np.ndarray, p: np.ndarray) -> np.ndarray:
    return p @ m[:3, :3].T + m[:3, 3]


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
        rms = float(np.sqrt((np.sum(d1**2) + np.sum((d2 * k) ** 2)) / (len(d1) + len(d2))))
        m, k = similarity_fit(pairs_src, pairs_dst, scale=scale)
        if abs(prev - rms) <= ICP_TOLERANCE * max(rms, 1e-12):
            break
        prev = rms
    moved = _apply(m, src)
    d1, _ = dst_tree.query(moved)
    d2, _ = cKDTree(moved).query(dst)
    rms = float(np.sqrt((np.sum(d1**2) + np.sum(d2**2)) / (len(d1) + len(d2))))
    return m, k, rms


def _subsample(p: np.ndarray, n: int) -> np.ndarray:
    """A deterministic, spatially even subsample (every k-th point of a Morton-free stride)."""
    if len(p) <= n:
        return p
    idx = np.linspace(0, len(p) - 1, n).round().astype(int)
    return p[idx]


def align_to_reference(mesh: Mesh, reference: Mesh, *, scale: bool = False) -> Alignment:
    """Align `mesh` onto `reference` (rigid, or similarity with `scale=True`).

    Tries the 24 principal-frame rotations with a short coarse similarity ICP, continues the
    best few and refines the winner at full resolution (rigid unless `scale`); the result does not depend on the shape's initial
    orientation (so 180-degree flips are undone).
    """
    c_s, ax_s, _ = principal_frame(mesh)
    c_r, ax_r, _ = principal_frame(reference)
    # The search always allows a scale: a larger or smaller shape then still finds the rotation
    # that matches its form (rigid ICP between shapes of different size flipped nearly symmetric
    # left ventricles by 180 degrees). The final refinement uses the requested mode.
    k0 = float(np.sqrt(reference.area / mesh.area))
    src_all = np.asarray(mesh.vertices)
    dst_all = np.asarray(reference.vertices)
    src, dst = _subsample(src_all, COARSE_POINTS), _subsample(dst_all, COARSE_POINTS)
    src_tree, dst_tree = cKDTree(src), cKDTree(dst)
    starts = []
    for p in _proper_signed_permutations():
        rot = ax_r @ p @ ax_s.T
        init = np.eye(4)
        init[:3, :3] = k0 * rot
        init[:3, 3] = c_r - k0 * rot @ c_s
        starts.append(init)
    # Successive halving: a few ICP steps from every start, then only the best go on.
    for keep, iters in ((len(starts), SCREEN_ITERATIONS), (SCREEN_KEEP, COARSE_ITERATIONS)):
        runs = [symmetric_icp(src, dst, m0, scale=True, iterations=iters,
                              src_tree=src_tree, dst_tree=dst_tree) for m0 in starts[:keep]]
        order = sorted(range(len(runs)), key=lambda i: (runs[i][2], i))
        starts = [runs[i][0] for i in order]
    # The finalists are refined at full resolution before the choice: near-symmetric shapes
    # (left ventricles) have basins whose coarse RMS differs by well under 1%.
    finals = []
    for m0 in starts[:FINALISTS]:
        m0 = m0.copy()
        if not scale:
            m0[:3, :3] /= np.cbrt(np.linalg.det(m0[:3, :3]))
        finals.append(symmetric_icp(src_all, dst_all, m0, scale=scale, iterations=FINE_ITERATIONS))
    m, k, rms = min(finals, key=lambda r: r[2])
    return Alignment(matrix=m, scale=k, rms=rms)


def translation(offset: np.ndarray) -> np.ndarray:
    """A (4, 4) homogeneous translation by `offset` (3,)."""
    m = np.eye(4)
    m[:3, 3] = offset
    return m
