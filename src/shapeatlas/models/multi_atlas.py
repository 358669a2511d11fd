"""`MultiAtlasModel`: mAtlas-R-ASMG. Several atlases with soft memberships, one β-VAE each.

    >>> model = MultiAtlasModel(FitConfig(atlases=2)).fit(groomed_meshes)   # doctest: +SKIP
    >>> model.predict_proba([new_mesh])    # (1, 2) memberships               # doctest: +SKIP
    >>> model.sample(100, seed=0).cluster  # the atlas of every virtual shape  # doctest: +SKIP

How it is fitted (every number is a `FitConfig` field):
1. The shared correspondence network: one R-ASM fit on the whole cohort (`AtlasModel`), whose
   network then matches any shape to any atlas.
2. A global shape descriptor: every shape's normalised shape on the shared atlas, rigidly
   aligned to their consensus (generalised Procrustes without scaling, so size stays a
   feature). The rigid step matters: without it the residual rotations left by grooming outweigh
   the shape differences (measured on the two-phenotype LVs: adjusted Rand index 0.0 without,
   1.0 with; bench/multi_atlas.py).
3. Soft clustering of the descriptors (M atlases): energy E(k, m) = mean squared distance (mm²)
   of shape k to atlas m; memberships r(k, m) ∝ π_m exp(-E(k, m) / (τ s²)) with s² the mean
   within-cluster energy and τ `clustering.temperature`; π and the atlases (membership-weighted
   means) re-estimated until stable. Initialised by k-means++ on the descriptors
   (scikit-learn's `kmeans_plusplus`), `cluster_restarts` times; the lowest distortion is
   kept, like scikit-learn's `n_init`. A cluster left with less than `MIN_CLUSTER_SHAPES` of
   membership is re-seeded at the worst-explained shape, with a warning.
4. `clustering.rounds` rounds in which the shared network matches every shape to every atlas (so
   each cluster's normalised shapes are correspondences to its own atlas), then memberships,
   π and atlases are re-estimated from those matches.
5. One β-VAE per cluster on the shapes matched to its atlas, weighted by the memberships, each
   with its own latent size D_m = min(16, effective cluster size - 1) unless `latent_dim` is
   set. (A shared size, capped by the smallest cluster, cost the larger clusters their detail:
   on the livers with M = 5 a 3-shape cluster held every cluster to D = 2.) Latent codes have
   max D_m columns; cluster m reads the first D_m.
Sampling is ancestral: m ~ Cat(π), z ~ cluster m's prior (the aggregate posterior of its
training codes, as for one atlas), decoded by cluster m's decoder. All atlases are deformations
of the shared atlas, so they share its triangulation (the faces of every sample are the same).

`atlases="auto"` chooses M in 1..`max_atlases` by splitting the cohort in two, and each part
again, while a split is significantly bimodal (`choose_atlases`: the sharpest cut of a group
against the cuts of uniformly spread groups of the same size and variances, p < SELECT_ALPHA;
groups of at least SELECT_MIN_GROUP shapes). Step 3 then keeps the groups found instead of
seeding k-means. Why: `python bench/select_atlases.py` compares the choices on descriptors with
a known answer, from bench/compare.py's shared networks and bench/mirrored_livers.py's run:
- prediction strength (Tibshirani & Walther 2005; `prediction_strength`, the earlier choice)
  found the two LV phenotypes but chose 1 for 30 livers plus 30 mirrored ones: they differ
  along the second principal mode, and k-means on half of the cohort cuts the first, longer
  one about as often, so the clusters of two halves disagree;
- BIC of Gaussian mixtures chose anything from 1 to 6 depending on the covariance type and the
  number of modes;
- the gap statistic, a distortion criterion like k-means, chose 1 for the mirrored livers too;
- the bimodality test chose 2 for the LV phenotypes and for the mirrored livers, recovering
  each exactly, and 1 for the livers, each liver group alone and each phenotype alone.

The clustering maths (steps 2, 3 and the choice of M) lives in `shapeatlas.models.clustering`,
the mixture generator in `shapeatlas.models.mixture`.
"""

