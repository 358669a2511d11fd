"""Generators of normalised shapes (all in atlas topology): the β-VAE and the PCA baseline.

Both learn from the training shapes' normalised shapes in millimetres in the aligned frame (so
size variation is kept) and share one interface, so `sample`, `evaluate` and the benchmark treat
Atlas-R-ASMG and CPD-PCA alike:

    fit(shapes (B, K, 3), seed) -> self      encode(shapes) -> (B, D)    decode(z) -> (B, K, 3)
    sample_latent(n, rng, components) -> (n, D)   reconstruct(shapes, n_components) -> (B, K, 3)
    latent_order_: latent directions by decreasing variance over the training shapes.

`components=k` (sampling) and `n_components=k` (reconstruction) restrict a code to the first k
directions of `latent_order_`; the others are held at the prior's centre.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from shapeatlas import validate
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.nn.shape_vae import ShapeVAE, beta_vae_loss, elbo_terms
from shapeatlas.training.config import GeneratorConfig
from shapeatlas.training.distributed import SINGLE, Dist

log = logging.getLogger(__name__)

#: Latent size (β-VAE) and PCA modes when none is configured (capped at shapes - 1).
DEFAULT_LATENT = 16
#: Added to the aggregate-posterior covariance before its Cholesky factor (latent units).
COVARIANCE_RIDGE = 1e-6
#: The β-VAE's training reports to its `progress` callback every this many epochs (and at the
#: last), and logs an INFO line at every tenth of its epochs: thousands of full-batch steps
#: take minutes on a real cohort.
PROGRESS_EVERY = 10
LOG_LINES = 10


def check_latent_size(latent_dim: int | None, n_shapes: int, *, default: int) -> int:
    """The latent size to use: `latent_dim`, or min(default, n_shapes - 1) when it is None."""
    most = n_shapes - 1
    if most < 1:
        raise ShapeAtlasError(f"a shape generator needs at least 2 training shapes, got {n_shapes}")
    if latent_dim is None:
        return min(default, most)
    if latent_dim < 1:
        raise ShapeAtlasError(f"latent_dim must be at least 1, got {latent_dim}")
    if latent_dim > most:
        raise ShapeAtlasError(
            f"latent_dim {latent_dim} is larger than {n_shapes} training shapes support (at most "
            f"{most} independent directions): lower latent_dim or add shapes")
    return latent_dim


def effective_size(weights: np.ndarray) -> np.ndarray:
    """Kish's effective number of weighted shapes, (Σw)² / Σw², along axis 0. (B, ...) -> (...)"""
    w = np.asarray(weights, dtype=np.float64)
    return w.sum(axis=0) ** 2 / (w**2).sum(axis=0)


def _flat(shapes: np.ndarray) -> np.ndarray:
    s = np.asarray(shapes, dtype=np.float64)
    if s.ndim != 3 or s.shape[2] != 3:
        raise ShapeAtlasError(f"shapes must have shape (B, K, 3), got {s.shape}")
    if not np.isfinite(s).all():
        raise ShapeAtlasError("normalised shapes contain NaN or infinite coordinates")
    return s.reshape(len(s), -1)


def new_shape_vae(settings: GeneratorConfig, n_shapes: int, mean: np.ndarray | torch.Tensor,
                  scale: float) -> ShapeVAE:
    """An untrained β-VAE for `n_shapes` training shapes around `mean` ((K, 3) or (3K,) mm),
    standardised by `scale` (mm, the typical deviation from the mean)."""
    d = check_latent_size(settings.latent_dim, n_shapes, default=DEFAULT_LATENT)
    mean = torch.as_tensor(np.asarray(mean, dtype=np.float32).reshape(-1))  # CPU tensor or array
    return ShapeVAE(mean.numel(), latent_dim=d, hidden=tuple(settings.hidden), mean=mean,
                    scale=max(float(scale), 1e-6))


