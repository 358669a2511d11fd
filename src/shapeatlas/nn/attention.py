"""Soft correspondence between atlas and shape vertices by attention on their embeddings.

For every atlas vertex k, the weights over a shape's vertices are

    a_kv = softmax_v(lambda * cos(e_k, f_v)),

and the atlas vertex is placed at the weighted mean of the shape's points, p_k = sum_v a_kv P_v
(the rows of A^T P in Atlas-R-ASMG's notation, arXiv 2403.06317). A large sharpness lambda (1e4 in
the paper) makes the assignment nearly hard while keeping it differentiable.

The K x V weight matrix is never built whole: atlas vertices are processed in chunks whose
(chunk, V) buffers fit a memory budget (`rows_per_chunk`). Without autograd, one (chunk, V) buffer
is reused in place by every chunk. Under autograd, each chunk's softmax would still be kept for the
backward pass (K x V again), so `checkpoint=True` recomputes each chunk during backward instead
(`torch.utils.checkpoint`, non-reentrant), which bounds the backward's memory too. The hard
assignment `best_atlas_vertex` is found in chunks of shape vertices, also within the budget.

Balanced transport (`transport_iterations` > 0, an addition to the paper's method): the row
softmax lets many atlas vertices pick the same few shape vertices where the embeddings are least
distinctive, and leaves other parts of the shape unused; the correspondence then slides along
the surface. With transport, the weights become

    a_kv = softmax_v(lambda * cos(e_k, f_v) + g_v),

where the per-shape-vertex potential g is found by Sinkhorn iterations (log domain) so that the
plan m_k a_kv carries the atlas's vertex masses m (area weights) onto the shape's vertex masses
(area weights): entropic optimal transport between the two surfaces with cost -cos. Each shape
region then receives as many atlas vertices as its area calls for. g is computed without
autograd; gradients, if any, flow through the cosines as before. With lambda = 300 and 30
iterations, a trained model's attention + smoothing error fell from 1.70 to 1.50 mm on 50
synthetic kidneys and from 3.86 to 3.62 mm on 50 synthetic LVs (docs/results.md). When the
(K, V) block fits half the memory budget it is kept and the iterations cost two matrix-vector
products each; otherwise it is recomputed in chunks every iteration.

Over-relaxation (`transport_relaxation` omega > 1): each Sinkhorn step moves the potentials
omega times as far as the plain step, f <- (1 - omega) f + omega f_sinkhorn (and g alike),
which has the same fixed point and approaches it in fewer iterations (Thibault et al.,
"Overrelaxed Sinkhorn-Knopp algorithm for regularized optimal transport", 2021; omega in
(1, 2) converges locally). At lambda 300 the iterations stop well before convergence (with a
trained 50-LV model, the matched points after 100 plain iterations lay 0.53 mm, mean, from
those after 300), so the iteration count is part of the method: 30 steps at omega 1.5 came
closest to 100 plain ones (0.05 mm mean; 40 at 1.5: 0.09 mm, 50: 0.20 mm) with 30% of the
iterations (docs/results.md).

Numerics: the logits reach +-lambda (1e4); `torch.softmax` subtracts the row maximum, so nothing
overflows, and the float32 rounding of a cosine (~6e-8) moves a logit by < 1e-3, which changes the
weights by < 0.1 %. Weights below float32's smallest normal number (e^-87 of the row's
largest) are set to exactly 0 rather than computed as slow subnormals
(`_shift_drop_subnormal_`).
Half-precision inputs are computed in float32. On GPUs with TF32 matrix
products enabled (`torch.set_float32_matmul_precision("high")`), the cosines carry only ~3 digits
and the logits move by up to ~10 at lambda = 1e4: keep "highest" precision around this call.

Shapes: `K` atlas vertices, `V` shape vertices, `D` embedding size.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint as _checkpoint

__all__ = ["AttentionMatch", "attention_correspondence", "rows_per_chunk", "transport_potential"]

#: Embedding norms below this are treated as this when normalising for the cosine similarity.
COSINE_EPS = 1e-8
#: (rows x columns) buffers one chunk may hold at once under autograd: logits, weights and, in
#: the backward pass, their two gradients (without autograd a single one, reused in place).
#: The chunk size is budget / (this * columns * bytes per element).
BUFFERS_PER_ROW = 4
#: Smallest denominator, and 1 / largest scaling, of the kernel-form Sinkhorn iterations.
TRANSPORT_TINY = 1e-30
#: Kernel-form Sinkhorn iterations between two absorptions of the scaling into the potential
#: (each recomputes the (K, V) kernel, 40% of 100 iterations' time at 10; with trained 50-LV
#: and kidney models, 25 moved the matched points by under 3e-5 mm against 10, 50 by up to
#: 0.3 mm: pairs whose kernel underflowed came back too late).
TRANSPORT_ABSORB_EVERY = 25
#: Bound on |log| of the kernel-form scalings, and on |f_k - f_k'| of over-relaxed steps in
#: the log domain (e^69 ~ 1 / TRANSPORT_TINY): over-relaxation extrapolates, and an unbounded
#: step could leave float32's range.
TRANSPORT_LOG_BOUND = -math.log(TRANSPORT_TINY)


@dataclass(frozen=True, eq=False)
class AttentionMatch:
    """Where each atlas vertex lands on a shape, and how sure the attention is.

    points: (K, 3) soft-corresponded positions A^T P.
    confidence: (K,) the largest attention weight of each atlas vertex, in (0, 1]; 1 means the
        weights are all on one shape vertex.
    best_atlas_vertex: (V,) long, for each shape vertex the atlas vertex of highest cosine.
    """

    points: Tensor
    confidence: Tensor
    best_atlas_vertex: Tensor


def rows_per_chunk(n_columns: int, *, memory_budget_mb: float, itemsize: int = 4) -> int:
    """How many rows of a (rows, n_columns) similarity block fit the memory budget (at least 1)."""
    if memory_budget_mb <= 0:
        raise ValueError(f"memory_budget_mb must be positive, got {memory_budget_mb}")
    per_row = BUFFERS_PER_ROW * max(n_columns, 1) * itemsize
    return max(1, math.floor(memory_budget_mb * 2**20 / per_row))


def _attend(atlas_rows: Tensor, shape_unit: Tensor, points: Tensor,
            bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One chunk. atlas_rows: (k, D) unit rows pre-scaled by lambda; shape_unit: (V, D);
    points: (V, 3); bias: optional (V,) added to every row's logits
    -> points (k, 3), confidence (k,)."""
    logits = atlas_rows @ shape_unit.T
    if bias is not None:
        logits = logits + bias
    # In place (the products' backward needs only their inputs); softmax is unchanged by the
    # shift, and its gradient too.
    weights = torch.softmax(_shift_drop_subnormal_(logits), dim=1)  # (k, V)
    return weights @ points, weights.amax(dim=1)


