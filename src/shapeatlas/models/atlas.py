"""`AtlasModel`: Atlas-R-ASMG. Unsupervised, refinable correspondence of any-topology meshes to
an atlas (R-ASM), then a β-VAE on the normalised shapes that generates new ones.

    >>> model = AtlasModel(FitConfig(training={"epochs": 20}))                        # doctest: +SKIP
    >>> model.fit(groomed_meshes, run_dir="run")                                    # doctest: +SKIP
    >>> corr = model.correspond([read_mesh("new_liver.obj")])[0]                    # doctest: +SKIP
    >>> corr.points.shape   # (K, 3): the point of the input matching each atlas vertex  # doctest: +SKIP

`fit` takes meshes already in one aligned frame (the output of `groom`); `correspond` accepts
meshes in any frame: it aligns each to the atlas (rigidly, or with the given transform) and
returns the corresponding points in the input's own frame.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from shapeatlas import validate
from shapeatlas.data.cache import DiskCache
from shapeatlas.data.prepared import PREPARED_NAME, PreparedMeshes
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh.align import relaxed_rigid_step, similarity_fit
from shapeatlas.mesh.cap import cohort_cap
from shapeatlas.mesh.closest import closest_points_on_surface
from shapeatlas.mesh.core import Mesh, as_meshes
from shapeatlas.mesh.cpd import LowRankKernel, cpd_nonrigid, normalising_frame
from shapeatlas.mesh.io import read_mesh
from shapeatlas.mesh.projection import ProjectionReport
from shapeatlas.metrics.surface import point_set_distances
from shapeatlas.models import inputs, persistence
from shapeatlas.models.generative import GenerativeMixin, valid_atlas
from shapeatlas.models.generator import VAEGenerator, new_shape_vae
from shapeatlas.models.point_model import (
    MAX_CHAMFER_RISE,
    coverage_kept,
    fit_point_model,
    mean_chamfers,
    refine_with_model,
)
from shapeatlas.nn.rasm import RASM, AtlasGraph, pull_to_surface
from shapeatlas.nn.shape_vae import beta_vae_loss
from shapeatlas.training.config import FitConfig, MatchConfig
from shapeatlas.training.distributed import SINGLE, Dist
from shapeatlas.training.loop import JointTerm, loss_weights, train

#: Pose refinement (`_refine_pose`) stops once a step turns the shape by less than this.
POSE_TOLERANCE_DEG = 0.05
#: A pose refinement that turns a shape by more than this in all is not trusted.
MAX_POSE_CHANGE_DEG = 30.0

log = logging.getLogger(__name__)

#: The CPD refinement of a matched shape (`MatchConfig.surface_cpd_iterations`): weight of the
#: motion-coherence prior (CPD's usual 2), spread of the first posterior around the matched
#: points (mm of the atlas, scaled with the shape), and the most surface vertices it reads (a
#: random subset beyond).
SURFACE_CPD_LAMBDA = 2.0
SURFACE_CPD_START_MM = 1.0
SURFACE_CPD_MAX_POINTS = 6000

MODEL_FORMAT = "shapeatlas-atlas-model"
MODEL_VERSION = 1


class _Graphs(Sequence):
    """The network's view (`inputs.graph_input`) of each prepared shape, built when it is asked
    for (about 5 ms for 2,000 vertices) and not kept, so that a fit holds one step's graphs."""

    def __init__(self, meshes: Sequence[Mesh], make: Callable[[Mesh], Any]):
        self.meshes, self.make = meshes, make

    def __len__(self) -> int:
        return len(self.meshes)

    def __getitem__(self, i: int):
        return self.make(self.meshes[i])


def resolve_device(device: str) -> torch.device:
    """"auto" -> CUDA when available, else CPU; "cuda" without a GPU is a clear error. CUDA
    is the current GPU (under torchrun, the process's own: `training.distributed.session`)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ShapeAtlasError("device 'cuda' was asked for, but torch sees no CUDA GPU")
    if device == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(device)


@dataclass(frozen=True)
class Correspondence:
    """One input's correspondence to the atlas (everything in the input file's own frame).

    points: (K, 3) the input's point corresponding to each atlas vertex (mm).
    confidence: (K,) peak attention weight, in (0, 1]; low values mark ambiguous matches.
    atlas_vertex: (V,) for each input vertex, its best-matching atlas vertex.
    transform: (4, 4) input frame -> model (aligned) frame.
    chamfer_mm, hausdorff_mm: symmetric distances between the input and `points` (mm).
    atlas, memberships: multi-atlas models only: the assigned atlas and the (M,) memberships.
    projection: how far the matched points were moved to make them a valid mesh
        (`shapeatlas.mesh.projection`); None when they were not projected.
    """

    name: str
    points: np.ndarray
    confidence: np.ndarray
    atlas_vertex: np.ndarray
    transform: np.ndarray
    chamfer_mm: float
    hausdorff_mm: float
    atlas: int | None = None
    memberships: np.ndarray | None = None
    projection: ProjectionReport | None = None

    @property
    def aligned_points(self) -> np.ndarray:
        """(K, 3) `points` in the model's aligned frame: the normalised shape, in mm."""
        return self.points @ self.transform[:3, :3].T + self.transform[:3, 3]