from __future__ import annotations

import copy
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from shapeatlas import validate
from shapeatlas.atomic import write_text_atomic
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh.align import similarity_fit
from shapeatlas.mesh.core import Mesh, as_meshes
from shapeatlas.mesh.io import write_mesh
from shapeatlas.mesh.relax import relax_tangentially
from shapeatlas.metrics.ssm import principal_axes
from shapeatlas.models import persistence
from shapeatlas.models.atlas import AtlasModel, Correspondence
from shapeatlas.models.clustering import (
    MIN_CLUSTER_SHAPES,
    ClusterWarning,
    choose_atlases,
    m_step,
    matched_energies,
    memberships,
    rigid_consensus,
    soft_cluster,
)
from shapeatlas.models.generative import (
    Codes,
    GenerativeMixin,
    Samples,
    cohort_summary,
    split_codes,
)
from shapeatlas.models.generator import DEFAULT_LATENT, VAEGenerator, effective_size
from shapeatlas.models.mixture import MixtureGenerator
from shapeatlas.training.config import FitConfig, MatchConfig

log = logging.getLogger(__name__)

MODEL_FORMAT = "shapeatlas-multi-atlas-model"
MODEL_VERSION = 2  # 2: clusters may have different latent sizes
#: Where the shared correspondence network (an AtlasModel folder) lives inside a run folder.
SHARED_DIR = "shared"
#: Written next to the shared network once it is trained; `fit --resume` then reuses it.
SHARED_SUMMARY = "fit_summary.json"


