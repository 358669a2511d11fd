"""`CPDPCAModel`: the classical baseline, through the same interface as `AtlasModel`.

Rigid alignment (grooming, or `correspond`'s alignment for new meshes), non-rigid Coherent Point
Drift of the atlas onto each shape (`shapeatlas.mesh.cpd`), the atlas re-estimated as the
vertex-wise mean for `atlas_rounds` rounds, then PCA of the registered atlases with Gaussian
sampling in mode space.

    >>> model = CPDPCAModel(FitConfig(method="cpd-pca")).fit(groomed_meshes)   # doctest: +SKIP
    >>> virtual = model.sample(100, seed=0)                                     # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from shapeatlas import validate
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh.cap import cohort_cap, turn_cap
from shapeatlas.mesh.core import Mesh, as_meshes
from shapeatlas.mesh.cpd import LowRankKernel, cpd_nonrigid, normalising_frame
from shapeatlas.metrics.surface import point_set_distances
from shapeatlas.models import inputs, persistence
from shapeatlas.models.atlas import Correspondence
from shapeatlas.models.generative import GenerativeMixin
from shapeatlas.models.generator import PCAGenerator
from shapeatlas.training.config import FitConfig, MatchConfig

log = logging.getLogger(__name__)

MODEL_FORMAT = "shapeatlas-cpd-pca-model"
MODEL_VERSION = 1


class CPDPCAModel(GenerativeMixin):
    """CPD + PCA estimator. Fitted attributes: `atlas_vertices_` (K, 3), `atlas_faces_` (F, 3),
    `generator_` (PCA), `training_shapes_` (B, K, 3), `fit_seconds_`."""

    def __init__(self, config: FitConfig | None = None, **overrides):
        self.config = (config or FitConfig(method="cpd-pca")).replace(**overrides)

    def _check_fitted(self) -> None:
        if not hasattr(self, "atlas_vertices_"):
            raise ShapeAtlasError("this CPDPCAModel is not fitted yet: call fit() or load() first")

    @property
    def atlas_mesh(self) -> Mesh:
        self._check_fitted()
        return Mesh(self.atlas_vertices_, self.atlas_faces_, name="atlas")

    def _kernel(self, atlas: np.ndarray) -> tuple[LowRankKernel, np.ndarray, float]:
        c, r = normalising_frame(atlas)
        k = LowRankKernel.of((atlas - c) / r, beta=self.config.cpd.beta, rank=self.config.cpd.rank)
        return k, c, r

    def _register(self, atlas: np.ndarray, kernel, c: np.ndarray, r: float, mesh: Mesh):
        """CPD of the atlas onto one aligned mesh. -> (points (K, 3) mm, CPDResult)"""
        cfg = self.config
        res = cpd_nonrigid((atlas - c) / r, (np.asarray(mesh.vertices) - c) / r, kernel=kernel,
                           lam=cfg.cpd.lam, iterations=cfg.cpd.iterations)
        pts = res.moved * r + c
        if not np.isfinite(pts).all():
            raise ShapeAtlasError(f"{mesh.name}: CPD registration diverged (non-finite points)")
        return pts, res

    def fit(self, meshes: Sequence[Mesh | Any], *, run_dir: str | Path | None = None,
            resume: bool = False, progress: Callable[[dict], None] | None = None
            ) -> "CPDPCAModel":
        """Register the atlas onto every groomed (aligned) mesh, then PCA. `run_dir` and
        `resume` are accepted for interface parity (a CPD fit takes minutes, not hours).
        meshes: `Mesh`, `trimesh.Trimesh` or `pyvista.PolyData` (`mesh.core.as_mesh`).
        progress: called after each registration with {"stage": "registration", "round",
        "rounds", "step", "steps"}."""
        meshes = as_meshes(meshes)
        cfg = self.config
        t0 = time.perf_counter()
        inputs.check_cohort(meshes, atlas_vertices=cfg.model.atlas_vertices)
        self.cohort_scale_ = inputs.Normalisation.fit(meshes).scale
        start, atlas0 = inputs.initial_atlas(meshes, init=cfg.model.atlas_init, seed=cfg.seed,
                                             atlas_vertices=cfg.model.atlas_vertices)
        self.atlas_init_name_ = start.name
        self.cap_reference_ = cohort_cap(meshes, start)  # as `AtlasModel.fit`
        self.atlas_faces_ = np.asarray(atlas0.faces)
        atlas = np.asarray(atlas0.vertices, dtype=np.float64)
        shapes = np.zeros((len(meshes), len(atlas), 3))
        for rnd in range(cfg.training.atlas_rounds):
            kernel, c, r = self._kernel(atlas)
            for i, m in enumerate(meshes):
                shapes[i] = self._register(atlas, kernel, c, r, m)[0]
                if progress:
                    progress({"stage": "registration", "round": rnd + 1,
                              "rounds": cfg.training.atlas_rounds, "step": i + 1,
                              "steps": len(meshes)})
            log.info("CPD round %d/%d: registered the atlas onto %d shapes (%.0f s so far)",
                     rnd + 1, cfg.training.atlas_rounds, len(meshes), time.perf_counter() - t0)
            if rnd < cfg.training.atlas_rounds - 1:
                atlas = shapes.mean(axis=0)
        self.atlas_vertices_ = atlas
        self._kernel_cache = None
        self.history_ = []
        self.rasm_seconds_ = time.perf_counter() - t0
        self.fit_matching_ = []
        for m, s in zip(meshes, shapes):
            d = point_set_distances(np.asarray(m.vertices), s)
            self.fit_matching_.append((m.name, d.chamfer, d.hausdorff))
        t1 = time.perf_counter()
        self._fit_generator(PCAGenerator(cfg.generator.latent_dim), shapes, meshes, seed=cfg.seed)
        self.generator_seconds_ = time.perf_counter() - t1
        self.device_ = torch.device("cpu")
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def correspond(self, meshes: Sequence[Mesh | Any], *,
                   transforms: Sequence[np.ndarray] | None = None,
                   refine: bool = True, match: MatchConfig | None = None
                   ) -> list[Correspondence]:
        """CPD of the atlas onto each mesh (aligned to the atlas first, and turned about its flat
        cap where the model keeps one, unless `transforms` are given); points in each input's
        own frame. `refine` and `match` are ignored (CPD has neither the network's matching nor
        its pull: `config.cpd` sets the registration). meshes: `Mesh`, `trimesh.Trimesh` or
        `pyvista.PolyData`."""
        self._check_fitted()
        meshes = as_meshes(meshes)
        if getattr(self, "_kernel_cache", None) is None:  # one eigendecomposition per model
            self._kernel_cache = self._kernel(self.atlas_vertices_)
        kernel, c, r = self._kernel_cache
        out = []
        for i, mesh in enumerate(meshes):
            inputs.check_mesh_for_atlas(mesh, atlas_vertices=len(self.atlas_vertices_))
            if transforms is not None:
                t = np.asarray(transforms[i], dtype=np.float64)
            else:
                t = turn_cap(mesh, inputs.transform_to_atlas(
                    mesh, self.atlas_mesh, cohort_scale=self.cohort_scale_),
                    getattr(self, "cap_reference_", None), surface=self.atlas_vertices_)
            aligned = mesh.transformed(t)
            pts, res = self._register(self.atlas_vertices_, kernel, c, r, aligned)
            inv = np.linalg.inv(t)
            points = pts @ inv[:3, :3].T + inv[:3, 3]
            p = res.posterior
            conf = p.max(axis=1) / np.maximum(p.sum(axis=1), np.finfo(np.float32).tiny)
            d = point_set_distances(np.asarray(mesh.vertices), points)
            out.append(Correspondence(name=mesh.name, points=points,
                                      confidence=conf.astype(np.float64),
                                      atlas_vertex=p.argmax(axis=0), transform=t,
                                      chamfer_mm=d.chamfer, hausdorff_mm=d.hausdorff))
        return out

    def save(self, path: str | Path) -> Path:
        """Write `model.safetensors` + `model.json` + `atlas.ply` into folder `path` (no pickle)."""
        self._check_fitted()
        tensors, gen_meta = self._generator_tensors()
        tensors["atlas.vertices"] = torch.as_tensor(np.ascontiguousarray(self.atlas_vertices_))
        tensors["atlas.faces"] = torch.as_tensor(np.ascontiguousarray(self.atlas_faces_))
        tensors.update(persistence.cap_tensors(getattr(self, "cap_reference_", None)))
        meta = {"format": MODEL_FORMAT, "version": MODEL_VERSION,
                "config": self.config.to_dict(), "cohort_scale": self.cohort_scale_,
                "atlas_init": self.atlas_init_name_, "generator": gen_meta}
        return persistence.write_model_folder(path, tensors, meta, atlas=self.atlas_mesh)

    @classmethod
    def from_saved(cls, meta: dict, path: str | Path) -> "CPDPCAModel":
        """Rebuild from a model folder whose `model.json` (`meta`) says it is a CPD-PCA model;
        every field and tensor is checked (`ShapeAtlasError` naming the file and the field)."""
        source = str(Path(path) / persistence.META_NAME)
        weights = str(Path(path) / persistence.WEIGHTS_NAME)
        persistence.check_model_version(meta, version=MODEL_VERSION, source=source)
        model = cls(persistence.config_of(meta, source))
        model.cohort_scale_ = validate.get(meta, "cohort_scale",
                                           validate.Float(0.0, 1e9, lo_open=True), source)
        model.atlas_init_name_ = validate.get(meta, "atlas_init", validate.Str(optional=True),
                                              source, default=None)
        generator = meta.get("generator")
        if generator is not None:
            validate.mapping(generator, source, "generator")
        tensors = persistence.read_model_tensors(path)
        model.atlas_vertices_, model.atlas_faces_ = persistence.atlas_of(tensors, weights)
        model.cap_reference_ = persistence.cap_of(tensors, weights)
        model.device_ = torch.device("cpu")
        model._load_generator(tensors, generator, source=weights,
                              n_vertices=len(model.atlas_vertices_))
        return model