class AtlasModel(GenerativeMixin):
    """R-ASM estimator: learns an atlas and a network mapping every atlas vertex onto any shape.

    Parameters
    ----------
    config: the fit configuration (`FitConfig`); keyword overrides replace its fields.

    Fitted attributes: `atlas_vertices_` (K, 3) mm and `atlas_faces_` (F, 3) in the aligned
    frame, `cap_reference_` (the flat-cap outline new shapes are turned to, or None),
    `normalisation_`, `net_` (the network), `history_` (per-epoch log rows),
    `training_shapes_` (B, K, 3) the refined normalised shapes, `generator_` (the β-VAE trained
    on them; see `GenerativeMixin` for `sample`, `traverse`, `reconstruct`), `fit_seconds_`.
    """

    def __init__(self, config: FitConfig | None = None, **overrides):
        self.config = (config or FitConfig()).replace(**overrides)

    # ------------------------------------------------------------------ helpers
    def _check_fitted(self) -> None:
        if not hasattr(self, "net_"):
            raise ShapeAtlasError("this AtlasModel is not fitted yet: call fit() or load() first")

    def _new_net(self) -> RASM:
        c = self.config
        return RASM(c.model.encoder, sharpness=c.model.sharpness,
                    smooth_gamma=c.model.smooth_gamma, smooth_iterations=c.model.smooth_iterations,
                    attention_memory_mb=c.model.attention_memory_mb)

    def _atlas_graph(self, points_norm: torch.Tensor) -> AtlasGraph:
        mm = self.normalisation_.to_mm(points_norm.detach().cpu().double().numpy())
        return inputs.atlas_graph(mm, self.atlas_faces_, self.normalisation_,
                                  features=self.config.model.features, device=self.device_)

    def _norm_for(self, mesh: Mesh) -> inputs.Normalisation:
        """The map to network units for one (aligned) mesh: the cohort's, or the shape's own."""
        if self.config.model.normalisation == "cohort":
            return self.normalisation_
        return inputs.Normalisation.of_shape(
            mesh, whiten=self.config.model.normalisation == "whiten")

    @property
    def atlas_mesh(self) -> Mesh:
        self._check_fitted()
        return Mesh(self.atlas_vertices_, self.atlas_faces_, name="atlas")

    # ---------------------------------------------------------------------- fit
    def fit(self, meshes: Sequence[Mesh | Any], *, run_dir: str | Path | None = None,
            resume: bool = False, progress: Callable[[dict], None] | None = None,
            sources: tuple[Sequence[Mesh], Sequence[np.ndarray]] | None = None,
            dist: Dist = SINGLE) -> "AtlasModel":
        """Learn the atlas and the correspondence network from groomed (aligned) meshes.

        The shapes are prepared once (edges evened out) into RUN_DIR/prepared, or a temporary
        folder without `run_dir`, and read back one at a time (`data.prepared`), so that
        memory does not grow with the cohort; the folder is removed when the fit is done.
        With `run_dir`, checkpoints and logs are written there and `resume=True` continues a
        killed run from its last checkpoint. progress: called with a dict after each training
        shape is prepared (stage "preparing"), after every training
        step (`training.loop.train`), after each training shape is matched for the generator
        (stage "matching") and every few β-VAE epochs (stage "generator",
        `VAEGenerator.fit`). sources: optional (original meshes, (4, 4) maps of
        each into the aligned frame), the training shapes as the user's files hold them; the
        point-distribution model (`ssm_modes`) is then fitted on those, the meshes `correspond`
        will see, rather than on the groomed ones (see `fit_point_model`), and when it is kept
        the generator learns from those files too, matched in the same poses.
        meshes: `Mesh`, `trimesh.Trimesh` or `pyvista.PolyData` (`mesh.core.as_mesh`).
        dist: this process's place in a data-parallel fit (`training.distributed`; every
        process calls `fit` with the same meshes): the training steps, the atlas re-estimation,
        the matching of the training shapes and the β-VAE are shared out; only the main process
        writes into `run_dir`. Every process ends with the same model.
        """
        meshes = as_meshes(meshes, lazy=True)
        cfg = self.config
        t0 = time.perf_counter()
        inputs.check_cohort(meshes, atlas_vertices=cfg.model.atlas_vertices)
        if sources is not None and not len(sources[0]) == len(sources[1]) == len(meshes):
            raise ValueError(f"sources: {len(sources[0])} meshes and {len(sources[1])} "
                             f"transforms for {len(meshes)} training shapes")
        if cfg.model.ssm_modes >= len(meshes) - 1:
            modes = cfg.model.ssm_modes
            raise ShapeAtlasError(f"ssm_modes {modes} needs more than {modes + 1} training "
                                  f"shapes, got {len(meshes)} (lower it, or 0: off)")
        torch.manual_seed(cfg.seed)
        self.device_ = resolve_device(cfg.device)
        run = Path(run_dir) if run_dir is not None else None
        if run is not None:
            run.mkdir(parents=True, exist_ok=True)
        # The shapes are prepared once into a folder and read back one at a time (memory
        # bounded by the batch, `data.prepared`): the run's own while it runs (a resumed fit
        # finds them there), else a temporary one.
        folder = (run / PREPARED_NAME if run is not None
                  else Path(tempfile.mkdtemp(prefix="shapeatlas-prepared-")))
        try:
            def prepared(done: int, total: int) -> None:
                if progress:
                    progress({"stage": "preparing", "step": done, "steps": total})

            # Flat parts that decimation left as a few large triangles get vertices, so that
            # the Chamfer terms see them (`ModelConfig.even_edges`).
            self._fit_prepared(PreparedMeshes(meshes, DiskCache(folder),
                                              even_edges=cfg.model.even_edges,
                                              progress=prepared),
                               run=run, resume=resume, progress=progress, sources=sources,
                               dist=dist, t0=t0)
        finally:
            if run is None:
                shutil.rmtree(folder, ignore_errors=True)
        dist.barrier()  # every process is done with the prepared shapes
        if run is not None and dist.is_main:
            shutil.rmtree(folder, ignore_errors=True)
        return self

    def _fit_prepared(self, meshes: PreparedMeshes, *, run: Path | None, resume: bool,
                      progress: Callable[[dict], None] | None,
                      sources: tuple[Sequence[Mesh], Sequence[np.ndarray]] | None,
                      dist: Dist, t0: float) -> None:
        """`fit`'s work on the prepared shapes."""
        cfg = self.config
        self.normalisation_ = inputs.Normalisation.fit(meshes,
                                                       whiten=cfg.model.normalisation == "whiten")
        at = inputs.initial_shape_index(meshes, init=cfg.model.atlas_init, seed=cfg.seed)
        start = meshes[at] if at is not None else read_mesh(cfg.model.atlas_init)
        atlas0 = inputs.atlas_mesh_of(start, atlas_vertices=cfg.model.atlas_vertices,
                                      even_edges=cfg.model.even_edges)
        log.info("initial atlas: %s (%s)", start.name, cfg.model.atlas_init)
        # The cap outline new shapes are turned to, where the training frame follows it.
        self.cap_reference_ = cohort_cap(meshes, start, at=at)
        self.atlas_faces_ = np.asarray(atlas0.faces)
        self.atlas_init_name_ = start.name
        shapes = _Graphs(meshes, lambda m: inputs.graph_input(
            m, self._norm_for(m), features=cfg.model.features, device=self.device_))
        self.net_ = self._new_net().to(self.device_)
        points0 = torch.as_tensor(self._norm_for(atlas0).to_model(atlas0.vertices),
                                  dtype=torch.float32, device=self.device_)

        def reestimate(atlas: AtlasGraph) -> torch.Tensor:
            emb = self._embed(atlas.graph)
            # The paper's plain attention, as in training, and its free pull (transport and
            # `refine_motion` are for the results). Each process refines its share of the
            # shapes; their sum (float64, one shape at a time: memory bounded) is reduced
            # over the processes.
            free = cfg.matching.replace(refine_motion="free")
            total = torch.zeros_like(atlas.graph.points, dtype=torch.float64)
            for i in dist.shard(len(shapes)):
                total += self._match(atlas, shapes[i], atlas_emb=emb, match=free,
                                     results=False)[1].double()
            return (dist.sum_(total) / len(shapes)).to(atlas.graph.points.dtype)

        joint = (self._joint_generator(meshes, atlas0)
                 if cfg.generator.mode == "joint" else None)
        points, self.history_ = train(
            self.net_, shapes, self._atlas_graph, points0, reestimate, cfg,
            run_dir=run, resume=resume, progress=progress, joint=joint, dist=dist,
        )
        # The mean of thin parts can cross itself: the atlas is made a valid mesh against the
        # initial atlas (same faces), so that every shape projected against it can be too.
        # (C order, as a loaded model has it: the matching's rounding depends on the layout)
        self.atlas_vertices_ = np.ascontiguousarray(valid_atlas(
            self.normalisation_.to_mm(points.detach().cpu().double().numpy()), self.atlas_faces_,
            reference=np.asarray(atlas0.vertices, dtype=np.float64)))
        self.net_.eval()
        self._atlas_cache = None
        self.rasm_seconds_ = time.perf_counter() - t0
        self.point_model_ = self.point_model_report_ = None
        gen_meshes, gen_poses = meshes, [np.eye(4)] * len(meshes)
        if cfg.model.ssm_modes:
            try:
                self.fit_point_model(*(sources or (gen_meshes, gen_poses)))
                if sources is not None and self.point_model_ is not None:
                    # The generator then learns from the original files too, matched as
                    # `correspond` matches a training file: with the groomed (QSlim) copies,
                    # which the model fitted on the originals matches worse, 15.6% of the LV
                    # samples were valid against 39.5% (bench/compare.py hgcn-ssm, docs/results.md).
                    gen_meshes, gen_poses = sources[0], self._point_model_poses
            except ShapeAtlasError as exc:
                if sources is None:
                    raise
                log.warning("point model on the groomed meshes instead of the original files "
                            "(%s)", exc)
                self.fit_point_model(meshes, [np.eye(4)] * len(meshes))
        # The generator learns from the training shapes' refined normalised shapes (mm,
        # aligned frame): after the correspondences, or continuing the jointly trained β-VAE.
        # (One shape at a time, the same matching, so that progress can follow it; each
        # process matches its share, and all gather them.)
        mine = {}
        share = dist.shard(len(gen_meshes))
        for step, i in enumerate(share):
            shape, (c,) = self.normalised_shapes([gen_meshes[i]], transforms=[gen_poses[i]])
            mine[i] = (shape[0], (c.name, c.chamfer_mm, c.hausdorff_mm))
            if progress:
                progress({"stage": "matching", "step": step + 1, "steps": len(share)})
        matched = {i: r for part in dist.gather(mine) for i, r in part.items()}
        shapes = np.stack([matched[i][0] for i in range(len(gen_meshes))])
        self.fit_matching_ = [matched[i][1] for i in range(len(gen_meshes))]
        t1 = time.perf_counter()
        self._fit_generator(VAEGenerator(cfg.generator), shapes, meshes, seed=cfg.seed,
                            device=self.device_,
                            warm_start=joint.module.eval() if joint is not None else None,
                            progress=progress, dist=dist)
        self.generator_seconds_ = time.perf_counter() - t1
        self.fit_seconds_ = time.perf_counter() - t0

    def _joint_generator(self, meshes: Sequence[Mesh], atlas0: Mesh) -> JointTerm:
        """The β-VAE trained inside the R-ASM steps (`generator.mode` "joint").

        Each step's smoothed normalised shapes are mapped to mm (aligned frame) and scored by
        the β-VAE's loss per coordinate, times `w_generator`; its gradient reaches the
        correspondence network, so correspondences that the generator explains well are favoured.
        """
        from scipy.spatial import cKDTree

        cfg = self.config
        norms = [self._norm_for(m) for m in meshes]
        centers = torch.tensor(np.array([n.center for n in norms]), dtype=torch.float32,
                               device=self.device_)
        linears = torch.tensor(np.array([n.linear for n in norms]), dtype=torch.float32,
                               device=self.device_)
        atlas_mm = np.asarray(atlas0.vertices, dtype=np.float64)
        # Standardisation scale: the typical distance (mm) of a shape from the initial atlas.
        spread = float(np.mean([np.sqrt(np.mean(cKDTree(m.vertices).query(atlas_mm)[0] ** 2))
                                for m in meshes]))
        net = new_shape_vae(cfg.generator, len(meshes), atlas_mm, spread).to(self.device_)
        n_values = atlas_mm.size

        def loss(idx, smoothed, gen):
            x = torch.stack([h @ linears[i].T + centers[i] for h, i in zip(smoothed, idx)])
            x = x.reshape(len(idx), -1)
            total, terms = beta_vae_loss(x, net(x, generator=gen), beta=cfg.generator.beta,
                                         noise_mm=cfg.generator.noise_mm)
            return (cfg.generator.weight * total / n_values,
                    {"gen_rms_mm": terms["rms_mm"], "gen_kl": terms["kl"]})

        return JointTerm(module=net, loss=loss)

    # ---------------------------------------------------------------- matching
    def match_config(self, match: MatchConfig | None = None) -> MatchConfig:
        """The matching settings to use: `match`, checked against this model's method, or the
        ones it was fitted with (`config.matching`). -> MatchConfig"""
        if match is None:
            return self.config.matching
        if not isinstance(match, MatchConfig):
            raise ShapeAtlasError(f"match must be a MatchConfig, got {type(match).__name__}")
        problems = self.config.method_problems(match)
        if problems:
            raise ShapeAtlasError("; ".join(problems))
        return match

    def _atlas_embedding(self) -> tuple[AtlasGraph, torch.Tensor]:
        if getattr(self, "_atlas_cache", None) is None:
            atlas = self._atlas_graph(torch.as_tensor(
                self.normalisation_.to_model(self.atlas_vertices_), dtype=torch.float32))
            self._atlas_cache = (atlas, self._embed(atlas.graph))
        return self._atlas_cache

    def _embed(self, graph) -> torch.Tensor:
        """Per-vertex embeddings of one mesh (GraphNorm is per mesh, so alone == in a batch)."""
        with torch.no_grad():
            return self.net_.vae.encode(graph.x, graph.edge_index).mu

    def _match(self, atlas: AtlasGraph, shape, *, atlas_emb: torch.Tensor, match: MatchConfig,
               refine: bool = True, results: bool = True):
        """Match one GraphInput to `atlas` with the settings `match` (its transport and
        deformation smoothing only if `results`: the atlas re-estimation matches as training
        does), then pull it onto the shape if `refine`.
        -> (ShapeMatch, refined normalised shape (K, 3))"""
        with torch.no_grad():
            m = self.net_.match(atlas_emb, shape, self._embed(shape), atlas,
                                matching=match if results else None)
        return m, (self._pull(m.smoothed, shape, atlas, match) if refine else m.smoothed)

    def _pull(self, start: torch.Tensor, shape, atlas: AtlasGraph,
              match: MatchConfig) -> torch.Tensor:
        """The test-time refinement: pull `start` (K, 3), normalised units, onto `shape` as
        `match.refine_motion` says."""
        motion = match.refine_motion
        with torch.enable_grad():
            return pull_to_surface(start, shape.points, atlas, target_weights=shape.weights,
                                   steps=match.normal_refine_steps if motion == "normal"
                                   else match.refine_steps, lr=match.refine_lr,
                                   weights=loss_weights(self.config), motion=motion)

    def _surface_cpd(self, aligned: Mesh, matched: np.ndarray, match: MatchConfig) -> np.ndarray:
        """`match.surface_cpd_iterations` of CPD of the atlas onto `aligned` (the mesh in the
        model's frame), started from the `matched` points (K, 3), then each point moved to the
        closest point of the surface. -> (K, 3) mm, aligned frame"""
        cfg = self.config
        atlas = np.asarray(self.atlas_vertices_, dtype=np.float64)
        atlas_centre, atlas_radius = normalising_frame(atlas)
        cache = self.__dict__.setdefault("_cpd_kernels", {})  # by atlas and width
        key = (atlas.tobytes(), match.surface_cpd_beta, cfg.cpd.rank)
        if key not in cache:
            cache[key] = LowRankKernel.of((atlas - atlas_centre) / atlas_radius,
                                          beta=match.surface_cpd_beta, rank=cfg.cpd.rank)
        # The atlas is placed on the match by a similarity and everything is measured in the
        # atlas's radius at that scale: the result scales and turns with the shape (as the
        # network's match does), and the kernel, which sees only distances, is the cached one.
        to_match, scale = similarity_fit(atlas, matched, scale=True)
        moving = atlas @ to_match[:3, :3].T + to_match[:3, 3]
        centre, radius = moving.mean(axis=0), scale * atlas_radius
        target = np.asarray(aligned.vertices, dtype=np.float64)
        if len(target) > SURFACE_CPD_MAX_POINTS:  # bounds the (K, N) posterior
            keep = np.random.default_rng(0).choice(len(target), SURFACE_CPD_MAX_POINTS,
                                                   replace=False)
            target = target[np.sort(keep)]
        res = cpd_nonrigid((moving - centre) / radius, (target - centre) / radius,
                           kernel=cache[key], lam=SURFACE_CPD_LAMBDA,
                           iterations=match.surface_cpd_iterations,
                           start=(matched - centre) / radius,
                           sigma2=(SURFACE_CPD_START_MM / atlas_radius) ** 2)
        moved = res.moved * radius + centre
        if not np.isfinite(moved).all():
            log.warning("%s: the CPD refinement diverged; the network's match is kept",
                        aligned.name)
            return matched
        return closest_points_on_surface(moved, aligned).points

    def _match_at(self, mesh: Mesh, t: np.ndarray, atlas: AtlasGraph, *,
                  atlas_emb: torch.Tensor, match: MatchConfig, refine: bool,
                  point_model: bool = True):
        """Match `mesh` in pose `t` (mesh frame -> aligned frame): attention + smoothing, then
        the point-distribution model's steps (if the model has one and `point_model`), then the
        test-time pull (if `refine`). -> (ShapeMatch, normalised shape, aligned frame, mm (K, 3))"""
        aligned = mesh.transformed(t)
        norm = self._norm_for(aligned)
        shape = inputs.graph_input(aligned, norm, features=self.config.model.features,
                                   device=self.device_)
        m, pts = self._match(atlas, shape, atlas_emb=atlas_emb, match=match, refine=False)
        if point_model and getattr(self, "point_model_", None) is not None:
            start = norm.to_mm(pts.cpu().double().numpy())
            mm = refine_with_model(start, aligned, self.point_model_,
                                   iterations=match.ssm_iterations)
            # The fit's check, per shape: a step that costs coverage is not taken (a mesh the
            # model does not describe, e.g. a QSlim-decimated copy; docs/results.md).
            chamfer = mean_chamfers([start], [mm], [aligned])
            if coverage_kept(chamfer, MAX_CHAMFER_RISE):
                pts = torch.as_tensor(norm.to_model(mm), dtype=pts.dtype, device=pts.device)
            else:
                log.info("%s: point-model step not taken (it raised the Chamfer distance from "
                         "%.2f to %.2f mm)", mesh.name, *chamfer)
        if refine:
            pts = self._pull(pts, shape, atlas, match)
        return m, norm.to_mm(pts.detach().cpu().double().numpy())

    def fit_point_model(self, meshes: Sequence[Mesh | Any],
                        transforms: Sequence[np.ndarray] | None = None, *,
                        modes: int | None = None,
                        max_chamfer_rise: float | None = MAX_CHAMFER_RISE,
                        match: MatchConfig | None = None) -> "AtlasModel":
        """Fit the point-distribution model on `meshes` (the training shapes) and keep it
        (`models.point_model`; `ModelConfig.ssm_modes`, which `modes` replaces when given).

        `fit` calls this after training when `ssm_modes` > 0; calling it on a fitted model adds
        or replaces the model without retraining the network, the atlas or the generator.
        transforms: (4, 4) maps of each mesh into the aligned frame, e.g. its grooming
        transform; each is refined by a local ICP on the atlas, as `correspond` does for a
        training file (default: aligned to the atlas from scratch).

        Fit it on the meshes that will be corresponded: the network matches the original
        files better than QSlim-decimated groomed copies of them (on the 50 synthetic kidneys,
        ground-truth error 1.70 against 2.46 mm), and a model fitted on the groomed copies did
        not help the originals (docs/results.md).

        max_chamfer_rise: a model whose groupwise refinement raises the training shapes' mean
        Chamfer distance by more than this fraction is not kept (`point_model.mean_chamfers`;
        a warning says so and matching goes on without one; None keeps it whatever the rise).
        `point_model_report_` records the modes, the time, both means and whether it was kept.
        match: how the training shapes are matched first (None: `config.matching`).
        -> self
        """
        self._check_fitted()
        meshes = as_meshes(meshes)
        cfg = self.config.replace(model={"ssm_modes": modes})  # validates (ShapeAtlasError)
        self.point_model_ = None
        t0 = time.perf_counter()
        if transforms is not None:
            transforms = [inputs.refine_pose_on_atlas(m, self.atlas_mesh, t,
                                                      cap=getattr(self, "cap_reference_", None))
                          for m, t in zip(meshes, transforms)]
        corr = self.correspond(meshes, transforms=transforms, refine=False, match=match)
        self._point_model_poses = [c.transform for c in corr]
        aligned = [m.transformed(c.transform) for m, c in zip(meshes, corr)]
        before = [c.aligned_points for c in corr]
        after, pm = fit_point_model(
            before, aligned, modes=cfg.model.ssm_modes, rounds=cfg.training.ssm_rounds,
            progress=lambda r, move: log.info("point model: round %d/%d, mean move %.3f mm",
                                              r, cfg.training.ssm_rounds, move))
        chamfer = mean_chamfers(before, after, aligned)
        kept = coverage_kept(chamfer, max_chamfer_rise)
        self.config = cfg
        self.point_model_ = pm if kept else None
        self.point_model_seconds_ = time.perf_counter() - t0
        self.point_model_report_ = {
            "modes": cfg.model.ssm_modes, "seconds": self.point_model_seconds_,
            "chamfer_before_mm": chamfer[0], "chamfer_after_mm": chamfer[1], "kept": kept}
        if kept:
            log.info("point model: %d modes from %d shapes in %.1f s (training Chamfer %.2f -> "
                     "%.2f mm)", cfg.model.ssm_modes, len(meshes), self.point_model_seconds_,
                     *chamfer)
        else:
            log.warning("point model not kept: it raised the training shapes' mean Chamfer "
                        "distance from %.2f to %.2f mm (more than %.0f%%), so its %d modes do "
                        "not describe this cohort; matching goes on without it", *chamfer,
                        100 * max_chamfer_rise, cfg.model.ssm_modes)
        return self

    def _refine_pose(self, mesh: Mesh, t: np.ndarray, atlas: AtlasGraph,
                     atlas_emb: torch.Tensor, match: MatchConfig) -> np.ndarray:
        """Generalised-Procrustes pose refinement of one mesh on its own correspondences.

        Each round matches the mesh in pose `t` (attention + smoothing) and moves it by an
        over-relaxed Procrustes step of its correspondences onto the atlas vertices
        (`match.pose_iterations` rounds at most, `match.pose_relaxation`; it stops early once
        a step turns by less than `POSE_TOLERANCE_DEG`). A rigid alignment without
        correspondences settles where the surfaces overlap best; this one moves the shape until
        its correspondences, which partly follow features rather than position, sit on the
        atlas. It is an iteration without an objective that it provably lowers (on the
        synthetic LVs the RMS to the atlas rises while the ground-truth error falls), so a run
        that turns the shape by more than `MAX_POSE_CHANGE_DEG` in all is distrusted: the
        starting pose is kept, with a warning. -> (4, 4) mesh frame -> aligned frame
        """
        from scipy.spatial.transform import Rotation


        start = t
        for _ in range(match.pose_iterations):
            _, points = self._match_at(mesh, t, atlas, atlas_emb=atlas_emb, match=match,
                                       refine=False, point_model=False)
            step = relaxed_rigid_step(points, self.atlas_vertices_, match.pose_relaxation)
            t = step @ t
            if Rotation.from_matrix(step[:3, :3]).magnitude() < np.radians(POSE_TOLERANCE_DEG):
                break
        turned = np.degrees(Rotation.from_matrix(t[:3, :3] @ start[:3, :3].T).magnitude())
        if turned > MAX_POSE_CHANGE_DEG:
            log.warning("%s: pose refinement turned it by %.0f degrees (more than %g): keeping "
                        "its starting pose", mesh.name, turned, MAX_POSE_CHANGE_DEG)
            return start
        return t

    def correspond(self, meshes: Sequence[Mesh | Any], *,
                   transforms: Sequence[np.ndarray] | None = None,
                   refine: bool = True, match: MatchConfig | None = None,
                   project: bool = False) -> list[Correspondence]:
        """Map every atlas vertex onto each mesh, without retraining.

        meshes: `Mesh`, `trimesh.Trimesh` or `pyvista.PolyData` (`mesh.core.as_mesh`).

        transforms: optional (4, 4) maps from each mesh's frame to the model's aligned frame
        (e.g. from `groom.json`); by default each mesh is aligned rigidly to the atlas, turned
        about its flat cap where the model keeps one, and refined by a local ICP and the turn
        again (`inputs.new_shape_pose`).
        refine: False gives the attention + smoothing result without the CPD refinement and the
        test-time pull.
        match: how to match (`MatchConfig`; None: the one the model was fitted with,
        `config.matching`). With `pose_iterations`, each mesh's pose is refined on its own
        correspondences (`_refine_pose`); each result's `transform` is the pose used.
        project: make each matched shape a valid mesh (closed and free of crossing, folded or
        degenerate faces) by the smallest local change `shapeatlas.mesh.projection` finds. Off
        by default: the projection moves points that are the correspondence (on real livers
        deformed by known warps it raised the ground-truth error from 3.84 to 4.82 mm), so
        `shapeatlas correspond` keeps the points and projects only the surface it writes.
        """
        match = self.match_config(match)
        self._check_fitted()
        meshes = as_meshes(meshes)
        self.net_.eval()
        atlas, atlas_emb = self._atlas_embedding()
        atlas_mesh = self.atlas_mesh
        results = []
        for i, mesh in enumerate(meshes):
            inputs.check_mesh_for_atlas(mesh, atlas_vertices=len(self.atlas_vertices_))
            if transforms is not None:
                t = np.asarray(transforms[i], dtype=np.float64)
            else:
                t = inputs.new_shape_pose(mesh, atlas_mesh, cohort_scale=self.normalisation_.scale,
                                          cap=getattr(self, "cap_reference_", None))
            if match.pose_iterations:
                t = self._refine_pose(mesh, t, atlas, atlas_emb, match)
            m, mm = self._match_at(mesh, t, atlas, atlas_emb=atlas_emb, match=match,
                                   refine=refine)
            if refine and match.surface_cpd_iterations:
                mm = self._surface_cpd(mesh.transformed(t), mm, match)
            report = None
            if project:
                projected, (report,) = self.project_shapes(mm[None])
                mm = projected[0]
            inv = np.linalg.inv(t)
            points = mm @ inv[:3, :3].T + inv[:3, 3]
            d = point_set_distances(np.asarray(mesh.vertices), points)
            results.append(Correspondence(
                name=mesh.name, points=points,
                confidence=m.confidence.cpu().numpy(),
                atlas_vertex=m.best_atlas_vertex.cpu().numpy(),
                transform=t, chamfer_mm=d.chamfer, hausdorff_mm=d.hausdorff,
                projection=report,
            ))
        return results

    # --------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Write `model.safetensors` + `model.json` + `atlas.ply` into folder `path` (no pickle)."""
        self._check_fitted()
        tensors = {f"net.{k}": v for k, v in self.net_.state_dict().items()}
        tensors["atlas.vertices"] = torch.tensor(np.ascontiguousarray(self.atlas_vertices_),
                                                dtype=torch.float64)
        tensors["atlas.faces"] = torch.tensor(np.ascontiguousarray(self.atlas_faces_),
                                             dtype=torch.int64)
        gen_tensors, gen_meta = self._generator_tensors()
        tensors.update(gen_tensors)
        tensors.update(persistence.cap_tensors(getattr(self, "cap_reference_", None)))
        pm = getattr(self, "point_model_", None)
        if pm is not None:
            tensors.update({f"point_model.{k}": torch.tensor(np.ascontiguousarray(getattr(pm, k)),
                                                             dtype=torch.float64)
                            for k in ("mean", "modes", "sd")})
        meta = {"format": MODEL_FORMAT, "version": MODEL_VERSION,
                "config": self.config.to_dict(),
                "normalisation": self.normalisation_.to_dict(),
                "atlas_init": getattr(self, "atlas_init_name_", None),
                "generator": gen_meta}
        return persistence.write_model_folder(path, tensors, meta, atlas=self.atlas_mesh)

    @classmethod
    def load(cls, path: str | Path, *, device: str = "auto") -> "AtlasModel":
        """Load a model saved by `save` (safetensors + JSON: never unpickles anything)."""
        meta = persistence.read_model_meta_of(path, MODEL_FORMAT, "atlas model")
        return cls.from_saved(meta, path, device=device)

    @classmethod
    def from_saved(cls, meta: dict, path: str | Path, *, device: str = "auto") -> "AtlasModel":
        """Rebuild from a model folder whose `model.json` (`meta`) says it is an atlas model;
        every field and tensor is checked (`ShapeAtlasError` naming the file and the field)."""
        source = str(Path(path) / persistence.META_NAME)
        weights = str(Path(path) / persistence.WEIGHTS_NAME)
        persistence.check_model_version(meta, version=MODEL_VERSION, source=source)
        model = cls(persistence.config_of(meta, source))
        normalisation = persistence.normalisation_of(meta, source)
        atlas_init = validate.get(meta, "atlas_init", validate.Str(optional=True), source,
                                  default=None)
        model.device_ = resolve_device(device)
        tensors = persistence.read_model_tensors(path)
        state = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
        with torch.device("meta"):  # shapes only: a config cannot make us allocate much
            want = {k: tuple(v.shape) for k, v in model._new_net().state_dict().items()}
        for k in sorted(set(want) | set(state)):
            problem = ("unexpected" if k not in want else "missing" if k not in state
                       else f"shape {tuple(state[k].shape)}, expected {want[k]}"
                       if tuple(state[k].shape) != want[k]
                       else f"{state[k].dtype}, expected floats"
                       if not state[k].dtype.is_floating_point else None)
            if problem:
                raise ShapeAtlasError(f"{weights}: weights do not fit the saved configuration "
                                      f"(tensor 'net.{k}': {problem})")
        validate.finite_tensors(tensors, weights, prefix="net.")
        net = model._new_net()
        net.load_state_dict(state)
        model.net_ = net.to(model.device_).eval()
        model.atlas_vertices_, model.atlas_faces_ = persistence.atlas_of(tensors, weights)
        model.normalisation_ = normalisation
        model.atlas_init_name_ = atlas_init
        model._atlas_cache = None
        model.cap_reference_ = persistence.cap_of(tensors, weights)
        model.point_model_ = persistence.point_model_of(tensors, len(model.atlas_vertices_),
                                                        weights)
        generator = meta.get("generator")
        if generator is not None:
            validate.mapping(generator, source, "generator")
        model._load_generator(tensors, generator, source=weights,
                              n_vertices=len(model.atlas_vertices_))
        return model
