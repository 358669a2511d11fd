"""Clustering maths of the multi-atlas model: pure numpy on shapes in correspondence.

Rigid consensus alignment (generalised Procrustes without scaling), energies of shapes to
atlases and tempered soft memberships, the M-step, tempered soft k-means with k-means++ seeding
(`soft_cluster`), and the choice of the number of atlases M: by splitting groups in two while
a split is more bimodal than any unimodal group shows (`choose_atlases`), or by prediction
strength (`prediction_strength`, kept for comparison). Why these choices: the module docstring
of `shapeatlas.models.multi_atlas`, which fits its clusters with them.

The bimodality test is written here: scikit-learn and scipy have no test of "one group or two"
for multivariate data, and the dip test's Python package is GPL.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.special import softmax
from sklearn.cluster import KMeans, kmeans_plusplus

from shapeatlas.mesh.align import similarity_fit

log = logging.getLogger(__name__)

#: Each cluster needs at least this much membership (in shapes) for its β-VAE.
MIN_CLUSTER_SHAPES = 3
#: Share of variance kept by the principal subspace in which M is chosen (2 to 10 modes).
SELECT_VARIANCE = 0.9
#: Random halvings of the cohort behind each M's prediction strength.
SELECT_SPLITS = 50
#: `prediction_strength` takes the largest M whose strength reaches this. Tibshirani & Walther
#: suggest 0.8 to 0.9. At 0.8 the dilated LVs alone would be split in two (strength 0.83 to
#: 0.88 at M = 2, seeds 0 to 2, on an earlier fit; bench/select_atlases.py).
SELECT_THRESHOLD = 0.9
#: "auto" splits a group in two when fewer than this share of simulated groups without groups
#: in them have a cut as sharp as its sharpest: the p-value of `bimodality_test`.
SELECT_ALPHA = 0.05
#: Simulated groups behind each bimodality test; p-values come in steps of 1 / (this + 1).
SELECT_SIMULATIONS = 99
#: Only groups of at least this many shapes are tested. In smaller groups a gap between some
#: shapes and the rest comes about without groups: the 20 healthy synthetic LVs, drawn from
#: uniform parameters, show one between 9 and 11 of them (p = 0.02 to 0.04) that none of their
#: parameters explains (bench/select_atlases.py).
SELECT_MIN_GROUP = 30
#: A larger group is tested on this many of its shapes, drawn at random, so that a test's
#: time stops growing with the cohort.
SELECT_TEST_SHAPES = 500
#: A group is tested in at most one principal mode per this many shapes (2 to 10 modes). With
#: about as many modes as shapes, some direction separates any group (12 Gaussian shapes in
#: 10 modes were split 9 times in 40), and the simulated groups do not show it.
SELECT_SHAPES_PER_MODE = 4


class ClusterWarning(UserWarning):
    """Recoverable clustering trouble (an emptied cluster re-seeded)."""


def rigid_consensus(shapes: np.ndarray, *, iterations: int = 10
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generalised Procrustes without scaling. shapes: (N, K, 3) in correspondence, mm.

    -> aligned (N, K, 3), transforms (N, 4, 4) mapping each shape onto the consensus, and the
    consensus (K, 3) (their mean).
    """
    shapes = np.asarray(shapes, dtype=np.float64)
    ref = shapes.mean(axis=0)
    for _ in range(iterations):
        mats = np.stack([similarity_fit(x, ref, scale=False)[0] for x in shapes])
        aligned = np.einsum("nij,nkj->nki", mats[:, :3, :3], shapes) + mats[:, None, :3, 3]
        new = aligned.mean(axis=0)
        done = np.sqrt(((new - ref) ** 2).sum(axis=1).mean()) < 1e-6
        ref = new
        if done:
            break
    return aligned, mats, ref


def energies(shapes: np.ndarray, atlases: np.ndarray) -> np.ndarray:
    """Mean squared distance (mm²) of every shape to every atlas. (N, K, 3), (M, K, 3) -> (N, M)"""
    s = shapes.reshape(len(shapes), -1)
    a = atlases.reshape(len(atlases), -1)
    d2 = (s**2).sum(1)[:, None] - 2.0 * s @ a.T + (a**2).sum(1)[None]
    return np.maximum(d2, 0.0) / shapes.shape[1]


def memberships(e: np.ndarray, weights: np.ndarray, *, temperature: float, spread: float
                ) -> np.ndarray:
    """r(k, m) ∝ weights_m exp(-e(k, m) / (temperature * spread)). (N, M) -> (N, M)"""

    return softmax(np.log(np.maximum(weights, 1e-300))[None] - e / (temperature * spread), axis=1)