def _shift_drop_subnormal_(logits: Tensor, row_max: Tensor | None = None) -> Tensor:
    """In place: (k, V) logits minus their row maximum (so the largest exp is 1), and those
    whose exp would then be subnormal (below `finfo.tiny`, e^-87 in float32) -inf, so their
    weight is exactly 0. row_max: the rows' maxima (k,), where the caller has them already.
    -> the same tensor

    Subnormal floats are slow on x86 CPUs, and at a lambda of a few hundred or less a large
    share of the (k, V) weights falls there. On the 2-core CPU, with trained 50-LV models:
    training steps at lambda 100 took 2.22 s instead of 2.95 s (8 shapes, best of 6; 1.89 s
    against 1.83 s at lambda 1e4, where few weights are subnormal), and matching 50 LVs with
    transport (lambda 300) 10 s instead of 21 s, with the same results to 3 digits.
    `torch.set_flush_denormal` does not reach PyTorch's worker threads. The weights dropped
    are below 1e-38 of the row's largest (where subnormals are flushed to zero anyway, nothing
    changes at all)."""
    if row_max is None:
        row_max = logits.detach().amax(dim=1)
    logits.sub_(row_max[:, None])
    return F.threshold_(logits, math.log(torch.finfo(logits.dtype).tiny), -math.inf)


