"""Statistical-shape-model quality: compactness, generalization, specificity, plausibility.

Definitions (after Davies et al., IEEE TMI 2002, and Styner et al., IPMI 2003), all in mm, on
shapes in atlas topology in the aligned frame:

- compactness(m): cumulative share of the total variance of the training normalised shapes
  explained by the first m PCA modes (correspondence-based; unitless, 0-1, higher is better).
- generalization(m): each test shape's normalised shape is encoded, only the first m latent
  directions are kept (PCA: the first m modes; β-VAE: the m directions with the largest variance
  over the training codes, the others at the prior's centre), decoded, and compared with the
  test shape's *surface*: the symmetric mean surface distance (mean of the two directed mean
  point-to-surface distances, reconstruction vertices <-> test mesh vertices). Mean and standard
  error over test shapes (surface-based variant; lower is better).
- specificity: for each of S generated shapes, the mean vertex-to-vertex distance to its
  nearest training normalised shape (correspondence-based), and the mean distance of its
  vertices to that training shape's surface (surface-based). Mean and standard error over the
  S samples (lower is better).
- specificity curve(m): the correspondence-based specificity of samples whose codes vary only
  in the first m latent directions (the others at the prior's centre), for the same values of
  m as generalization: mean and standard error over the samples drawn for each m.
- plausibility: enclosed volume (mL) of real and virtual shapes (mean and sd, two-sample
  Kolmogorov-Smirnov statistic, 1-Wasserstein distance in mL); main dimensions = extents (mm)
  along the principal axes of the real cohort's mean shape; the acceptance rate is the share of
  virtual shapes whose volume and three extents all lie inside the real cohort's 2.5-97.5
  percentile ranges.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from shapeatlas.metrics.surface import point_to_surface_distance

#: Samples compared with the training shapes at once in `specificity` (bounds memory).
SPECIFICITY_BLOCK = 64


def _stats(x: np.ndarray) -> dict:
    x = np.asarray(x, dtype=np.float64)
    se = float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")
    return {"mean": float(x.mean()), "se": se}


def compactness(shapes: np.ndarray) -> np.ndarray:
    """(B, K, 3) -> (min(B - 1, 3K),) cumulative explained-variance ratio of the PCA modes."""
    x = np.asarray(shapes, dtype=np.float64).reshape(len(shapes), -1)
    sv = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)[: len(x) - 1]
    var = sv**2
    return np.cumsum(var) / var.sum()


def symmetric_surface_distance(a_vertices: np.ndarray, a_faces: np.ndarray,
                               b_vertices: np.ndarray, b_faces: np.ndarray) -> float:
    """Mean of the two directed mean vertex-to-surface distances (mm)."""
    d_ab = point_to_surface_distance(a_vertices, b_vertices, b_faces)
    d_ba = point_to_surface_distance(b_vertices, a_vertices, a_faces)
    return float(0.5 * (d_ab.mean() + d_ba.mean()))


def generalization(generator, test_shapes: np.ndarray, test_meshes: Sequence, *,
                   atlas_faces: np.ndarray, components: Sequence[int],
                   progress: Callable[[int], None] | None = None) -> list[dict]:
    """Generalization error against the test surfaces for each number of kept latent directions.

    test_shapes: (B, K, 3) the test shapes' normalised shapes; test_meshes: B meshes (same frame).
    progress(1) after each reconstruction scored (B per entry of `components`).
    -> one {"components", "mean", "se", "per_shape"} per entry of `components`.
    """
    rows = []
    for m in components:
        recon = generator.reconstruct(test_shapes, n_components=int(m))
        errs = []
        for r, t in zip(recon, test_meshes):
            errs.append(symmetric_surface_distance(r, atlas_faces, np.asarray(t.vertices),
                                                   np.asarray(t.faces)))
            if progress:
                progress(1)
        errs = np.array(errs)
        rows.append({"components": int(m), **_stats(errs), "per_shape": errs.tolist()})
    return rows


@dataclass(frozen=True)
class Specificity:
    """Correspondence- and surface-based specificity (mm), with standard errors."""

    vertex_mean: float
    vertex_se: float
    surface_mean: float
    surface_se: float
    nearest: np.ndarray

    def to_dict(self) -> dict:
        d = asdict(self)
        d["nearest"] = self.nearest.tolist()
        return d


def nearest_training_shape(samples: np.ndarray, train_shapes: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's nearest training shape by mean vertex-to-vertex distance.
    samples: (S, K, 3), train_shapes: (B, K, 3), mm. -> distances (S,) mm, indices (S,)"""
    s = np.asarray(samples, dtype=np.float64)
    t = np.asarray(train_shapes, dtype=np.float64)
    best = np.empty(len(s))
    nearest = np.empty(len(s), dtype=np.int64)
    for i in range(0, len(s), SPECIFICITY_BLOCK):
        blk = s[i:i + SPECIFICITY_BLOCK]
        d = np.linalg.norm(blk[:, None] - t[None], axis=3).mean(axis=2)  # (S_blk, B)
        nearest[i:i + len(blk)] = d.argmin(axis=1)
        best[i:i + len(blk)] = d.min(axis=1)
    return best, nearest