class VAEGenerator:
    """β-VAE generator (see `shapeatlas.nn.shape_vae`), trained full-batch with Adam."""

    kind = "beta-vae"

    def __init__(self, settings: GeneratorConfig | None = None):
        self.settings = settings or GeneratorConfig()

    def fit(self, shapes: np.ndarray, *, seed: int = 0, device: torch.device | None = None,
            warm_start: ShapeVAE | None = None, weights: np.ndarray | None = None,
            progress: Callable[[dict], None] | None = None,
            dist: Dist = SINGLE) -> "VAEGenerator":
        """Train on (B, K, 3) shapes in mm for `settings.epochs` full-batch steps; `warm_start`
        continues from an already (jointly) trained network instead of a new one; `weights`
        (B,) >= 0 weigh the shapes (a cluster's memberships): the loss, the standardisation and
        the aggregate prior are weighted, and the latent size is capped by the effective number
        of shapes (sum w)^2 / sum w^2. progress: called every `PROGRESS_EVERY` epochs with
        {"stage": "generator", "epoch", "epochs", "step", "steps", "loss", "rms_mm"}
        (one full-batch step an epoch).
        dist: with several processes (`training.distributed`), each holds all the shapes and
        steps on its share of them in DistributedDataParallel; its loss is scaled by its
        share's weight, so the averaged gradient is the full batch's. All end with the same
        network."""
        s = self.settings
        x_np = _flat(shapes)
        w_np = None if weights is None else np.asarray(weights, dtype=np.float64)
        if w_np is not None and (w_np.shape != (len(x_np),) or np.any(w_np < 0)
                                 or not w_np.sum() > 0):
            raise ShapeAtlasError(f"weights must be {len(x_np)} non-negative numbers, not all 0")
        n_eff = len(x_np) if w_np is None else int(np.floor(effective_size(w_np) + 1e-9))
        d = check_latent_size(s.latent_dim, n_eff, default=DEFAULT_LATENT)
        self.n_vertices_ = x_np.shape[1] // 3
        device = device or torch.device("cpu")
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        x = torch.as_tensor(x_np, dtype=torch.float32, device=device)
        if warm_start is not None:
            if warm_start.latent_dim != d or warm_start.mean.numel() != x.shape[1]:
                raise ShapeAtlasError(
                    f"the jointly trained β-VAE (D={warm_start.latent_dim}, "
                    f"{warm_start.mean.numel() // 3} vertices) does not fit these shapes "
                    f"(D={d}, {self.n_vertices_} vertices)")
            self.net_ = warm_start.to(device)
        else:
            if w_np is None:
                mean = x.mean(dim=0)
                scale = float((x - mean).pow(2).mean().sqrt())
            else:
                wt = torch.as_tensor(w_np / w_np.sum(), dtype=torch.float32, device=device)
                mean = (wt[:, None] * x).sum(dim=0)
                scale = float(((x - mean).pow(2).mean(dim=1) * wt).sum().sqrt())
            self.net_ = new_shape_vae(s, n_eff, mean.cpu(), scale).to(device)
        w = None if w_np is None else torch.as_tensor(w_np, dtype=torch.float32, device=device)
        net, share, scale_loss = self.net_, slice(None), 1.0
        if dist.active:
            # This process's shapes; its mean loss, times its share of the total weight and
            # the number of processes, averages (DDP) to the full batch's mean loss.
            share = slice(dist.rank, None, dist.world_size)
            total = float(len(x)) if w is None else float(w.sum())
            mine = float(len(x[share])) if w is None else float(w[share].sum())
            scale_loss = dist.world_size * mine / total
            net = DistributedDataParallel(
                self.net_, device_ids=[x.device.index] if x.device.type == "cuda" else None)
            gen.manual_seed(seed + 7919 * dist.rank)  # each process its own noise
        x_mine, w_mine = x[share], None if w is None else w[share]
        opt = torch.optim.Adam(self.net_.parameters(), lr=s.lr)
        self.net_.train()
        terms = {}
        log_every = max(1, s.epochs // LOG_LINES)
        for epoch in range(s.epochs):
            opt.zero_grad()
            out = net(x_mine, generator=gen)
            loss, terms = beta_vae_loss(x_mine, out, beta=s.beta, noise_mm=s.noise_mm,
                                        weights=w_mine)
            if not dist.all_true(bool(torch.isfinite(loss)), loss.device):
                raise ShapeAtlasError(f"β-VAE training diverged at epoch {epoch} (loss {loss}); "
                                      "lower lr or raise noise_mm")
            (loss * scale_loss).backward()
            opt.step()
            done = epoch + 1
            if done % log_every == 0 or done == s.epochs:
                log.info("β-VAE epoch %d/%d: loss %.4f, rms %.3f mm, KL %.2f", done, s.epochs,
                         terms["loss"], terms["rms_mm"], terms["kl"])
            if progress is not None and (done % PROGRESS_EVERY == 0 or done == s.epochs):
                progress({"stage": "generator", "epoch": done, "epochs": s.epochs,
                          "step": done, "steps": s.epochs, "loss": terms["loss"],
                          "rms_mm": terms["rms_mm"]})
        net = opt = None  # no DDP module may outlive the process group
        self.net_.eval()
        self.train_terms_ = terms
        self._set_prior(self.encode(shapes), w_np)
        log.info("β-VAE: D=%d, final rms %.3f mm, KL %.2f", d, terms["rms_mm"], terms["kl"])
        return self

    def _set_prior(self, z: np.ndarray, weights: np.ndarray | None = None) -> None:
        w = np.ones(len(z)) if weights is None else weights
        centre = np.average(z, axis=0, weights=w)
        if self.settings.prior == "aggregate":
            self.prior_mean_ = centre
            cov = np.cov(z.T, aweights=w).reshape(z.shape[1], z.shape[1])
        else:
            self.prior_mean_ = np.zeros(z.shape[1])
            cov = np.eye(z.shape[1])
        self.prior_chol_ = np.linalg.cholesky(cov + COVARIANCE_RIDGE * np.eye(len(cov)))
        spread = np.average((z - centre) ** 2, axis=0, weights=w)
        self.latent_order_ = np.argsort(-spread, kind="stable")

    @property
    def latent_dim(self) -> int:
        return self.net_.latent_dim

    def encode(self, shapes: np.ndarray) -> np.ndarray:
        """(B, K, 3) mm -> (B, D) posterior means."""
        x = torch.as_tensor(_flat(shapes), dtype=torch.float32, device=self.net_.mean.device)
        with torch.no_grad():
            return self.net_.encode(x)[0].cpu().double().numpy()

    def decode(self, z: np.ndarray) -> np.ndarray:
        """(B, D) -> (B, K, 3) mm."""
        zt = torch.as_tensor(np.asarray(z), dtype=torch.float32, device=self.net_.mean.device)
        with torch.no_grad():
            x = self.net_.decode(zt).cpu().double().numpy()
        return x.reshape(len(x), -1, 3)

    def elbo(self, shapes: np.ndarray) -> np.ndarray:
        """Evidence lower bound log p(x) >= E_q[log p(x|z)] - KL (nats, β = 1, posterior mean as
        the single sample) of (B, K, 3) shapes in mm. -> (B,)"""
        x = torch.as_tensor(_flat(shapes), dtype=torch.float32, device=self.net_.mean.device)
        noise = self.settings.noise_mm
        with torch.no_grad():
            rec, kl = elbo_terms(x, self.net_(x, sample=False), noise_mm=noise)
        const = 0.5 * x.shape[1] * np.log(2.0 * np.pi * noise**2)
        return -(rec + kl).cpu().double().numpy() - const

    def sample_latent(self, n: int, rng: np.random.Generator, *,
                      components: int | None = None) -> np.ndarray:
        """n codes from the prior. -> (n, D)

        components: vary only the first k directions of `latent_order_` (as `reconstruct`
        keeps them); the others are held at the prior's centre. The same `rng` state gives the
        same draws for every k, only masked, so the codes of two values of k differ only in the
        directions one of them holds."""
        eps = rng.standard_normal((n, self.latent_dim))
        z = self.prior_mean_ + eps @ self.prior_chol_.T
        if components is not None:
            hold = self.latent_order_[_kept(components, self.latent_dim):]
            z[:, hold] = self.prior_mean_[hold]
        return z

    def reconstruct(self, shapes: np.ndarray, *, n_components: int | None = None) -> np.ndarray:
        """Encode, keep the first `n_components` latent directions (others at the prior's
        centre), decode. (B, K, 3) -> (B, K, 3) mm."""
        z = self.encode(shapes)
        if n_components is not None and n_components < self.latent_dim:
            drop = self.latent_order_[n_components:]
            z[:, drop] = self.prior_mean_[drop]
        return self.decode(z)

    # persistence: tensors + JSON-able meta
    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        t = {f"net.{k}": v.detach().cpu().contiguous() for k, v in self.net_.state_dict().items()}
        t["prior_mean"] = torch.as_tensor(self.prior_mean_)
        t["prior_chol"] = torch.as_tensor(self.prior_chol_)
        t["latent_order"] = torch.as_tensor(self.latent_order_)
        s = self.settings
        meta = {"kind": self.kind, "latent_dim": self.latent_dim, "beta": s.beta,
                "hidden": list(s.hidden), "noise_mm": s.noise_mm, "epochs": s.epochs, "lr": s.lr,
                "prior": s.prior, "n_vertices": self.n_vertices_}
        return t, meta

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict, *,
                   source: str = "model", prefix: str = "",
                   n_vertices: int | None = None) -> "VAEGenerator":
        """Rebuild from `state()`, every field and tensor checked (`ShapeAtlasError` naming
        `source`; `prefix`: the tensors' prefix in the file, for messages; `n_vertices`: the
        atlas's K, which the generator must match)."""
        meta = validate.mapping(meta, source, "generator")
        k = _n_vertices(meta, source, n_vertices)
        d = validate.get(meta, "latent_dim", validate.Int(1, 4096), source, prefix="generator.")
        s = GeneratorConfig(
            latent_dim=d, **{key: validate.get(meta, key, GeneratorConfig.SPECS[key], source,
                                               prefix="generator.")
                             for key in ("hidden", "beta", "noise_mm", "epochs", "lr", "prior")})
        sizes = [3 * k, *s.hidden, 2 * d]
        back = [d, *reversed(s.hidden), 3 * k]
        want = {"mean": (3 * k,), "scale": ()}
        for part, widths in (("encoder", sizes), ("decoder", back)):
            for i in range(len(widths) - 1):
                want[f"{part}.{2 * i}.weight"] = (widths[i + 1], widths[i])
                want[f"{part}.{2 * i}.bias"] = (widths[i + 1],)
        state = {}
        for key, shape in want.items():
            state[key] = torch.from_numpy(validate.tensor(tensors, f"net.{key}", source,
                                                          shape=shape, prefix=prefix)).float()
        extra = sorted(key[4:] for key in tensors if key.startswith("net.") and key[4:] not in want)
        if extra:
            raise ShapeAtlasError(f"{source}: unexpected tensor '{prefix}net.{extra[0]}'")
        if not float(state["scale"]) > 0:
            raise ShapeAtlasError(f"{source}: tensor '{prefix}net.scale' must be positive")
        g = cls(s)
        g.n_vertices_ = k
        g.net_ = ShapeVAE(3 * k, latent_dim=d, hidden=s.hidden, mean=torch.zeros(3 * k),
                          scale=1.0)
        g.net_.load_state_dict(state)
        g.net_.eval()
        g.prior_mean_ = validate.tensor(tensors, "prior_mean", source, shape=(d,), prefix=prefix)
        g.prior_chol_ = validate.tensor(tensors, "prior_chol", source, shape=(d, d),
                                        prefix=prefix)
        g.latent_order_ = _latent_order(tensors, d, source, prefix)
        return g