def _attend_in_place(
    atlas_rows: Tensor, shape_unit: Tensor, points: Tensor, buffer: Tensor,
    bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """`_attend` without autograd, in one reused (k, V) buffer: no allocator churn, one buffer."""
    w = torch.mm(atlas_rows, shape_unit.T, out=buffer[: atlas_rows.shape[0]])
    if bias is not None:
        w.add_(bias)
    _shift_drop_subnormal_(w).exp_()  # the softmax, written out
    w.div_(w.sum(dim=1, keepdim=True))
    return w @ points, w.amax(dim=1)


def attention_correspondence(
    atlas_emb: Tensor,
    shape_emb: Tensor,
    shape_points: Tensor,
    *,
    sharpness: float = 1e4,
    chunk_size: int | None = None,
    memory_budget_mb: float = 256.0,
    checkpoint: bool = False,
    transport_iterations: int = 0,
    transport_relaxation: float = 1.0,
    atlas_weights: Tensor | None = None,
    shape_weights: Tensor | None = None,
) -> AttentionMatch:
    """Soft correspondence of atlas vertices onto a shape's points by cosine attention.

    Parameters
    ----------
    atlas_emb: (K, D) embeddings of the atlas vertices.
    shape_emb: (V, D) embeddings of the shape's vertices.
    shape_points: (V, 3) positions the atlas vertices are mapped onto.
    sharpness: lambda, the inverse temperature applied to cosines in [-1, 1].
    chunk_size: atlas vertices per chunk; by default derived from V and `memory_budget_mb`.
    memory_budget_mb: bound on the similarity buffers held at once (ignored if chunk_size is given).
    checkpoint: recompute each chunk in the backward pass so that training, too, never holds more
        than one chunk of weights; without it, autograd keeps every chunk's (chunk, V) weights.
    transport_iterations: Sinkhorn iterations of the balanced-transport potential (0: the plain
        row softmax of the paper); see the module docstring.
    transport_relaxation: omega of the over-relaxed Sinkhorn steps, in [1, 2) (1: plain).
    atlas_weights, shape_weights: (K,) and (V,) non-negative vertex masses (e.g. area weights)
        for the transport; uniform when not given. Ignored without transport.

    Returns
    -------
    AttentionMatch with points (K, 3), confidence (K,) and best_atlas_vertex (V,), on the inputs'
    device; points and confidence in shape_points' dtype.

    Examples
    --------
    >>> emb = torch.eye(4)
    >>> pts = torch.arange(12.0).reshape(4, 3)
    >>> c = attention_correspondence(emb, emb[[2, 0, 3, 1]], pts[[2, 0, 3, 1]])
    >>> torch.equal(c.points, pts), c.best_atlas_vertex.tolist()
    (True, [2, 0, 3, 1])
    """
    _check(atlas_emb, shape_emb, shape_points)
    if not math.isfinite(sharpness) or sharpness <= 0:
        raise ValueError(f"sharpness must be a positive finite number, got {sharpness}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size}")
    dtype = torch.promote_types(atlas_emb.dtype, shape_emb.dtype)
    dtype = torch.promote_types(dtype, torch.float32)
    itemsize = torch.empty((), dtype=dtype).element_size()
    k, v = atlas_emb.shape[0], shape_emb.shape[0]

    atlas_unit = F.normalize(atlas_emb.to(dtype), dim=1, eps=COSINE_EPS)
    shape_unit = F.normalize(shape_emb.to(dtype), dim=1, eps=COSINE_EPS)
    pts = shape_points.to(dtype)
    # Scaling the (k, D) rows rather than the (k, V) logits saves one chunk-sized buffer.
    atlas_scaled = atlas_unit * sharpness

    rows = chunk_size or rows_per_chunk(v, memory_budget_mb=memory_budget_mb, itemsize=itemsize)
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (atlas_emb, shape_emb, shape_points)
    )
    if needs_grad and not checkpoint and rows < k:
        warnings.warn(
            f"attention_correspondence: autograd will keep all {k} x {v} attention weights "
            f"(~{k * v * itemsize / 2**20:.0f} MB) for the backward pass; pass checkpoint=True "
            "to recompute them chunk by chunk instead",
            stacklevel=2,
        )
    use_checkpoint = checkpoint and needs_grad
    bias = None
    if transport_iterations:
        bias = transport_potential(
            atlas_scaled.detach(), shape_unit.detach(),
            _log_masses(atlas_weights, k, "atlas_weights", atlas_emb.device, dtype),
            _log_masses(shape_weights, v, "shape_weights", atlas_emb.device, dtype),
            iterations=transport_iterations, relaxation=transport_relaxation,
            memory_budget_mb=memory_budget_mb)
    # Without autograd one (rows, V) buffer is reused by every chunk. Allocating a fresh one per
    # chunk lets glibc's heap grow by a chunk every few chunks (freed blocks above its mmap
    # threshold are recycled on the heap, not returned), which measured up to 10x the budget.
    buffer = None if needs_grad else atlas_scaled.new_empty(min(rows, k), v)
    out_points, out_conf = [], []
    for start in range(0, k, rows):
        block = atlas_scaled[start : start + rows]
        if buffer is not None:
            p, c = _attend_in_place(block, shape_unit, pts, buffer, bias)
        elif use_checkpoint:
            p, c = _checkpoint(_attend, block, shape_unit, pts, bias, use_reentrant=False)
        else:
            p, c = _attend(block, shape_unit, pts, bias)
        out_points.append(p)
        out_conf.append(c)

    best = _best_atlas_vertex(
        atlas_unit.detach(),
        shape_unit.detach(),
        rows=rows_per_chunk(k, memory_budget_mb=memory_budget_mb, itemsize=itemsize),
    )
    return AttentionMatch(
        points=torch.cat(out_points).to(shape_points.dtype),
        confidence=torch.cat(out_conf).to(shape_points.dtype),
        best_atlas_vertex=best,
    )


