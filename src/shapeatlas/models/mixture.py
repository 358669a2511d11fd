"""`MixtureGenerator`: the shape generator of the multi-atlas model.

One β-VAE (`VAEGenerator`) per atlas with mixing weights π; ancestral sampling (cluster, then
latent code), decoding, reconstruction, the mixture's log-likelihood bound, and its state for
saving and loading (`state` / `from_state`: tensors + JSON, every field checked).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy.special import logsumexp

from shapeatlas import validate
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.models.clustering import energies, memberships
from shapeatlas.models.generator import VAEGenerator


class MixtureGenerator:
    """M β-VAEs, one per atlas, with mixing weights π (the generator interface of
    `shapeatlas.models.generator`, so `evaluate` scores it like any other)."""

    kind = "mixture-beta-vae"

    def __init__(self, generators: Sequence[VAEGenerator], weights: np.ndarray,
                 atlases: np.ndarray, *, spread: float, temperature: float):
        self.generators = list(generators)
        self.weights_ = np.asarray(weights, dtype=np.float64)
        self.atlases_ = np.asarray(atlases, dtype=np.float64)
        self.spread_ = float(spread)
        self.temperature = float(temperature)

    @property
    def latent_dim(self) -> int:
        """Columns of a latent code: the largest cluster's D (cluster m reads the first D_m)."""
        return max(g.latent_dim for g in self.generators)

    @property
    def latent_dims(self) -> list[int]:
        return [g.latent_dim for g in self.generators]

    def assign(self, shapes: np.ndarray) -> np.ndarray:
        """Memberships (B, M) of normalised shapes (consensus frame, mm) from their energies."""
        return memberships(energies(np.asarray(shapes, dtype=np.float64), self.atlases_),
                           self.weights_, temperature=self.temperature, spread=self.spread_)

    def sample(self, n: int, rng: np.random.Generator, *, components: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Ancestral: cluster m ~ Cat(π), then z from cluster m's prior. -> (n, D), (n,); the
        columns beyond a cluster's own D_m are 0. components: each cluster varies only its first
        min(k, D_m) directions (`VAEGenerator.sample_latent`), as `reconstruct` keeps them."""
        cluster = rng.choice(len(self.generators), size=n, p=self.weights_ / self.weights_.sum())
        z = np.zeros((n, self.latent_dim))
        for m, g in enumerate(self.generators):
            pick = np.flatnonzero(cluster == m)
            if len(pick):
                z[pick, :g.latent_dim] = g.sample_latent(len(pick), rng, components=components)
        return z, cluster

    def decode(self, z: np.ndarray, cluster: np.ndarray) -> np.ndarray:
        out = np.zeros((len(z), self.atlases_.shape[1], 3))
        for m, g in enumerate(self.generators):
            pick = np.flatnonzero(np.asarray(cluster) == m)
            if len(pick):
                out[pick] = g.decode(z[pick, :g.latent_dim])
        return out

    def reconstruct(self, shapes: np.ndarray, *, n_components: int | None = None) -> np.ndarray:
        """Each shape through the β-VAE of its most probable cluster. (B, K, 3) -> (B, K, 3)"""
        shapes = np.asarray(shapes, dtype=np.float64)
        best = self.assign(shapes).argmax(axis=1)
        out = np.zeros_like(shapes)
        for m, g in enumerate(self.generators):
            pick = np.flatnonzero(best == m)
            if len(pick):
                keep = None if n_components is None else min(n_components, g.latent_dim)
                out[pick] = g.reconstruct(shapes[pick], n_components=keep)
        return out

    def log_likelihood(self, shapes_per_cluster: np.ndarray) -> np.ndarray:
        """log Σ_m π_m exp(ELBO_m) per shape (nats, a lower bound of log p(x)).
        shapes_per_cluster: (B, M, K, 3) each shape matched to each atlas -> (B,)"""
        lp = np.stack([np.log(self.weights_[m]) + g.elbo(shapes_per_cluster[:, m])
                       for m, g in enumerate(self.generators)], axis=1)
        return logsumexp(lp, axis=1)

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors = {"weights": torch.as_tensor(self.weights_),
                   "atlases": torch.as_tensor(self.atlases_)}
        metas = []
        for m, g in enumerate(self.generators):
            t, meta = g.state()
            tensors.update({f"c{m}.{k}": v for k, v in t.items()})
            metas.append(meta)
        return tensors, {"kind": self.kind, "latent_dim": self.latent_dim,
                         "latent_dims": self.latent_dims,
                         "spread": self.spread_, "temperature": self.temperature,
                         "clusters": metas}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict, *, source: str = "model",
                   prefix: str = "", n_vertices: int | None = None) -> "MixtureGenerator":
        """Rebuild from `state()`, every field and tensor checked (`ShapeAtlasError` naming
        `source`; `n_vertices`: the atlas's K)."""
        meta = validate.mapping(meta, source, "generator")
        clusters = validate.items(meta, "clusters", source, prefix="generator.", max_len=64)
        m_count = len(clusters)
        if m_count < 1:
            raise validate.field_error(source, "generator.clusters", "must not be empty")
        weights = validate.tensor(tensors, "weights", source, shape=(m_count,), prefix=prefix)
        if (weights < 0).any() or not weights.sum() > 0:
            raise ShapeAtlasError(f"{source}: tensor '{prefix}weights' must be >= 0 with a "
                                  "positive sum")
        atlases = validate.tensor(tensors, "atlases", source, shape=(m_count, n_vertices, 3),
                                  prefix=prefix)
        gens = []
        for m, gm in enumerate(clusters):
            p = f"c{m}."
            gens.append(VAEGenerator.from_state(
                {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}, gm,
                source=source, prefix=prefix + p, n_vertices=atlases.shape[1]))
        positive = validate.Float(0.0, 1e12, lo_open=True)
        return cls(gens, weights, atlases,
                   spread=validate.get(meta, "spread", positive, source, prefix="generator."),
                   temperature=validate.get(meta, "temperature", positive, source,
                                            prefix="generator."))