def _kept(components: int, latent_dim: int) -> int:
    """How many directions `components` keeps: at least 1 is required, more than D means D."""
    if int(components) < 1:
        raise ShapeAtlasError(f"components must be at least 1, got {components}")
    return min(int(components), latent_dim)


def _n_vertices(meta: dict, source: str, expected: int | None) -> int:
    k = validate.get(meta, "n_vertices", validate.Int(4, validate.MAX_VERTICES), source,
                     prefix="generator.")
    if expected is not None and k != expected:
        raise validate.field_error(source, "generator.n_vertices",
                                   f"must match the atlas's {expected} vertices, got {k}")
    return k


def _latent_order(tensors: dict, d: int, source: str, prefix: str) -> np.ndarray:
    order = validate.tensor(tensors, "latent_order", source, kind="int", shape=(d,),
                            prefix=prefix)
    if sorted(order.tolist()) != list(range(d)):
        raise ShapeAtlasError(f"{source}: tensor '{prefix}latent_order' must be an order of "
                              f"0..{d - 1}")
    return order


class PCAGenerator:
    """Classical point-distribution model: PCA of the flattened shapes, Gaussian in mode space."""

    kind = "pca"

    def __init__(self, n_modes: int | None = None):
        self.n_modes = n_modes

    def fit(self, shapes: np.ndarray, *, seed: int = 0, device=None) -> "PCAGenerator":
        x = _flat(shapes)
        d = check_latent_size(self.n_modes, len(x), default=DEFAULT_LATENT)
        self.n_vertices_ = x.shape[1] // 3
        self.mean_ = x.mean(axis=0)
        _, sv, vt = np.linalg.svd(x - self.mean_, full_matrices=False)
        self.components_ = vt[:d]
        self.variances_ = sv[:d] ** 2 / (len(x) - 1)
        self.latent_order_ = np.arange(d)
        return self

    @property
    def latent_dim(self) -> int:
        return len(self.components_)

    def encode(self, shapes: np.ndarray) -> np.ndarray:
        return (_flat(shapes) - self.mean_) @ self.components_.T

    def decode(self, z: np.ndarray) -> np.ndarray:
        x = self.mean_ + np.asarray(z) @ self.components_
        return x.reshape(len(x), -1, 3)

    def sample_latent(self, n: int, rng: np.random.Generator, *,
                      components: int | None = None) -> np.ndarray:
        """n mode scores from N(0, variances_); components: only the first k modes vary, the
        others are 0 (the mean shape's). -> (n, D)"""
        z = rng.standard_normal((n, self.latent_dim)) * np.sqrt(self.variances_)
        if components is not None:
            z[:, _kept(components, self.latent_dim):] = 0.0
        return z

    def reconstruct(self, shapes: np.ndarray, *, n_components: int | None = None) -> np.ndarray:
        z = self.encode(shapes)
        if n_components is not None:
            z[:, n_components:] = 0.0
        return self.decode(z)

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        t = {"mean": torch.as_tensor(self.mean_), "components": torch.as_tensor(self.components_),
             "variances": torch.as_tensor(self.variances_)}
        return t, {"kind": self.kind, "latent_dim": self.latent_dim,
                   "n_vertices": self.n_vertices_}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict, *,
                   source: str = "model", prefix: str = "",
                   n_vertices: int | None = None) -> "PCAGenerator":
        """Rebuild from `state()`, every field and tensor checked (as `VAEGenerator`'s)."""
        meta = validate.mapping(meta, source, "generator")
        k = _n_vertices(meta, source, n_vertices)
        d = validate.get(meta, "latent_dim", validate.Int(1, 4096), source, prefix="generator.")
        g = cls(d)
        g.n_vertices_ = k
        g.mean_ = validate.tensor(tensors, "mean", source, shape=(3 * k,), prefix=prefix)
        g.components_ = validate.tensor(tensors, "components", source, shape=(d, 3 * k),
                                        prefix=prefix)
        g.variances_ = validate.tensor(tensors, "variances", source, shape=(d,), prefix=prefix)
        if (g.variances_ < 0).any():
            raise ShapeAtlasError(f"{source}: tensor '{prefix}variances' must not be negative")
        g.latent_order_ = np.arange(d)
        return g


def generator_from_state(tensors: dict[str, torch.Tensor], meta: dict, *, source: str = "model",
                         prefix: str = "", n_vertices: int | None = None):
    """Rebuild a saved generator from its tensors (prefix stripped) and meta, checked against
    the atlas's `n_vertices` (`ShapeAtlasError` naming `source`)."""
    kinds = {VAEGenerator.kind: VAEGenerator, PCAGenerator.kind: PCAGenerator}
    kind = meta.get("kind") if isinstance(meta, dict) else None
    if not isinstance(kind, str) or kind not in kinds:
        raise ShapeAtlasError(f"{source}: unknown shape generator kind {validate.shown(kind)}")
    return kinds[kind].from_state(tensors, meta, source=source, prefix=prefix,
                                  n_vertices=n_vertices)