def _log_masses(w: Tensor | None, n: int, what: str, device, dtype) -> Tensor:
    """Log of masses (n,) normalised to sum 1 (uniform when `w` is None)."""
    if w is None:
        return torch.full((n,), -math.log(n), device=device, dtype=dtype)
    w = w.detach().to(device=device, dtype=dtype)
    if w.shape != (n,) or not bool(torch.isfinite(w).all()) or bool((w < 0).any()) \
            or float(w.sum()) <= 0:
        raise ValueError(f"{what} must be {n} finite non-negative masses with a positive sum, "
                         f"got shape {tuple(w.shape)}")
    return torch.log(w / w.sum())


def transport_potential(
    atlas_scaled: Tensor,
    shape_unit: Tensor,
    log_atlas_mass: Tensor,
    log_shape_mass: Tensor,
    *,
    iterations: int,
    relaxation: float = 1.0,
    memory_budget_mb: float = 256.0,
) -> Tensor:
    """Shape-side potential g of entropic transport with logits L = atlas_scaled @ shape_unit.T.

    Sinkhorn in the log domain: f_k = log m_k - logsumexp_v(L_kv + g_v), then
    g_v = log n_v - logsumexp_k(L_kv + f_k), `iterations` times, so that the plan
    exp(L + f + g) has row sums m and column sums n (the row marginals hold exactly after each
    f-step, the column ones in the limit). With `relaxation` omega > 1 every step is
    over-relaxed, f <- (1 - omega) f + omega f_new and g alike (the first f-step plain), with
    the same fixed point (module docstring). The rows of the plan, normalised, are
    softmax_v(L_kv + g_v): attention with a column bias. Computed without autograd. When the
    (K, V) logits fit in half of `memory_budget_mb` they are kept and the same iterations run
    in kernel form (scalings instead of potentials, absorbed into g every
    `TRANSPORT_ABSORB_EVERY` iterations); otherwise the logits are recomputed in chunks of
    atlas rows every iteration, in the log domain. Both give the same g (to 1e-4 for 1,500 x
    3,000 vertices at lambda 300; 30 iterations took 0.56 s kept and 3.6 s chunked on the
    2-core CPU).

    atlas_scaled: (K, D) unit embeddings times lambda; shape_unit: (V, D) unit embeddings;
    log_atlas_mass: (K,), log_shape_mass: (V,) log masses summing to 1 -> g (V,)
    """
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    if not 1.0 <= relaxation < 2.0:
        raise ValueError(f"relaxation must be in [1, 2), got {relaxation}")
    k, v = atlas_scaled.shape[0], shape_unit.shape[0]
    itemsize = atlas_scaled.element_size()
    with torch.no_grad():
        g = torch.zeros(v, device=shape_unit.device, dtype=atlas_scaled.dtype)
        if k * v * itemsize <= memory_budget_mb * 2**20 / 2:
            # Kernel form with absorption: E = exp(L + g - row max), then u = m / (E s),
            # s = n / (E^T u): two matrix-vector products per iteration (the chunked
            # log-domain loop below took 6x longer). Every TRANSPORT_ABSORB_EVERY iterations
            # the scaling s is absorbed into g and E recomputed, so pairs whose kernel
            # underflowed (e^-87) come back into reach as g grows; s is bounded so that an
            # unreached vertex stays finite.
            logits = torch.mm(atlas_scaled, shape_unit.T)
            m, n = log_atlas_mass.exp(), log_shape_mass.exp()
            u = shift = None
            done = 0
            while done < iterations:
                kernel = logits + g
                # The row maxima are kept only where the relaxed u needs them (below).
                row_max = kernel.amax(dim=1) if relaxation != 1.0 else None
                _shift_drop_subnormal_(kernel, row_max).exp_()
                if u is not None and relaxation != 1.0:
                    # The same plan in the new kernel's terms: its rows are scaled by
                    # exp(old max - new max) and the absorbed s is back to 1.
                    u = u * torch.exp((row_max - shift).clamp(-TRANSPORT_LOG_BOUND,
                                                              TRANSPORT_LOG_BOUND))
                shift = row_max
                s = torch.ones_like(g)
                for _ in range(min(TRANSPORT_ABSORB_EVERY, iterations - done)):
                    step = m / (kernel @ s).clamp_min(TRANSPORT_TINY)
                    u = step if u is None or relaxation == 1.0 else _relax(u, step, relaxation)
                    step = n / (kernel.T @ u).clamp_min(TRANSPORT_TINY)
                    s = (step if relaxation == 1.0 else _relax(s, step, relaxation)
                         ).clamp_max(1 / TRANSPORT_TINY)
                    done += 1
                g = g + torch.log(s.clamp_min(TRANSPORT_TINY))
            return g
        rows = rows_per_chunk(v, memory_budget_mb=memory_budget_mb, itemsize=itemsize)
        f = torch.zeros(k, device=g.device, dtype=g.dtype)
        for it in range(iterations):
            column = torch.full_like(g, -math.inf)
            for start in range(0, k, rows):
                logits = atlas_scaled[start : start + rows] @ shape_unit.T
                step = log_atlas_mass[start : start + rows] - torch.logsumexp(logits + g, dim=1)
                if it and relaxation != 1.0:
                    step = _relax_log(f[start : start + rows], step, relaxation)
                f[start : start + rows] = step
                column = torch.logaddexp(column,
                                         torch.logsumexp(logits.add_(step[:, None]), dim=0))
            step = log_shape_mass - column
            g = step if relaxation == 1.0 else _relax_log(g, step, relaxation)
        return g


