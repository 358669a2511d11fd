"""Evenly spaced vertices on an analytic surface given as a map from a parametric domain.

Both synthetic cohorts (`synthetic_lv`, `synthetic_kidney`) place their mesh vertices the same
way: candidate domain points drawn uniformly by the *surface* area of a reference triangulation
of the domain, then a greedy farthest-point pick in 3D, so the vertices are evenly spaced on the
surface whatever the map's distortion. scipy has no farthest-point sampler over arbitrary
candidates with seeds, and PyG's `fps` needs torch_cluster (not installed; see STACK.md), so the
few lines are written here.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def area_candidates(grid_u: np.ndarray, grid_f: np.ndarray, areas: np.ndarray, n: int, *,
                    rng: np.random.Generator) -> np.ndarray:
    """`n` domain points drawn uniformly by surface area, renormalised onto the unit sphere.

    grid_u: (V, 3) unit domain points of a reference triangulation; grid_f: (F, 3) its faces;
    areas: (F,) the surface area of each face under the shape map. -> (n, 3) unit vectors.
    """
    face = rng.choice(len(grid_f), size=n, p=areas / areas.sum())
    r1, r2 = np.sqrt(rng.random(n)), rng.random(n)
    bary = np.stack([1.0 - r1, r1 * (1.0 - r2), r1 * r2], axis=1)
    cand = np.einsum("ki,kij->kj", bary, grid_u[grid_f[face]])
    return cand / np.linalg.norm(cand, axis=1, keepdims=True)


def farthest_points(candidates: np.ndarray, seeds: np.ndarray, n: int) -> np.ndarray:
    """Indices of `n` candidates picked greedily farthest from the seeds and earlier picks.

    candidates: (P, 3), seeds: (S, 3) -> (n,). Only candidates closer to the new pick than the
    current largest gap can change, so each step updates a small ball found with a k-d tree.
    """
    if not 0 < n <= len(candidates):
        raise ValueError(f"cannot pick {n} points from {len(candidates)} candidates")
    dist, _ = cKDTree(seeds).query(candidates)
    tree = cKDTree(candidates)
    picked = np.empty(n, dtype=np.int64)
    for i in range(n):
        j = int(np.argmax(dist))
        picked[i] = j
        near = np.asarray(tree.query_ball_point(candidates[j], dist[j]), dtype=np.int64)
        gap = np.linalg.norm(candidates[near] - candidates[j], axis=1)
        dist[near] = np.minimum(dist[near], gap)
    return picked
