"""Model folders written without training: tiny but complete, for tests of what is read back.

Building a model by hand (an untrained network, an icosphere atlas, a generator fitted on a few
scaled copies of it) takes a fraction of a second, so loading can be tested on many mutated
copies of a real model folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import trimesh

from shapeatlas.models.atlas import AtlasModel
from shapeatlas.models.cpd_pca import CPDPCAModel
from shapeatlas.models.generator import PCAGenerator, VAEGenerator
from shapeatlas.models.inputs import Normalisation
from shapeatlas.nn.encoder import EncoderConfig
from shapeatlas.training.config import FitConfig, GeneratorConfig


def _atlas_and_shapes(n: int = 6):
    t = trimesh.creation.icosphere(subdivisions=1, radius=20.0)
    verts = np.asarray(t.vertices, dtype=np.float64)
    rng = np.random.default_rng(0)
    shapes = verts[None] * (1.0 + 0.05 * rng.standard_normal((n, 1, 3)))
    return verts, np.asarray(t.faces, dtype=np.int64), shapes


def _summaries(model, shapes: np.ndarray) -> None:
    model.training_shapes_ = shapes
    model.real_volumes_ = np.full(len(shapes), 33.0)
    model.real_extents_ = np.ptp(shapes, axis=1)
    model.axes_ = np.eye(3)


def save_atlas_model(path: str | Path) -> Path:
    """An `AtlasModel` folder (untrained R-ASM network, β-VAE generator, 42-vertex atlas)."""
    cfg = FitConfig(device="cpu",
                    model={"encoder": EncoderConfig(widths=(8,), heads=1, latent_dim=8),
                           "atlas_vertices": 100},
                    generator={"hidden": (8,), "epochs": 3})
    model = AtlasModel(cfg)
    model.device_ = torch.device("cpu")
    model.net_ = model._new_net().eval()
    model.atlas_vertices_, model.atlas_faces_, shapes = _atlas_and_shapes()
    model.normalisation_ = Normalisation(center=np.zeros(3), scale=20.0)
    model.atlas_init_name_ = "medoid"
    model.cap_reference_ = None
    model.point_model_ = None
    model.generator_ = VAEGenerator(GeneratorConfig(latent_dim=2, hidden=(8,), epochs=3)).fit(
        shapes, seed=0, device=torch.device("cpu"))
    _summaries(model, shapes)
    return model.save(path)


def save_cpd_model(path: str | Path) -> Path:
    """A `CPDPCAModel` folder (PCA generator, 42-vertex atlas)."""
    model = CPDPCAModel(FitConfig(method="cpd-pca", device="cpu"))
    model.atlas_vertices_, model.atlas_faces_, shapes = _atlas_and_shapes()
    model.cohort_scale_ = 20.0
    model.atlas_init_name_ = "medoid"
    model.cap_reference_ = None
    model.device_ = torch.device("cpu")
    model.generator_ = PCAGenerator(2).fit(shapes)
    _summaries(model, shapes)
    return model.save(path)


def save_multi_atlas_model(path: str | Path) -> Path:
    """A `MultiAtlasModel` folder (two atlases over the shared network of `save_atlas_model`)."""
    from shapeatlas.models.multi_atlas import MixtureGenerator, MultiAtlasModel

    path = Path(path)
    base = AtlasModel.load(save_atlas_model(path / "shared"), device="cpu")
    model = MultiAtlasModel(base.config.replace(clustering={"atlases": 2}))
    model.base_ = base
    verts, faces, shapes = _atlas_and_shapes(8)
    gens = [VAEGenerator(GeneratorConfig(latent_dim=2, hidden=(8,), epochs=3)).fit(
        shapes[m::2], seed=0, device=torch.device("cpu")) for m in range(2)]
    atlases = np.stack([shapes[0::2].mean(0), shapes[1::2].mean(0)])
    model.generator_ = MixtureGenerator(gens, np.array([0.5, 0.5]), atlases, spread=1.0,
                                        temperature=0.25)
    model.n_atlases_ = 2
    model.atlases_, model.weights_, model.spread_ = atlases, model.generator_.weights_, 1.0
    model.selection_ = None
    model.atlas_faces_ = faces
    model.consensus_ = verts
    model.memberships_ = np.tile([[0.9, 0.1], [0.1, 0.9]], (4, 1))
    model.transforms_ = np.tile(np.eye(4), (8, 1, 1))
    _summaries(model, shapes)
    return model.save(path)
