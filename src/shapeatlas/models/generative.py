"""What every shapeatlas model does once its correspondences exist: learn a shape generator on
the normalised shapes, sample virtual cohorts, traverse the latent space, encode meshes to
latent codes and decode codes to shapes, reconstruct a mesh.

`GenerativeMixin` is shared by `AtlasModel` (β-VAE), `CPDPCAModel` (PCA) and
`MultiAtlasModel` (one β-VAE per atlas), so `sample`, `evaluate` and the benchmark treat every
method identically. The host class provides `config`, `atlas_faces_`, `_check_fitted()` and
`correspond(meshes, transforms=..., match=...)`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from shapeatlas import validate
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh import geometry as geo
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.projection import ProjectionReport, Projector
from shapeatlas.mesh.relax import relax_tangentially
from shapeatlas.mesh.remesh import UNTANGLE_ROUNDS, untangle
from shapeatlas.metrics.ssm import extents, principal_axes
from shapeatlas.models.generator import generator_from_state
from shapeatlas.training.config import MatchConfig

log = logging.getLogger(__name__)

#: Standard deviations covered on each side by a latent traversal.
TRAVERSE_SPAN = 2.0


@dataclass(frozen=True)
class Samples:
    """A virtual cohort in the aligned frame (mm). vertices: (S, K, 3); latent: (S, D);
    faces: (F, 3) the atlas faces shared by every sample."""

    vertices: np.ndarray
    latent: np.ndarray
    faces: np.ndarray
    cluster: np.ndarray | None = None
    """(S,) the atlas (cluster) each sample was drawn from, for multi-atlas models."""
    projection: tuple[ProjectionReport, ...] | None = None
    """How far each sample was moved to make it a valid mesh (`shapeatlas.mesh.projection`);
    None when the decoder's output was returned as is."""

    def meshes(self, *, prefix: str = "sample") -> list[Mesh]:
        return [Mesh(v, self.faces, name=f"{prefix}_{i:04d}") for i, v in enumerate(self.vertices)]


@dataclass(frozen=True)
class Codes:
    """Latent codes of a multi-atlas model's shapes (`MultiAtlasModel.encode`), each in the
    latent space of its own atlas's β-VAE (a single-atlas model's `encode` returns the (B, D)
    array alone).

    z: (B, D) the codes; D is the largest cluster's latent size and a shape of cluster m uses
        the first `generator_.latent_dims[m]` columns (the others are 0).
    cluster: (B,) the most probable atlas of each shape.
    memberships: (B, M) each shape's membership of each atlas.
    `decode(codes)` decodes each code with its own cluster's decoder.
    """

    z: np.ndarray
    cluster: np.ndarray
    memberships: np.ndarray | None = None


def latent_sizes(generator) -> dict:
    """{"latent_dim": D} for the JSON files that describe a run, plus "latent_dims" (one per
    atlas) for a mixture, whose D is the largest of them."""
    dims = getattr(generator, "latent_dims", None)
    return {"latent_dim": generator.latent_dim, **({"latent_dims": dims} if dims else {})}


