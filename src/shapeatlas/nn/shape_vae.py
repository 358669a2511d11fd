"""A β-VAE over whole shapes in atlas topology (an MLP on the flattened, standardised vertices).

Why an MLP and not mesh convolutions with pooling: every normalised shape has the same K vertices
in the same order, so the flattened coordinates are an ordinary fixed-length vector; cohorts have
tens to hundreds of shapes, far too few for a deep mesh-convolution autoencoder to beat a
shallow one, and an MLP trains on a whole cohort in seconds on a laptop CPU. A graph-pooling
decoder would be worth measuring only for cohorts of thousands of shapes.

Model, with x the shape in mm flattened to 3K numbers, standardised as u = (x - mean) / scale:
    q(z | x) = N(mu(u), diag(exp(logvar(u))))        encoder: Linear-ELU-...-Linear -> (mu, logvar)
    p(x | z) = N(mean + scale * g(z), noise_mm^2 I)   decoder: Linear-ELU-...-Linear
    loss     = ||x - x_hat||^2 / (2 noise_mm^2) + beta * KL(q(z | x) || N(0, I))   per shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ShapeVAEOutput:
    """recon: (B, 3K) reconstruction in mm; mu, logvar: (B, D) posterior parameters."""

    recon: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ELU())
    return nn.Sequential(*layers)


class ShapeVAE(nn.Module):
    """β-VAE over flattened shapes of K vertices.

    Args:
        n_values: 3K, the flattened size of one shape.
        latent_dim: D.
        hidden: widths of the hidden layers (the decoder mirrors them).
        mean, scale: (3K,) the training mean in mm and the scalar standardisation scale (mm).

    Shapes:
        forward: x (B, 3K) mm -> ShapeVAEOutput(recon (B, 3K) mm, mu (B, D), logvar (B, D)).
        decode: z (B, D) -> (B, 3K) mm.
    """

    def __init__(self, n_values: int, *, latent_dim: int, hidden: tuple[int, ...],
                 mean: torch.Tensor, scale: float):
        super().__init__()
        self.encoder = _mlp([n_values, *hidden, 2 * latent_dim])
        self.decoder = _mlp([latent_dim, *reversed(hidden), n_values])
        self.latent_dim = latent_dim
        self.register_buffer("mean", mean.reshape(-1).clone().float())
        self.register_buffer("scale", torch.tensor(float(scale)))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, 3K) mm -> mu (B, D), logvar (B, D)."""
        h = self.encoder((x - self.mean) / self.scale)
        return h[:, : self.latent_dim], h[:, self.latent_dim:]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, D) -> (B, 3K) mm."""
        return self.mean + self.scale * self.decoder(z)

    def forward(self, x: torch.Tensor, *, sample: bool = True,
                generator: torch.Generator | None = None) -> ShapeVAEOutput:
        """Encode, draw z = mu + eps * sd (eps from `generator`, on its device, when given;
        mu itself when `sample` is False), decode."""
        mu, logvar = self.encode(x)
        if not sample:
            z = mu
        else:
            if generator is None:
                eps = torch.randn_like(mu)
            else:
                eps = torch.randn(mu.shape, generator=generator,
                                  device=generator.device).to(mu.device)
            z = mu + eps * torch.exp(0.5 * logvar)
        return ShapeVAEOutput(recon=self.decode(z), mu=mu, logvar=logvar)


def elbo_terms(x: torch.Tensor, out: ShapeVAEOutput, *, noise_mm: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-shape reconstruction term ||x - x_hat||^2 / (2 noise_mm^2) and KL(q || N(0, I)).
    x: (B, 3K) mm -> (B,), (B,)"""
    rec = (x - out.recon).pow(2).sum(dim=1) / (2.0 * noise_mm**2)
    kl = 0.5 * (out.mu.pow(2) + out.logvar.exp() - 1.0 - out.logvar).sum(dim=1)
    return rec, kl


def beta_vae_loss(x: torch.Tensor, out: ShapeVAEOutput, *, beta: float, noise_mm: float,
                  weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Negative β-ELBO per shape, averaged over the batch (weighted by `weights` (B,), e.g. a
    cluster's memberships, when given). x: (B, 3K) mm -> (loss, terms)."""
    rec, kl = elbo_terms(x, out, noise_mm=noise_mm)
    if weights is None:
        loss = (rec + beta * kl).mean()
    else:
        loss = ((rec + beta * kl) * weights).sum() / weights.sum()
    with torch.no_grad():
        sq = (x - out.recon).pow(2).mean(dim=1)
        rms = (sq.mean() if weights is None else (sq * weights).sum() / weights.sum()).sqrt()
        terms = {"loss": loss.item(), "recon": rec.mean().item(), "kl": kl.mean().item(),
                 "rms_mm": rms.item()}
    return loss, terms