def matched_energies(per_cluster: np.ndarray, atlases: np.ndarray) -> np.ndarray:
    """E(k, m) of shapes matched to each atlas separately. (N, M, K, 3), (M, K, 3) -> (N, M)"""
    return np.stack([energies(per_cluster[:, m], atlases[m:m + 1])[:, 0]
                     for m in range(len(atlases))], axis=1)


@dataclass(frozen=True)
class Clustering:
    """memberships (N, M); weights (M,) π; atlases (M, K, 3) mm; spread s² (mm²);
    distortion: Σ r E / N (mm²); reseeded: clusters re-seeded on the way."""

    memberships: np.ndarray
    weights: np.ndarray
    atlases: np.ndarray
    spread: float
    distortion: float
    reseeded: int = 0


def m_step(per_cluster: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """π and the membership-weighted mean atlases of shapes matched to each atlas.
    per_cluster: (N, M, K, 3) (a broadcast view when one set of shapes serves every atlas);
    r: (N, M) -> (M,), (M, K, 3)"""
    mass = r.sum(axis=0)
    atlases = np.einsum("nm,nmkd->mkd", r, per_cluster) / np.maximum(mass, 1e-12)[:, None, None]
    return mass / len(per_cluster), atlases


def soft_cluster(shapes: np.ndarray, n_clusters: int, *, temperature: float, restarts: int,
                 seed: int, max_iter: int = 200, tol: float = 1e-8,
                 init: np.ndarray | None = None) -> Clustering:
    """Tempered soft k-means of (N, K, 3) shapes into `n_clusters` atlases (see multi_atlas).

    Seeded by k-means++ `restarts` times (the lowest distortion is kept). With `init`, (N,)
    labels in 0..n_clusters-1, those groups are kept instead: their means are the atlases,
    their shares π, and the memberships follow from them with no k-means iterations, which
    could trade a valley between two groups for a cut across one group's long spread."""
    n = len(shapes)
    if n_clusters == 1:
        a = shapes.mean(axis=0, keepdims=True)
        e = energies(shapes, a)
        return Clustering(np.ones((n, 1)), np.ones(1), a, float(e.mean()), float(e.mean()))
    flat = shapes.reshape(n, -1)
    if init is not None:
        init = np.asarray(init)
        if init.shape != (n,) or set(np.unique(init).tolist()) != set(range(n_clusters)):
            raise ValueError(f"init must label each of the {n} shapes with one of "
                             f"0..{n_clusters - 1}, each used")
        hard = np.eye(n_clusters)[init]
        pi, atlases = m_step(np.broadcast_to(shapes[:, None], (n, n_clusters, *shapes.shape[1:])),
                             hard)
        e = energies(shapes, atlases)
        spread = max(float((hard * e).sum() / n), 1e-12)
        r = memberships(e, pi, temperature=temperature, spread=spread)
        return Clustering(r, r.mean(axis=0), atlases, spread, float((r * e).sum() / n))
    best = None
    for rep in range(restarts):
        _, idx = kmeans_plusplus(flat, n_clusters, random_state=seed + rep)
        atlases, pi = shapes[idx].copy(), np.full(n_clusters, 1.0 / n_clusters)
        e = energies(shapes, atlases)
        spread = float(e.min(axis=1).mean())
        reseeded, last = 0, np.inf
        for _ in range(max_iter):
            r = memberships(e, pi, temperature=temperature, spread=spread)
            empty = np.flatnonzero(r.sum(axis=0) < min(MIN_CLUSTER_SHAPES, n / n_clusters) / 2)
            for m in empty:  # re-seed at the shape the other atlases explain worst
                worst = int(np.argmax((r * e).sum(axis=1)))
                r[worst] = 0.0
                r[worst, m] = 1.0
                reseeded += 1
            pi, atlases = m_step(np.broadcast_to(shapes[:, None], (n, *r.shape[1:],
                                                                   *shapes.shape[1:])), r)
            e = energies(shapes, atlases)
            spread = max(float((r * e).sum() / n), 1e-12)
            if abs(last - spread) <= tol * spread and not len(empty):
                break
            last = spread
        r = memberships(e, pi, temperature=temperature, spread=spread)
        fit = Clustering(r, r.mean(axis=0), atlases, spread, float((r * e).sum() / n), reseeded)
        if best is None or fit.distortion < best.distortion:
            best = fit
    if best.reseeded:
        warnings.warn(f"clustering into {n_clusters} atlases emptied a cluster {best.reseeded} "
                      "time(s); it was re-seeded at the worst-explained shape. Consider fewer "
                      "atlases.", ClusterWarning, stacklevel=2)
    return best


def principal_scores(shapes: np.ndarray, *, max_modes: int = 10) -> np.ndarray:
    """Shapes (N, K, 3) -> their scores on the principal modes that keep SELECT_VARIANCE of the
    variance (2 to `max_modes` modes), as (N, 1, d) "shapes of one vertex" that `soft_cluster`
    takes."""
    n = len(shapes)
    flat = shapes.reshape(n, -1)
    flat = flat - flat.mean(axis=0)
    u, sv, _ = np.linalg.svd(flat, full_matrices=False)
    share = np.cumsum(sv**2) / max((sv**2).sum(), 1e-300)
    d = int(np.clip(np.searchsorted(share, SELECT_VARIANCE) + 1, 2, min(max_modes, len(sv))))
    return (u[:, :d] * sv[:d])[:, None, :]


def prediction_strength(shapes: np.ndarray, max_clusters: int, *, seed: int,
                        temperature: float, restarts: int, splits: int = SELECT_SPLITS,
                        threshold: float = SELECT_THRESHOLD) -> dict:
    """Choose M in 1..max_clusters by prediction strength (Tibshirani & Walther 2005).

    The descriptors (principal scores, `principal_scores`) are split into random halves
    `splits` times. Both halves are clustered into M atlases; the atlases of one half then
    assign the shapes of the other. Prediction strength of M: over the other half's own
    clusters of two shapes or more, the smallest share of its pairs of shapes that the first
    half's atlases keep together, averaged over the splits. It is 1 for M = 1 and
    stays near 1 only while the clusters are reproducible rather than arbitrary cuts of a
    continuum. Chosen: the largest M whose strength is at least `threshold`. M is tried up to
    `max_clusters`, and only while half the cohort can hold M clusters of MIN_CLUSTER_SHAPES.
    -> {"chosen": M, "criterion": "prediction strength", "threshold", "modes", "splits",
    "curve": [{"atlases", "strength", "se"}]}
    """
    scores = principal_scores(shapes)
    n = len(scores)
    # a half must be able to hold M clusters of MIN_CLUSTER_SHAPES; beyond that single-shape
    # clusters (left out of the score) would make large M look reproducible
    max_clusters = max(1, min(max_clusters, (n // 2) // MIN_CLUSTER_SHAPES))
    rng = np.random.default_rng(seed)
    halves = [rng.permutation(n) for _ in range(splits)]
    curve = []
    for m in range(1, max_clusters + 1):
        strength = []
        for rep, order in enumerate(halves):
            a, b = scores[order[:n // 2]], scores[order[n // 2:]]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ClusterWarning)
                ca = soft_cluster(a, m, temperature=temperature, restarts=restarts,
                                  seed=seed + rep)
                cb = soft_cluster(b, m, temperature=temperature, restarts=restarts,
                                  seed=seed + rep)
            own = cb.memberships.argmax(axis=1)
            told = energies(b, ca.atlases).argmin(axis=1)
            kept = []
            for k in np.unique(own):
                members = told[own == k]
                if len(members) > 1:
                    same = (members[:, None] == members[None]).sum() - len(members)
                    kept.append(same / (len(members) * (len(members) - 1)))
            strength.append(min(kept, default=0.0))
        curve.append({"atlases": m, "strength": float(np.mean(strength)),
                      "se": float(np.std(strength) / np.sqrt(len(strength)))})
    chosen = max((c["atlases"] for c in curve if c["strength"] >= threshold), default=1)
    return {"chosen": chosen, "criterion": "prediction strength", "threshold": threshold,
            "modes": int(scores.shape[2]), "splits": splits, "curve": curve}


def _cut(values: np.ndarray, min_side: int) -> tuple[float, float]:
    """The best cut of 1-D values in two, each side at least `min_side` values long.
    -> (within-sides sum of squares / total sum of squares, the threshold)"""
    v = np.sort(values)
    n = len(v)
    s1, s2 = np.cumsum(v), np.cumsum(v * v)
    left = np.arange(min_side, n - min_side + 1)  # values on the left of each cut
    within = (s2[left - 1] - s1[left - 1] ** 2 / left
              + (s2[-1] - s2[left - 1]) - (s1[-1] - s1[left - 1]) ** 2 / (n - left))
    total = s2[-1] - s1[-1] ** 2 / n
    best = int(np.argmin(within))
    return float(within[best] / max(total, 1e-300)), float(v[left[best] - 1])


def _sharpest_cut(x: np.ndarray, *, seed: int, min_side: int
                  ) -> tuple[float, np.ndarray, float]:
    """The most bimodal cut of points x (n, d) in two: over the projections on their principal
    axes and on the line between their 2-means centres, the cut whose sides keep the smallest
    share of the sum of squares (`_cut`). -> (that share, its direction (d,), its threshold on
    (x - x's mean) @ direction)"""
    centred = x - x.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    centres = KMeans(2, n_init=10, random_state=seed).fit(x).cluster_centers_
    line = centres[1] - centres[0]
    best = None
    for w in [*axes, line / max(np.linalg.norm(line), 1e-300)]:
        share, threshold = _cut(centred @ w, min_side)
        if best is None or share < best[0]:
            best = (share, w, threshold)
    return best


def bimodality_test(scores: np.ndarray, *, seed: int, simulations: int = SELECT_SIMULATIONS,
                    min_side: int = MIN_CLUSTER_SHAPES) -> dict:
    """Is this group of shapes two groups? scores: (n, d) principal scores of the group.

    Statistic: the share of the sum of squares kept within the sides of the group's sharpest
    cut in two (`_sharpest_cut`; 1 - the between-sides share). Null: groups of the same size
    with the same variance along each principal axis, spread uniformly in a box. A uniform
    spread is the least favourable unimodal one for this statistic (a symmetric unimodal law is
    a uniform law scaled at random, so (E|x|)^2 <= 3/4 var x, with equality for the uniform),
    so a cohort spread evenly along a mode (a range of sizes, say) is not taken for two groups.
    The cut is searched the same way in `simulations` such groups. A group of more than
    SELECT_TEST_SHAPES shapes is tested on that many of them, drawn at random, and every shape
    goes to the side of that sample's cut.
    -> {"shapes", "tested", "modes", "statistic", "null_mean", "p", "labels" (n,) 0/1}
    """
    n, d = scores.shape
    rng = np.random.default_rng(seed)
    sample = (np.sort(rng.choice(n, SELECT_TEST_SHAPES, replace=False))
              if n > SELECT_TEST_SHAPES else np.arange(n))
    x = scores[sample]
    share, direction, threshold = _sharpest_cut(x, seed=seed, min_side=min_side)
    labels = ((scores - x.mean(axis=0)) @ direction > threshold).astype(int)
    sd = x.std(axis=0, ddof=1)
    null = np.array([_sharpest_cut(rng.uniform(-1.0, 1.0, x.shape) * np.sqrt(3.0) * sd,
                                   seed=seed + 1 + i, min_side=min_side)[0]
                     for i in range(simulations)])
    return {"shapes": n, "tested": len(x), "modes": d, "statistic": share,
            "null_mean": float(null.mean()),
            "p": float((1 + np.count_nonzero(null <= share)) / (1 + simulations)),
            "labels": labels}


def group_scores(shapes: np.ndarray) -> np.ndarray:
    """The principal scores (n, d) a group of shapes (n, K, 3) is tested on: those of
    `principal_scores`, at most one mode per SELECT_SHAPES_PER_MODE shapes (2 to 10)."""
    modes = max(2, min(10, len(shapes) // SELECT_SHAPES_PER_MODE))
    return principal_scores(shapes, max_modes=modes)[:, 0]


def choose_atlases(shapes: np.ndarray, max_clusters: int, *, seed: int,
                   alpha: float = SELECT_ALPHA, simulations: int = SELECT_SIMULATIONS
                   ) -> tuple[dict, np.ndarray]:
    """Choose M in 1..max_clusters by splitting groups in two while a split is significant.

    Start with the cohort as one group. Each group of at least SELECT_MIN_GROUP shapes is
    tested on its own principal scores (`group_scores`, `bimodality_test`). While one has
    p < alpha and there are fewer than max_clusters groups, the group with the smallest p
    (then the sharpest cut) is split along its cut. shapes: (N, K, 3) in correspondence.
    -> ({"chosen": M, "criterion": "bimodality", "alpha", "simulations", "min_group",
    "tests": [{"shapes", "tested", "modes", "statistic", "null_mean", "p", "split"}]}, labels
    (N,) in 0..M-1)
    """
    n = len(shapes)
    groups, tests, done = [np.arange(n)], [], {}

    def tested(members: np.ndarray) -> dict | None:
        key = members.tobytes()
        if key not in done:
            done[key] = None
            if len(members) >= max(SELECT_MIN_GROUP, 2 * MIN_CLUSTER_SHAPES):
                done[key] = bimodality_test(group_scores(shapes[members]), seed=seed,
                                            simulations=simulations)
                done[key]["split"] = False
                tests.append(done[key])
                log.info("atlases: a group of %d shapes tested, p = %.2f", len(members),
                         done[key]["p"])
        return done[key]

    while len(groups) < max_clusters:
        results = [tested(g) for g in groups]
        candidates = [(r["p"], r["statistic"], i) for i, r in enumerate(results)
                      if r is not None and r["p"] < alpha]
        if not candidates:
            break
        _, _, i = min(candidates)
        results[i]["split"] = True
        members, side = groups.pop(i), results[i]["labels"]
        groups[i:i] = [members[side == 0], members[side == 1]]
    labels = np.empty(n, dtype=int)
    for m, members in enumerate(groups):
        labels[members] = m
    record = [{k: v for k, v in t.items() if k != "labels"} for t in tests]
    return ({"chosen": len(groups), "criterion": "bimodality", "alpha": alpha,
             "simulations": simulations, "min_group": SELECT_MIN_GROUP, "tests": record}, labels)