def _relax_log(old: Tensor, step: Tensor, omega: float) -> Tensor:
    """Over-relaxed log-domain update (1 - omega) old + omega step, the move bounded by
    `TRANSPORT_LOG_BOUND` (and finite where `step` is -inf: an unreached vertex)."""
    move = (step - old).nan_to_num(nan=0.0).clamp(-TRANSPORT_LOG_BOUND, TRANSPORT_LOG_BOUND)
    return old + omega * move


def _relax(old: Tensor, step: Tensor, omega: float) -> Tensor:
    """Over-relaxed scaling update old^(1 - omega) step^omega, in logs (both positive)."""
    lo, ls = (torch.log(t.clamp_min(TRANSPORT_TINY)) for t in (old, step))
    return torch.exp(_relax_log(lo, ls, omega).clamp(-TRANSPORT_LOG_BOUND, TRANSPORT_LOG_BOUND))


def _best_atlas_vertex(atlas_unit: Tensor, shape_unit: Tensor, *, rows: int) -> Tensor:
    """argmax_k cos for each shape vertex, in chunks of shape vertices. (K, D), (V, D) -> (V,)"""
    n = shape_unit.shape[0]
    with torch.no_grad():
        buffer = atlas_unit.new_empty(min(rows, n), atlas_unit.shape[0])
        parts = []
        for start in range(0, n, rows):
            block = shape_unit[start : start + rows]
            cos = torch.mm(block, atlas_unit.T, out=buffer[: block.shape[0]])
            parts.append(cos.argmax(dim=1))
    return torch.cat(parts)


def _check(atlas_emb: Tensor, shape_emb: Tensor, shape_points: Tensor) -> None:
    if atlas_emb.ndim != 2 or shape_emb.ndim != 2 or atlas_emb.shape[1] != shape_emb.shape[1]:
        raise ValueError(
            "atlas_emb and shape_emb must be (K, D) and (V, D) with the same D, got "
            f"{tuple(atlas_emb.shape)} and {tuple(shape_emb.shape)}"
        )
    if atlas_emb.shape[0] == 0 or shape_emb.shape[0] == 0:
        raise ValueError(
            f"need at least one atlas and one shape vertex, got K={atlas_emb.shape[0]}, "
            f"V={shape_emb.shape[0]}"
        )
    if shape_points.shape != (shape_emb.shape[0], 3):
        raise ValueError(
            f"shape_points must have shape ({shape_emb.shape[0]}, 3) to match shape_emb, "
            f"got {tuple(shape_points.shape)}"
        )
    if not (atlas_emb.device == shape_emb.device == shape_points.device):
        raise ValueError(
            f"inputs are on different devices: {atlas_emb.device}, {shape_emb.device}, "
            f"{shape_points.device}"
        )