def cohort_summary(meshes: Sequence[Mesh], axes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Volumes (mL; NaN for open meshes) and extents along `axes` (mm) of real meshes."""
    vols = np.array([m.volume / 1000.0 if m.is_watertight else np.nan for m in meshes])
    ext = np.array([extents(m.vertices, axes) for m in meshes])
    return vols, ext


def valid_atlas(vertices: np.ndarray, faces: np.ndarray, *,
                reference: np.ndarray | None = None) -> np.ndarray:
    """An atlas (K, 3) that passes the mesh check, for the projection to start from: as it is
    when it does; else projected onto a valid `reference` with the same faces (the initial
    atlas, a decimated training shape) when one is given; else smoothed apart around its
    crossing faces (`remesh.untangle`, with more rounds where the default leaves some)."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if Projector(f, v).reference_valid:
        return v
    if reference is not None:
        proj = Projector(f, reference)
        if proj.reference_valid:
            out, report = proj(v)
            if report.valid:
                return out
    for rounds in (UNTANGLE_ROUNDS, 4 * UNTANGLE_ROUNDS):
        smoothed, left = untangle(Mesh(v, f, name="atlas"), rounds=rounds,
                                  context="of the atlas")
        if left == 0 and Projector(f, smoothed.vertices).reference_valid:
            return np.asarray(smoothed.vertices, dtype=np.float64)
    log.warning("the atlas crosses itself and could not be smoothed apart: shapes projected "
                "against it may still fail the mesh check")
    return v


class GenerativeMixin:
    """Shape generation on top of a fitted correspondence model."""

    def _fit_generator(self, generator, shapes: np.ndarray, meshes: Sequence[Mesh], *,
                       seed: int, device: torch.device | None = None, **options) -> None:
        """shapes: (B, K, 3) training normalised shapes (aligned frame, mm); meshes: the B
        training meshes (aligned frame) for the real-cohort volumes and extents; options go to
        the generator's `fit` (e.g. `warm_start`)."""
        self.training_shapes_ = np.asarray(shapes, dtype=np.float64)
        self.axes_ = principal_axes(self.training_shapes_.mean(axis=0))
        self.real_volumes_, self.real_extents_ = cohort_summary(meshes, self.axes_)
        self.generator_ = generator.fit(self.training_shapes_, seed=seed, device=device,
                                        **options)

    def _check_generator(self) -> None:
        self._check_fitted()
        if getattr(self, "generator_", None) is None:
            raise ShapeAtlasError("this model has no shape generator (it was fitted by an older "
                                  "shapeatlas or with the generator switched off): refit it")

    def sample(self, n: int, *, seed: int = 0, relax: int | None = None,
               project: bool = True, components: int | None = None,
               progress: Callable[[int], None] | None = None) -> Samples:
        """n virtual shapes, in atlas topology, in the aligned frame (mm); see `decode`.
        components: vary only the first k latent directions (by training variance, as
        `traverse` and `reconstruct(n_components=k)` order them), the others at the prior's
        centre; the same seed draws the same codes for every k, masked.
        progress(1) after each shape is made valid (`decode`)."""
        self._check_generator()
        if n < 1:
            raise ShapeAtlasError(f"the number of samples must be at least 1, got {n}")
        z, cluster = self.sample_codes(n, np.random.default_rng(seed), components=components)
        return self.decode(z, relax=relax, cluster=cluster, project=project, progress=progress)

    def sample_codes(self, n: int, rng: np.random.Generator, *, components: int | None = None
                     ) -> tuple[np.ndarray, np.ndarray | None]:
        """n latent codes (n, D) from the prior, and the cluster of each (None: one atlas);
        components: only the first k latent directions vary (see `sample`)."""
        self._check_generator()
        return self.generator_.sample_latent(n, rng, components=components), None

    def decode(self, z: np.ndarray | Codes, *, relax: int | None = None,
               cluster: np.ndarray | None = None, project: bool = True,
               progress: Callable[[int], None] | None = None) -> Samples:
        """Shapes for given latent codes (S, D) (what `encode` returns, or codes of your own),
        tangentially relaxed by `relax` steps (default: the config's `generator.relax`; see
        `shapeatlas.mesh.relax`) and, with `project`, each made a valid mesh
        (`project_shapes`; progress(1) after each). -> Samples, vertices (S, K, 3) in the
        aligned frame (mm)"""
        self._check_generator()
        z, cluster = split_codes(z, cluster)
        if cluster is not None:
            raise ShapeAtlasError("this model has a single atlas: decode takes no clusters")
        z = np.atleast_2d(np.asarray(z, dtype=np.float64))
        if z.shape[1] != self.generator_.latent_dim:
            raise ShapeAtlasError(f"latent codes must have {self.generator_.latent_dim} columns, "
                                  f"got {z.shape[1]}")
        steps = self.config.relax_steps if relax is None else relax
        verts = relax_tangentially(self.generator_.decode(z), self.atlas_faces_, iterations=steps)
        reports = None
        if project:
            verts, reports = self.project_shapes(verts, progress=progress)
        return Samples(vertices=verts, latent=z, faces=self.atlas_faces_, projection=reports)

    def _projection_references(self) -> list[np.ndarray]:
        """The valid meshes (vertices with `atlas_faces_`) shapes are projected against: the
        atlas; a multi-atlas model has one per cluster."""
        return [self.atlas_vertices_]

    def _atlas_fallback(self) -> np.ndarray | None:
        """A valid mesh with the atlas faces to make a crossing reference valid against
        (`valid_atlas`); None: smoothing only."""
        return None

    def project_shapes(self, vertices: np.ndarray, cluster: np.ndarray | None = None, *,
                       progress: Callable[[int], None] | None = None
                       ) -> tuple[np.ndarray, tuple[ProjectionReport, ...]]:
        """Shapes (S, K, 3) in the aligned frame, with the atlas faces, each made a valid mesh
        by the smallest local change `shapeatlas.mesh.projection` finds (a valid shape is
        returned as is). cluster: (S,) the atlas of each shape (multi-atlas models);
        progress(1) after each shape. -> (shapes, one report per shape)"""
        refs = self._projection_references()
        cache = self.__dict__.setdefault("_projectors", {})  # by the reference's bytes
        out = np.array(vertices, dtype=np.float64)
        reports = []
        for i, v in enumerate(out):
            ref = np.ascontiguousarray(refs[0 if cluster is None else int(cluster[i])],
                                       dtype=np.float64)
            key = ref.tobytes()
            if key not in cache:
                cache[key] = Projector(self.atlas_faces_, valid_atlas(
                    ref, self.atlas_faces_, reference=self._atlas_fallback()))
            out[i], rep = cache[key](v)
            reports.append(rep)
            if progress:
                progress(1)
        return out, tuple(reports)

    def traverse(self, *, directions: int = 3, steps: int = 5) -> dict[int, Samples]:
        """Shapes along each of the first `directions` latent directions (by training variance),
        from -2 to +2 standard deviations of the training codes, the others at their mean."""
        self._check_generator()
        return self._traverse(self.generator_, directions=directions, steps=steps)

    def _traverse(self, g, *, directions: int, steps: int, weights: np.ndarray | None = None,
                  cluster: int | None = None) -> dict[int, Samples]:
        """`traverse` for generator `g` (one cluster's, with its memberships as `weights`)."""
        z_train = g.encode(self.training_shapes_)
        w = np.ones(len(z_train)) if weights is None else weights
        centre = np.average(z_train, axis=0, weights=w)
        sd = np.sqrt(np.average((z_train - centre) ** 2, axis=0, weights=w))
        out = {}
        for rank, d in enumerate(g.latent_order_[:directions]):
            z = np.zeros((steps, self.generator_.latent_dim))  # a mixture's codes may be wider
            z[:, :len(centre)] = centre
            z[:, d] = centre[d] + np.linspace(-TRAVERSE_SPAN, TRAVERSE_SPAN, steps) * sd[d]
            out[rank] = self.decode(z, cluster=None if cluster is None else np.full(steps, cluster))
        return out

    def normalised_shapes(self, meshes: Sequence[Mesh | Any], *,
                          transforms: Sequence[np.ndarray] | None = None,
                          match: MatchConfig | None = None) -> tuple[np.ndarray, list]:
        """Correspond meshes (`match`: how, as `correspond` takes it) and return their
        normalised shapes in the aligned frame (B, K, 3) mm, with the correspondences."""
        corr = self.correspond(meshes, transforms=transforms, match=match)
        shapes = np.stack([c.aligned_points for c in corr])
        return shapes, corr

    def encode(self, meshes: Sequence[Mesh | Any], *,
               transforms: Sequence[np.ndarray] | None = None,
               match: MatchConfig | None = None) -> np.ndarray:
        """Latent codes of meshes: each is corresponded (`match`: how, as `correspond` takes
        it; `transforms`: (4, 4) maps into the model's aligned frame, default: aligned to the
        atlas), and its normalised shape mapped to its code: the β-VAE's posterior mean, or the
        PCA scores of a CPD-PCA model. Deterministic: the same meshes give the same codes.
        `decode(encode(meshes))` gives the model's reconstruction of each shape in the aligned
        frame. meshes: `Mesh`, `trimesh.Trimesh` or `pyvista.PolyData`. -> (B, D)"""
        self._check_generator()
        shapes, _ = self.normalised_shapes(meshes, transforms=transforms, match=match)
        return self.generator_.encode(shapes)

    def transform(self, meshes: Sequence[Mesh | Any], *,
                  transforms: Sequence[np.ndarray] | None = None,
                  match: MatchConfig | None = None) -> np.ndarray | Codes:
        """`encode`, by scikit-learn's name for it."""
        return self.encode(meshes, transforms=transforms, match=match)

    def reconstruct(self, meshes: Sequence[Mesh | Any], *, n_components: int | None = None,
                    transforms: Sequence[np.ndarray] | None = None,
                    match: MatchConfig | None = None) -> list[Mesh]:
        """Each mesh through the model: correspond (`match`: how), encode, decode; in the
        input's frame."""
        self._check_generator()
        shapes, corr = self.normalised_shapes(meshes, transforms=transforms, match=match)
        recon, _ = self.project_shapes(self.generator_.reconstruct(shapes,
                                                                   n_components=n_components))
        out = []
        for r, c in zip(recon, corr):
            inv = np.linalg.inv(c.transform)
            out.append(Mesh(r @ inv[:3, :3].T + inv[:3, 3], self.atlas_faces_, name=c.name))
        return out

    def sample_volumes(self, vertices: np.ndarray) -> np.ndarray:
        """Enclosed volume (mL, signed: negative when turned inside out) of shapes with the
        atlas faces. vertices: (S, K, 3) -> (S,)"""
        f = np.asarray(self.atlas_faces_)
        return np.array([geo.signed_volume(v, f) / 1000.0 for v in vertices])

    # persistence helpers for the host's save/load
    def _generator_tensors(self) -> tuple[dict[str, torch.Tensor], dict | None]:
        if getattr(self, "generator_", None) is None:
            return {}, None
        t, meta = self.generator_.state()
        tensors = {f"gen.{k}": v for k, v in t.items()}
        tensors["train.shapes"] = torch.as_tensor(np.ascontiguousarray(self.training_shapes_))
        tensors["train.volumes"] = torch.as_tensor(self.real_volumes_)
        tensors["train.extents"] = torch.as_tensor(self.real_extents_)
        tensors["train.axes"] = torch.as_tensor(self.axes_)
        return tensors, meta

    def _load_generator(self, tensors: dict[str, torch.Tensor], meta: dict | None, *,
                        source: str = "model", n_vertices: int | None = None) -> None:
        """Restore the generator and the training shapes' summaries, every tensor checked
        against the atlas's `n_vertices` (`ShapeAtlasError` naming `source`)."""
        if meta is None:
            self.generator_ = None
            return
        self.generator_ = generator_from_state(
            {k[4:]: v for k, v in tensors.items() if k.startswith("gen.")}, meta,
            source=source, prefix="gen.", n_vertices=n_vertices)
        self._load_training_summary(tensors, source=source, n_vertices=n_vertices)

    def _load_training_summary(self, tensors: dict[str, torch.Tensor], *, source: str,
                               n_vertices: int | None) -> None:
        self.training_shapes_ = validate.tensor(tensors, "train.shapes", source,
                                                shape=(None, n_vertices, 3))
        b = len(self.training_shapes_)
        # NaN volumes are those of open training meshes.
        self.real_volumes_ = validate.tensor(tensors, "train.volumes", source, shape=(b,),
                                             finite=False)
        self.real_extents_ = validate.tensor(tensors, "train.extents", source, shape=(b, 3))
        self.axes_ = validate.tensor(tensors, "train.axes", source, shape=(3, 3))


def split_codes(z: Any, cluster: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """`decode`'s codes and clusters from an array of codes, or from `Codes` (whose clusters
    are used unless `cluster` is given)."""
    if isinstance(z, Codes):
        return z.z, z.cluster if cluster is None else cluster
    return z, cluster
