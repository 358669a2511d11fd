"""Non-rigid Coherent Point Drift (Myronenko & Song, IEEE TPAMI 2010), vectorised, low-rank.

Our own implementation rather than `pycpd`: pycpd solves the full M x M system every iteration
and took 72 s for one 2.8k-vertex pair on the 2-core CI machine (see shared/STACK.md); with the
low-rank Gaussian kernel (the paper's "fast CPD", eigenvectors of G computed once per moving
point set) and float32 posteriors, one 1.5k-atlas onto 2k-vertex registration takes about a
second here.

Moving points Y (M, 3) are deformed as T(Y) = Y + G W, G_ij = exp(-|y_i - y_j|^2 / (2 beta^2)),
to fit target points X (N, 3) by EM on a Gaussian mixture with a uniform outlier term of weight
w; lambda weighs the motion-coherence prior. Both sets are expressed in the target's normalised
units (centroid, RMS radius) so beta and lambda do not depend on the organ's size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: sigma^2 never drops below this (normalised units), which keeps the posteriors finite.
MIN_SIGMA2 = 1e-8


@dataclass(frozen=True)
class CPDResult:
    """moved: (M, 3) T(Y) in the target's frame; posterior: (M, N) float32 P(m | x_n);
    sigma2: final variance (target's units squared); iterations run."""

    moved: np.ndarray
    posterior: np.ndarray
    sigma2: float
    iterations: int


@dataclass(frozen=True)
class LowRankKernel:
    """G ~= Q diag(L) Q^T for a moving point set (compute once, reuse for every target).
    q: (M, R), values: (R,)."""

    q: np.ndarray
    values: np.ndarray

    @staticmethod
    def of(points: np.ndarray, *, beta: float, rank: int) -> "LowRankKernel":
        y = np.asarray(points, dtype=np.float64)
        d2 = np.square(y[:, None, :] - y[None, :, :]).sum(axis=2)
        g = np.exp(-d2 / (2.0 * beta**2))
        vals, vecs = np.linalg.eigh(g)
        keep = np.argsort(-vals)[: min(rank, len(y))]
        return LowRankKernel(q=vecs[:, keep], values=np.maximum(vals[keep], 1e-12))


def normalising_frame(points: np.ndarray) -> tuple[np.ndarray, float]:
    """(centroid (3,), RMS radius) of a point set."""
    x = np.asarray(points, dtype=np.float64)
    c = x.mean(axis=0)
    return c, float(np.sqrt(np.square(x - c).sum(axis=1).mean()))


def cpd_nonrigid(moving: np.ndarray, target: np.ndarray, *, kernel: LowRankKernel,
                 lam: float = 2.0, w: float = 0.0, iterations: int = 100,
                 tolerance: float = 1e-5, start: np.ndarray | None = None,
                 sigma2: float | None = None) -> CPDResult:
    """Deform `moving` (M, 3) onto `target` (N, 3); both already in the same normalised units
    that `kernel` was built in (see `normalising_frame`).

    start: (M, 3) positions of the moving points for the first E-step (default: `moving`),
    e.g. a match found otherwise; sigma2: the first E-step's variance (default: the mean
    squared distance between the two sets, CPD's own start). The deformation is still of
    `moving`: T(Y) = Y + G W."""
    y = np.asarray(moving, dtype=np.float64)
    x = np.asarray(target, dtype=np.float64)
    m, n = len(y), len(x)
    q, lv = kernel.q, kernel.values
    ty = y.copy() if start is None else np.array(start, dtype=np.float64)
    if sigma2 is None:
        sigma2 = float(np.square(x[None, :, :] - ty[:, None, :]).sum() / (3.0 * m * n))
    x32 = x.astype(np.float32)
    xx = np.square(x).sum(axis=1)
    p = np.zeros((m, n), dtype=np.float32)
    it = 0
    for it in range(1, iterations + 1):
        ty32 = ty.astype(np.float32)
        d2 = (np.square(ty32).sum(axis=1)[:, None] + xx.astype(np.float32)[None, :]
              - 2.0 * ty32 @ x32.T)
        np.maximum(d2, 0.0, out=d2)
        p = np.exp(-d2 / np.float32(2.0 * sigma2))
        c = (2.0 * np.pi * sigma2) ** 1.5 * (w / (1.0 - w)) * m / n if w > 0 else 0.0
        den = p.sum(axis=0) + np.float32(c)
        p /= np.maximum(den, np.float32(np.finfo(np.float32).tiny))[None, :]
        p1 = p.sum(axis=1).astype(np.float64)
        pt1 = p.sum(axis=0).astype(np.float64)
        px = (p @ x32).astype(np.float64)
        np_sum = float(p1.sum())
        s = lam * sigma2
        dpy = px - p1[:, None] * y
        inner = s * np.diag(1.0 / lv) + q.T @ (p1[:, None] * q)
        wmat = (dpy - p1[:, None] * (q @ np.linalg.solve(inner, q.T @ dpy))) / s
        ty = y + q @ (lv[:, None] * (q.T @ wmat))
        new = (float(pt1 @ xx) - 2.0 * float(np.sum(px * ty))
               + float(p1 @ np.square(ty).sum(axis=1))) / (3.0 * np_sum)
        new = max(new, MIN_SIGMA2)
        done = abs(sigma2 - new) <= tolerance * sigma2
        sigma2 = new
        if done:
            break
    return CPDResult(moved=ty, posterior=p, sigma2=sigma2, iterations=it)
