"""Training losses: differentiable Chamfer distance, the VAE's KL term and L1 reconstruction.

The Chamfer distance finds nearest neighbours with scipy's cKDTree on detached CPU copies (an
O(n log n) search with no gradient of its own), then recomputes the matched distances in torch on
the inputs' device, so gradients flow to both point sets. The nearest-neighbour assignment is
piecewise constant, so this is the exact gradient wherever the assignment does not change. It is
about 10x faster and 8x leaner than a chunked `torch.cdist` with autograd (see STACK.md).

Shapes: `V` points of one set, `K` of the other (e.g. atlas vertices), `N` vertices, `C`
channels, `D` latent size.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

__all__ = ["chamfer_loss", "kl_divergence", "l1_reconstruction"]

#: Log-variances are clipped to this range before exponentiating (as in `GraphVAE`'s sampling).
LOGVAR_MIN = -30.0
LOGVAR_MAX = 20.0


def _points_numpy(p: Tensor, what: str) -> np.ndarray:
    if p.ndim != 2 or p.shape[1] != 3 or p.shape[0] == 0:
        raise ValueError(f"{what} must be a non-empty (n, 3) tensor, got {tuple(p.shape)}")
    arr = p.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} holds NaN or infinite coordinates")
    return arr


def _weighted_mean(values: Tensor, weights: Tensor | None, what: str) -> Tensor:
    if weights is None:
        return values.mean()
    w = weights.to(device=values.device, dtype=values.dtype)
    if w.shape != values.shape:
        raise ValueError(
            f"{what} must have shape {tuple(values.shape)} (one per point), got {tuple(w.shape)}"
        )
    total = w.sum()
    if not bool(total > 0) or bool((w < 0).any()):
        raise ValueError(f"{what} must be non-negative with a positive sum")
    return (w * values).sum() / total


def _sqrt_zero_safe(sq: Tensor) -> Tensor:
    """sqrt with gradient 0 (not inf * 0 = NaN) where sq == 0; exact values, no epsilon."""
    positive = sq > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, sq, torch.ones_like(sq))), 0.0)


def chamfer_loss(
    a: Tensor,
    b: Tensor,
    *,
    weights_a: Tensor | None = None,
    weights_b: Tensor | None = None,
    squared: bool = True,
    tree_a: cKDTree | None = None,
) -> Tensor:
    """Symmetric Chamfer distance: the mean of the two directed mean nearest-point distances.

    0.5 * (mean_i d(a_i, b) + mean_j d(b_j, a)), with d the squared Euclidean distance to the
    nearest point (`squared=True`, the default: smooth, the usual training loss, in squared units)
    or the distance itself (`squared=False`: in mesh units, more robust to outliers). Optional
    weights (e.g. vertex areas, to make the loss independent of the sampling) turn each directed
    mean into a weighted mean.

    Parameters
    ----------
    a: (V, 3) points; b: (K, 3) points, on one device.
    weights_a: (V,) non-negative weights of a's points; weights_b: (K,) of b's.
    squared: squared (default) or plain Euclidean distances.
    tree_a: a cKDTree of `a`'s points, when the caller holds one (a fixed `a` over many calls,
    as in the test-time pull); built here otherwise.

    Returns
    -------
    Scalar tensor on the inputs' device and in their (promoted) dtype, differentiable w.r.t. a, b.
    """
    if a.device != b.device:
        raise ValueError(f"a and b must be on one device, got {a.device} and {b.device}")
    a_np, b_np = _points_numpy(a, "a"), _points_numpy(b, "b")
    _, nn_ab = cKDTree(b_np).query(a_np, k=1)  # for each point of a, its nearest in b
    _, nn_ba = (cKDTree(a_np) if tree_a is None else tree_a).query(b_np, k=1)
    nn_ab = torch.as_tensor(nn_ab, dtype=torch.long, device=a.device)
    nn_ba = torch.as_tensor(nn_ba, dtype=torch.long, device=a.device)
    d_ab = (a - b.index_select(0, nn_ab)).square().sum(dim=1)
    d_ba = (b - a.index_select(0, nn_ba)).square().sum(dim=1)
    if not squared:
        d_ab, d_ba = _sqrt_zero_safe(d_ab), _sqrt_zero_safe(d_ba)
    mean_ab = _weighted_mean(d_ab, weights_a, "weights_a")
    mean_ba = _weighted_mean(d_ba, weights_b, "weights_b")
    return 0.5 * (mean_ab + mean_ba)


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over the latent channels, mean over vertices.

    mu, logvar: (N, D) (or any shape whose last axis is D) -> scalar. Summing over D makes it the
    per-vertex KL of the whole latent vector (the usual VAE/beta-VAE convention, so beta means the
    same at any D); it is zero exactly when mu = 0 and logvar = 0.
    """
    if mu.shape != logvar.shape or mu.ndim == 0:
        raise ValueError(
            "mu and logvar must have one shape (N, D), got "
            f"{tuple(mu.shape)} and {tuple(logvar.shape)}"
        )
    lv = logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)
    per_vertex = 0.5 * (mu.square() + lv.exp() - 1.0 - lv).sum(dim=-1)
    return per_vertex.mean()


def l1_reconstruction(recon: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over all entries. recon, target: (N, C) -> scalar."""
    if recon.shape != target.shape:
        raise ValueError(
            f"recon {tuple(recon.shape)} and target {tuple(target.shape)} must have one shape"
        )
    return (recon - target.to(recon.dtype)).abs().mean()