def specificity(samples: np.ndarray, train_shapes: np.ndarray, *,
                atlas_faces: np.ndarray,
                progress: Callable[[int], None] | None = None) -> Specificity:
    """samples: (S, K, 3), train_shapes: (B, K, 3), both mm in the aligned frame.
    progress(1) after each sample's surface distance."""
    s = np.asarray(samples, dtype=np.float64)
    t = np.asarray(train_shapes, dtype=np.float64)
    best, nearest = nearest_training_shape(s, t)
    surf = np.empty(len(s))
    for i, (x, j) in enumerate(zip(s, nearest)):
        surf[i] = point_to_surface_distance(x, t[j], atlas_faces).mean()
        if progress:
            progress(1)
    v, sf = _stats(best), _stats(surf)
    return Specificity(vertex_mean=v["mean"], vertex_se=v["se"], surface_mean=sf["mean"],
                       surface_se=sf["se"], nearest=nearest)


def specificity_curve(draw: Callable[[int], np.ndarray], train_shapes: np.ndarray, *,
                      components: Sequence[int]) -> list[dict]:
    """Correspondence-based specificity against the number of latent directions that vary.

    draw(m) -> (S_m, K, 3) samples whose codes vary only in the first m latent directions
    (`sample(..., components=m)`); train_shapes: (B, K, 3), mm in the aligned frame.
    -> one {"components", "n_samples", "mean", "se"} per entry of `components` (mm).
    """
    rows = []
    for m in components:
        best, _ = nearest_training_shape(draw(int(m)), train_shapes)
        rows.append({"components": int(m), "n_samples": len(best), **_stats(best)})
    return rows


def principal_axes(shape: np.ndarray) -> np.ndarray:
    """(K, 3) -> (3, 3) rows: principal directions of one shape, largest first."""
    x = np.asarray(shape, dtype=np.float64)
    _, _, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    return vt


def extents(vertices: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Extent (max - min, mm) of a vertex set along each row of `axes`. -> (3,)"""
    p = np.asarray(vertices, dtype=np.float64) @ np.asarray(axes).T
    return p.max(axis=0) - p.min(axis=0)


def plausibility(real_volumes: np.ndarray, real_extents: np.ndarray,
                 virtual_volumes: np.ndarray, virtual_extents: np.ndarray) -> dict:
    """Volume distributions and the acceptance rate. volumes (n,) mL, extents (n, 3) mm."""
    from scipy.stats import ks_2samp, wasserstein_distance

    rv, vv = np.asarray(real_volumes, float), np.asarray(virtual_volumes, float)
    re, ve = np.asarray(real_extents, float), np.asarray(virtual_extents, float)
    lo_v, hi_v = np.percentile(rv, [2.5, 97.5])
    lo_e, hi_e = np.percentile(re, [2.5, 97.5], axis=0)
    ok = np.isfinite(vv) & (vv >= lo_v) & (vv <= hi_v) & ((ve >= lo_e) & (ve <= hi_e)).all(axis=1)
    finite = vv[np.isfinite(vv)]
    return {
        "real_volume_ml": {"mean": float(rv.mean()), "sd": float(rv.std(ddof=1))},
        "virtual_volume_ml": {"mean": float(finite.mean()), "sd": float(finite.std(ddof=1))},
        "volume_ks": float(ks_2samp(rv, finite).statistic),
        "volume_wasserstein_ml": float(wasserstein_distance(rv, finite)),
        "acceptance_rate": float(ok.mean()),
        "real_range": {"volume_ml": [float(lo_v), float(hi_v)],
                       "extents_mm": [lo_e.tolist(), hi_e.tolist()]},
    }