# -------------------------------------------------------------------------------- the model
class MultiAtlasModel(GenerativeMixin):
    """mAtlas-R-ASMG estimator (see the module docstring).

    Parameters
    ----------
    config: the fit configuration; `atlases` is M (or "auto"); keyword overrides replace fields.

    Fitted attributes: `base_` (the shared `AtlasModel`), `n_atlases_` M, `atlases_` (M, K, 3)
    and `atlas_faces_` (F, 3) in the consensus frame (mm), `weights_` π (M,), `memberships_`
    (N, M) of the training shapes, `labels_` (N,), `selection_` (the M search, or None),
    `training_shapes_` (N, K, 3) each training shape matched to its own atlas, `generator_`
    (a `MixtureGenerator`), `fit_seconds_`.
    """

    def __init__(self, config: FitConfig | None = None, **overrides):
        self.config = (config or FitConfig(clustering={"atlases": 2})).replace(**overrides)

    def _check_fitted(self) -> None:
        if not hasattr(self, "atlases_"):
            raise ShapeAtlasError("this MultiAtlasModel is not fitted yet: call fit() or load() "
                                  "first")

    @property
    def atlas_vertices_(self) -> np.ndarray:
        """The most populated atlas (the topology every atlas shares)."""
        return self.atlases_[int(np.argmax(self.weights_))]

    @property
    def atlas_mesh(self) -> Mesh:
        self._check_fitted()
        return Mesh(self.atlas_vertices_, self.atlas_faces_, name="atlas")

    def atlas_meshes(self) -> list[Mesh]:
        self._check_fitted()
        return [Mesh(a, self.atlas_faces_, name=f"atlas_{m}") for m, a in enumerate(self.atlases_)]

    def _matcher(self, m: int) -> AtlasModel:
        """The shared network, looking at atlas m (cached)."""
        cache = self.__dict__.setdefault("_matchers", {})
        if m not in cache:
            mm = copy.copy(self.base_)
            mm.atlas_vertices_ = self.atlases_[m]
            mm._atlas_cache = None
            cache[m] = mm
        return cache[m]

    def _match_all(self, meshes: Sequence[Mesh], transforms: Sequence[np.ndarray], *,
                   refine: bool = True, match: MatchConfig | None = None,
                   progress: Callable[[int], None] | None = None
                   ) -> tuple[list[list[Correspondence]], np.ndarray]:
        """Every mesh matched to every atlas. -> [atlas m][shape k] correspondences, and the
        (B, M, K, 3) matched shapes in the consensus frame (mm)."""
        out = []
        for m in range(len(self.atlases_)):
            out.append(self._matcher(m).correspond(meshes, transforms=transforms, refine=refine,
                                                   match=match))
            if progress:
                progress(len(meshes))
        return out, np.stack([[c.aligned_points for c in row] for row in out], axis=1)

    # ---------------------------------------------------------------------- fit
    def fit(self, meshes: Sequence[Mesh | Any], *, run_dir: str | Path | None = None,
            resume: bool = False, progress: Callable[[dict], None] | None = None,
            base: AtlasModel | None = None) -> "MultiAtlasModel":
        """Fit the shared network (or take a fitted `base`), cluster, and train one β-VAE per
        atlas. With `run_dir`, the shared network is saved in RUN_DIR/shared as soon as it is
        trained, and `resume=True` reuses it (or continues its training). meshes: `Mesh`,
        `trimesh.Trimesh` or `pyvista.PolyData`."""
        meshes = as_meshes(meshes)
        cfg = self.config
        n = len(meshes)
        most = n // MIN_CLUSTER_SHAPES
        if most < 1:
            raise ShapeAtlasError(f"a multi-atlas model needs at least {MIN_CLUSTER_SHAPES} shapes, "
                                  f"got {n}")
        if cfg.clustering.atlases != "auto" and cfg.clustering.atlases > most:
            raise ShapeAtlasError(
                f"{cfg.clustering.atlases} atlases need at least "
                f"{MIN_CLUSTER_SHAPES * cfg.clustering.atlases} shapes "
                f"({MIN_CLUSTER_SHAPES} per cluster for its β-VAE), got {n}: use --atlases "
                f"{most} or fewer")
        self.base_ = base if base is not None else self._fit_base(meshes, run_dir, resume,
                                                                   progress)
        self.device_ = self.base_.device_
        self.atlas_faces_ = np.asarray(self.base_.atlas_faces_)
        self.atlas_init_name_ = getattr(self.base_, "atlas_init_name_", None)
        self.history_ = getattr(self.base_, "history_", [])
        self.fit_matching_ = getattr(self.base_, "fit_matching_", [])
        self.rasm_seconds_ = getattr(self.base_, "rasm_seconds_", 0.0)
        t1 = time.perf_counter()

        # 2. descriptors: shared-atlas correspondences, rigidly aligned to their consensus
        aligned, mats, self.consensus_ = rigid_consensus(self.base_.training_shapes_)
        # 3. the number of atlases and the clustering
        self.selection_, groups = None, None
        n_atlases = cfg.clustering.atlases
        if cfg.clustering.atlases == "auto":
            self.selection_, groups = choose_atlases(
                aligned, min(cfg.clustering.max_atlases, most), seed=cfg.seed)
            n_atlases = self.selection_["chosen"]
            log.info("atlases: %d chosen by a bimodality test (%d group(s) tested)", n_atlases,
                     len(self.selection_["tests"]))
        # "auto" starts from the groups it found: k-means++ restarts could prefer a cut across
        # a long spread of one group to the valley between two
        clus = soft_cluster(aligned, n_atlases, temperature=cfg.clustering.temperature,
                            restarts=cfg.clustering.restarts, seed=cfg.seed, init=groups)
        r, pi, atlases, spread = clus.memberships, clus.weights, clus.atlases, clus.spread
        # transforms: each groomed mesh -> consensus frame (the base correspondences' transform
        # is the identity for training meshes)
        transforms = list(mats)
        per_cluster = np.repeat(aligned[:, None], n_atlases, axis=1)  # (N, M, K, 3)
        # 4. every shape matched to every atlas by the shared network
        for _ in range(cfg.clustering.rounds if n_atlases > 1 else 0):
            self.atlases_, self.weights_ = atlases, pi
            self.__dict__.pop("_matchers", None)
            _, per_cluster = self._match_all(meshes, transforms)
            e = matched_energies(per_cluster, atlases)
            r = memberships(e, pi, temperature=cfg.clustering.temperature, spread=spread)
            if np.any(r.sum(axis=0) < MIN_CLUSTER_SHAPES / 2):
                warnings.warn("matching every shape to every atlas emptied a cluster: the "
                              "memberships of the descriptor clustering are kept", ClusterWarning,
                              stacklevel=2)
                r = clus.memberships
                break
            pi, atlases = m_step(per_cluster, r)
            e = matched_energies(per_cluster, atlases)
            spread = max(float((r * e).sum() / n), 1e-12)
        self.__dict__.pop("_matchers", None)
        self.n_atlases_ = n_atlases
        self.atlases_, self.weights_, self.spread_ = atlases, pi, spread
        self.memberships_ = r
        self.labels_ = r.argmax(axis=1)
        self.transforms_ = np.stack(transforms)
        self.cluster_seconds_ = time.perf_counter() - t1

        # 5. one β-VAE per cluster, memberships as weights, each with its own latent size
        t2 = time.perf_counter()
        n_eff = effective_size(r)
        small = [m for m in range(n_atlases) if n_eff[m] < MIN_CLUSTER_SHAPES]
        if small:
            raise ShapeAtlasError(
                "cluster(s) " + ", ".join(f"{m} ({n_eff[m]:.1f} shapes)" for m in small) +
                f" have fewer than {MIN_CLUSTER_SHAPES} shapes for a β-VAE: fit fewer atlases"
                + (f" (the shared network is saved in {Path(run_dir) / SHARED_DIR})"
                   if run_dir is not None else ""))
        dims = [cfg.generator.latent_dim or min(DEFAULT_LATENT, int(np.floor(n_eff[m] + 1e-9)) - 1)
                for m in range(n_atlases)]
        gens = [VAEGenerator(cfg.generator.replace(latent_dim=dims[m])).fit(
                    per_cluster[:, m], weights=r[:, m], seed=cfg.seed + m, device=self.device_,
                    progress=None if progress is None else (
                        lambda info, m=m: progress({**info, "atlas": m + 1,
                                                    "atlases": n_atlases})))
                for m in range(n_atlases)]
        self.generator_ = MixtureGenerator(gens, pi, atlases, spread=spread,
                                           temperature=cfg.clustering.temperature)
        self.training_shapes_ = per_cluster[np.arange(n), self.labels_]
        self.axes_ = principal_axes(self.training_shapes_.mean(axis=0))
        consensus_meshes = [mesh.transformed(t) for mesh, t in zip(meshes, transforms)]
        self.real_volumes_, self.real_extents_ = cohort_summary(consensus_meshes, self.axes_)
        self.generator_seconds_ = time.perf_counter() - t2
        self.shared_seconds_ = getattr(self.base_, "fit_seconds_", self.rasm_seconds_)
        self.fit_seconds_ = self.shared_seconds_ + time.perf_counter() - t1
        log.info("mAtlas: M=%d, π=%s, %.0f s beyond the shared network", n_atlases,
                 np.round(pi, 3).tolist(), time.perf_counter() - t1)
        return self

    def _fit_base(self, meshes, run_dir, resume, progress) -> AtlasModel:
        cfg = self.config.replace(clustering={"atlases": 1})
        shared = Path(run_dir) / SHARED_DIR if run_dir is not None else None
        summary = shared / SHARED_SUMMARY if shared is not None else None
        if summary is not None and resume and summary.is_file():
            log.info("reusing the shared network in %s", shared)
            base = AtlasModel.load(shared, device=cfg.device)
            info = validate.mapping(validate.read_json(summary), summary)
            base.history_ = validate.items(info, "history", summary)
            base.fit_matching_ = [tuple(x) for x in validate.items(info, "fit_matching", summary)
                                  if isinstance(x, list)]
            seconds = validate.Float(0.0, 1e9)
            base.fit_seconds_ = validate.get(info, "fit_seconds", seconds, summary)
            base.rasm_seconds_ = validate.get(info, "rasm_seconds", seconds, summary)
            return base
        base = AtlasModel(cfg).fit(meshes, run_dir=shared,
                                   resume=resume and shared is not None
                                   and (shared / "checkpoint.pt").is_file(),
                                   progress=progress)
        if shared is not None:
            base.save(shared)
            write_text_atomic(summary, json.dumps({
                "history": base.history_, "fit_matching": base.fit_matching_,
                "fit_seconds": base.fit_seconds_, "rasm_seconds": base.rasm_seconds_}))
        return base

    # ------------------------------------------------------------------ predict
    def _to_consensus(self, meshes: Sequence[Mesh], transforms: Sequence[np.ndarray] | None,
                      match: MatchConfig | None = None) -> list[np.ndarray]:
        """Each mesh's map to the consensus frame: aligned to the shared atlas (or by the given
        transform into the groomed frame), then its shared-atlas correspondence rigidly fitted
        to the consensus."""
        base = self.base_.correspond(meshes, transforms=transforms, match=match)
        return [similarity_fit(c.aligned_points, self.consensus_, scale=False)[0] @ c.transform
                for c in base]

    def _matched(self, meshes, transforms, *, refine: bool = True,
                 match: MatchConfig | None = None):
        """Every mesh matched to every atlas. -> ([m][k] correspondences, (B, M, K, 3) matched
        shapes in the consensus frame, (B, M) memberships)"""
        match = self.match_config(match)
        t = self._to_consensus(meshes, transforms, match)
        matched, per_cluster = self._match_all(meshes, t, refine=refine, match=match)
        r = memberships(matched_energies(per_cluster, self.atlases_), self.weights_,
                        temperature=self.config.clustering.temperature, spread=self.spread_)
        return matched, per_cluster, r

    def match_config(self, match: MatchConfig | None = None) -> MatchConfig:
        """`AtlasModel.match_config` of this model: `match`, checked, or `config.matching`."""
        if match is None:
            return self.config.matching
        problems = self.config.method_problems(match)
        if problems:
            raise ShapeAtlasError("; ".join(problems))
        return self.base_.match_config(match)

    def predict_proba(self, meshes: Sequence[Mesh | Any], *,
                      transforms: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """Memberships (B, M) of meshes in any frame (or with maps into the groomed frame)."""
        self._check_fitted()
        meshes = as_meshes(meshes)
        return self._matched(meshes, transforms)[2]

    def predict(self, meshes: Sequence[Mesh | Any], *,
                transforms: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """The most probable atlas of each mesh. -> (B,)"""
        return self.predict_proba(meshes, transforms=transforms).argmax(axis=1)

    def correspond(self, meshes: Sequence[Mesh | Any], *,
                   transforms: Sequence[np.ndarray] | None = None,
                   refine: bool = True, match: MatchConfig | None = None
                   ) -> list[Correspondence]:
        """Each mesh's correspondence to its most probable atlas (points in the input frame),
        with `atlas` and `memberships` filled in. transforms: maps into the groomed frame;
        match: how to match (`AtlasModel.correspond`)."""
        self._check_fitted()
        meshes = as_meshes(meshes)
        matched, _, r = self._matched(meshes, transforms, refine=refine, match=match)
        out = []
        for k in range(len(meshes)):
            m = int(r[k].argmax())
            c = matched[m][k]
            out.append(Correspondence(
                name=c.name, points=c.points, confidence=c.confidence,
                atlas_vertex=c.atlas_vertex, transform=c.transform, chamfer_mm=c.chamfer_mm,
                hausdorff_mm=c.hausdorff_mm, atlas=m, memberships=r[k],
                projection=c.projection))
        return out

    def score(self, meshes: Sequence[Mesh | Any], *,
              transforms: Sequence[np.ndarray] | None = None) -> float:
        """Mean per-shape log-likelihood lower bound (nats): log Σ_m π_m exp(ELBO_m), each
        cluster's ELBO on the shape matched to that cluster's atlas. Higher is better."""
        self._check_generator()
        _, per_cluster, _ = self._matched(as_meshes(meshes), transforms)
        return float(self.generator_.log_likelihood(per_cluster).mean())

    def encode(self, meshes: Sequence[Mesh | Any], *,
               transforms: Sequence[np.ndarray] | None = None,
               match: MatchConfig | None = None) -> Codes:
        """Latent codes of meshes, each in its most probable atlas: every mesh is matched to
        every atlas (as `predict_proba`), and its shape matched to its most probable atlas m is
        mapped to the posterior mean of cluster m's β-VAE. Deterministic.
        `decode(encode(meshes))` gives each shape's reconstruction. -> `Codes` (z (B, D),
        cluster (B,), memberships (B, M))"""
        self._check_generator()
        meshes = as_meshes(meshes)
        _, per_cluster, r = self._matched(meshes, transforms, match=match)
        cluster = r.argmax(axis=1)
        z = np.zeros((len(meshes), self.generator_.latent_dim))
        for m, g in enumerate(self.generator_.generators):
            pick = np.flatnonzero(cluster == m)
            if len(pick):
                z[pick, :g.latent_dim] = g.encode(per_cluster[pick, m])
        return Codes(z=z, cluster=cluster, memberships=r)

    # ----------------------------------------------------------------- generate
    def sample_codes(self, n: int, rng: np.random.Generator, *, components: int | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Ancestral codes (n, D) and clusters (n,); components: each cluster varies only
        its first min(k, D_m) latent directions."""
        self._check_generator()
        return self.generator_.sample(n, rng, components=components)

    def decode(self, z: np.ndarray | Codes, *, relax: int | None = None,
               cluster: np.ndarray | None = None, project: bool = True,
               progress: Callable[[int], None] | None = None) -> Samples:
        """Shapes for latent codes (S, D) of clusters (S,) (default: the most populated), or for
        the `Codes` that `encode` returns (their clusters). D is the largest cluster's latent
        size (`generator_.latent_dim`); cluster m reads the first `generator_.latent_dims[m]`
        columns. project: make each a valid mesh against its cluster's atlas
        (`project_shapes`)."""
        self._check_generator()
        z, cluster = split_codes(z, cluster)
        z = np.atleast_2d(np.asarray(z, dtype=np.float64))
        if z.shape[1] != self.generator_.latent_dim:
            raise ShapeAtlasError(f"latent codes must have {self.generator_.latent_dim} columns, "
                                  f"got {z.shape[1]}")
        if cluster is None:
            cluster = np.full(len(z), int(np.argmax(self.weights_)))
        cluster = np.asarray(cluster, dtype=np.int64).reshape(-1)
        if len(cluster) != len(z) or cluster.min() < 0 or cluster.max() >= self.n_atlases_:
            raise ShapeAtlasError(f"clusters must be {len(z)} numbers in 0..{self.n_atlases_ - 1}")
        steps = self.config.relax_steps if relax is None else relax
        verts = relax_tangentially(self.generator_.decode(z, cluster), self.atlas_faces_,
                                   iterations=steps)
        reports = None
        if project:
            verts, reports = self.project_shapes(verts, cluster, progress=progress)
        return Samples(vertices=verts, latent=z, faces=self.atlas_faces_, cluster=cluster,
                       projection=reports)

    def _projection_references(self) -> list[np.ndarray]:
        return list(self.atlases_)

    def _atlas_fallback(self) -> np.ndarray | None:
        return self.base_.atlas_vertices_  # the shared network's atlas, valid since its fit

    def traverse(self, *, directions: int = 3, steps: int = 5, cluster: int | None = None
                 ) -> dict[int, Samples]:
        """Shapes along the first latent directions of one cluster's β-VAE (default: the most
        populated), -2..+2 standard deviations of its training codes."""
        self._check_generator()
        m = int(np.argmax(self.weights_)) if cluster is None else int(cluster)
        return self._traverse(self.generator_.generators[m], directions=directions, steps=steps,
                              weights=self.memberships_[:, m], cluster=m)

    # -------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """RUN/shared (the shared network, an AtlasModel folder) + RUN/model.safetensors,
        model.json, atlas.ply and atlas_{m}.ply. No pickle."""
        self._check_fitted()
        path = Path(path)
        self.base_.save(path / SHARED_DIR)
        tensors, gen_meta = self.generator_.state()
        tensors = {f"gen.{k}": v for k, v in tensors.items()}
        tensors.update({
            "atlas.faces": torch.as_tensor(np.ascontiguousarray(self.atlas_faces_)),
            "consensus": torch.as_tensor(self.consensus_),
            "memberships": torch.as_tensor(self.memberships_),
            "transforms": torch.as_tensor(self.transforms_),
            "train.shapes": torch.as_tensor(np.ascontiguousarray(self.training_shapes_)),
            "train.volumes": torch.as_tensor(self.real_volumes_),
            "train.extents": torch.as_tensor(self.real_extents_),
            "train.axes": torch.as_tensor(self.axes_),
        })
        meta = {"format": MODEL_FORMAT, "version": MODEL_VERSION,
                "config": self.config.to_dict(), "n_atlases": self.n_atlases_,
                "weights": self.weights_.tolist(), "spread_mm2": self.spread_,
                "selection": self.selection_, "shared": SHARED_DIR, "generator": gen_meta}
        out = persistence.write_model_folder(path, tensors, meta, atlas=self.atlas_mesh)

        for mesh in self.atlas_meshes():
            write_mesh(mesh, path / f"{mesh.name}.ply")
        return out

    @classmethod
    def load(cls, path: str | Path, *, device: str = "auto") -> "MultiAtlasModel":
        """Load a model saved by `save` (safetensors + JSON: never unpickles anything)."""
        meta = persistence.read_model_meta_of(path, MODEL_FORMAT, "multi-atlas model")
        return cls.from_saved(meta, path, device=device)

    @classmethod
    def from_saved(cls, meta: dict, path: str | Path, *, device: str = "auto"
                   ) -> "MultiAtlasModel":
        """Rebuild from a model folder whose `model.json` (`meta`) says it is a multi-atlas
        model; every field and tensor is checked (`ShapeAtlasError` naming file and field)."""
        source = str(Path(path) / persistence.META_NAME)
        weights = str(Path(path) / persistence.WEIGHTS_NAME)
        persistence.check_model_version(meta, version=MODEL_VERSION, source=source)
        model = cls(persistence.config_of(meta, source))
        shared = validate.get(meta, "shared", validate.Str(200), source, default=SHARED_DIR)
        if Path(shared).name != shared or shared in ("", ".", ".."):
            raise validate.field_error(source, "shared", "must name a folder inside the model "
                                       f"folder, got {validate.shown(shared)}")
        n_atlases = validate.get(meta, "n_atlases", validate.Int(1, 64), source)
        selection = meta.get("selection")
        if selection is not None:
            validate.mapping(selection, source, "selection")
        gen_meta = validate.mapping(meta.get("generator"), source, "generator")
        model.base_ = AtlasModel.load(Path(path) / shared, device=device)
        model.device_ = model.base_.device_
        t = persistence.read_model_tensors(path)
        k = len(model.base_.atlas_vertices_)
        model.generator_ = MixtureGenerator.from_state(
            {key[4:]: v for key, v in t.items() if key.startswith("gen.")}, gen_meta,
            source=weights, prefix="gen.", n_vertices=k)
        if len(model.generator_.generators) != n_atlases:
            raise validate.field_error(source, "n_atlases", f"is {n_atlases} but the generator "
                                       f"has {len(model.generator_.generators)} clusters")
        model.n_atlases_ = n_atlases
        model.atlases_ = model.generator_.atlases_
        model.weights_ = model.generator_.weights_
        model.spread_ = model.generator_.spread_
        model.selection_ = selection
        model.atlas_faces_ = validate.faces(t, "atlas.faces", k, weights)
        model.consensus_ = validate.tensor(t, "consensus", weights, shape=(k, 3))
        model._load_training_summary(t, source=weights, n_vertices=k)
        b = len(model.training_shapes_)
        model.memberships_ = validate.tensor(t, "memberships", weights, shape=(b, n_atlases))
        model.labels_ = model.memberships_.argmax(axis=1)
        model.transforms_ = validate.tensor(t, "transforms", weights, shape=(b, 4, 4))
        model.atlas_init_name_ = model.base_.atlas_init_name_
        return model
