"""A variational graph autoencoder of FeaStConv layers: per-vertex embeddings of any mesh.

The encoder maps each vertex's input features (coordinates, optionally normals) through a stack of
FeaStConv layers (Verma et al., 2018), each followed by a normalisation and a ReLU, to a Gaussian
posterior per vertex: a mean `mu` and a log-variance `logvar` of size D. The decoder mirrors the
encoder and reconstructs the input features from a latent sample. The per-vertex means are the
embeddings that `attention_correspondence` compares across meshes (Atlas-R-ASMG, arXiv 2403.06317).

Meshes of different sizes are batched by packing (see `shapeatlas.nn.graph.pack_graphs`); both
normalisations offered work on packed batches: GraphNorm normalises each mesh over its own
vertices using the `batch` vector, LayerNorm normalises each vertex over its channels. Neither
keeps running statistics, so a mesh's output does not depend on what else is in the batch.

Shapes: `N` packed vertices, `E` directed edges, `C` input channels, `D` latent size.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch_geometric.nn import FeaStConv
from torch_geometric.nn.norm import GraphNorm, LayerNorm

from shapeatlas.nn.feast import NeighbourTable, ReorderedFeaStConv, neighbour_table

__all__ = ["EncoderConfig", "GraphVAE", "Posterior", "GraphVAEOutput", "reparameterize"]

#: Log-variances are clipped to this range before exponentiating, so one wild activation early in
#: training cannot overflow exp() (e^20 ~ 5e8 is already far beyond any useful variance).
LOGVAR_MIN = -30.0
LOGVAR_MAX = 20.0


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture of `GraphVAE`; saved with every run, enough to rebuild the network."""

    in_channels: int = 3
    """Input channels C per vertex: 3 for "spatial" features, 6 for "hybrid" (with normals)."""
    widths: tuple[int, ...] = (64, 64, 128, 128)
    """Output channels of each encoder FeaStConv layer; the decoder uses them in reverse order."""
    heads: int = 8
    """FeaStConv attention heads per layer; time and memory grow about linearly with it."""
    latent_dim: int = 128
    """Latent size D of each vertex's posterior mean, log-variance and sample."""
    norm: Literal["graph", "layer"] = "graph"
    """Normalisation after each convolution: "graph" (per mesh) or "layer" (per vertex)."""
    conv: Literal["reordered", "pyg"] = "reordered"
    """FeaStConv implementation: "reordered" (same maths and parameters, faster) or PyG's own."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.in_channels < 1 or self.heads < 1 or self.latent_dim < 1:
            raise ValueError(
                "in_channels, heads and latent_dim must be positive, got "
                f"{self.in_channels}, {self.heads}, {self.latent_dim}"
            )
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"widths must be non-empty and positive, got {self.widths}")
        if self.norm not in ("graph", "layer"):
            raise ValueError(f"norm must be 'graph' or 'layer', got {self.norm!r}")
        if self.conv not in ("reordered", "pyg"):
            raise ValueError(f"conv must be 'reordered' or 'pyg', got {self.conv!r}")


@dataclass(frozen=True, eq=False)
class Posterior:
    """The per-vertex Gaussian posterior. mu, logvar: (N, D)."""

    mu: Tensor
    logvar: Tensor


@dataclass(frozen=True, eq=False)
class GraphVAEOutput:
    """Result of `GraphVAE.forward`.

    mu: (N, D) posterior means (the vertex embeddings).
    logvar: (N, D) posterior log-variances.
    z: (N, D) the latent that was decoded: a sample in training mode, `mu` in eval mode.
    recon: (N, C) reconstructed input features.
    """

    mu: Tensor
    logvar: Tensor
    z: Tensor
    recon: Tensor


def reparameterize(
    mu: Tensor, logvar: Tensor, *, generator: torch.Generator | None = None
) -> Tensor:
    """A differentiable sample z = mu + exp(logvar / 2) * eps with eps ~ N(0, I).

    mu, logvar: (N, D) -> (N, D). `generator` (on mu's device) makes the draw reproducible; without
    it the global torch RNG is used.
    """
    std = torch.exp(0.5 * logvar.clamp(LOGVAR_MIN, LOGVAR_MAX))
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + std * eps


@dataclass(frozen=True, eq=False)
class _Graph:
    """What every layer of one pass needs, computed once per pass."""

    edge_index: Tensor
    batch: Tensor | None
    num_graphs: int
    neighbours: NeighbourTable | None


class _ConvBlock(nn.Module):
    """FeaStConv -> normalisation -> ReLU. x: (N, C_in) -> (N, C_out)."""

    def __init__(self, c_in: int, c_out: int, *, heads: int, norm: str, conv: str):
        super().__init__()
        conv_cls = ReorderedFeaStConv if conv == "reordered" else FeaStConv
        self.conv = conv_cls(c_in, c_out, heads=heads)
        self.norm = GraphNorm(c_out) if norm == "graph" else LayerNorm(c_out, mode="node")

    def forward(self, x: Tensor, graph: _Graph) -> Tensor:
        if isinstance(self.conv, ReorderedFeaStConv):
            y = self.conv(x, neighbours=graph.neighbours)
        else:
            y = self.conv(x, graph.edge_index)
        return torch.relu(self.norm(y, graph.batch, graph.num_graphs))


class GraphVAE(nn.Module):
    """Variational graph autoencoder of FeaStConv layers with per-vertex latents.

    Encoder: `len(widths)` blocks (FeaStConv, norm, ReLU) from C to `widths[-1]` channels, then two
    linear heads to the posterior mean and log-variance (D each). Decoder: the same blocks with the
    widths reversed, from D back to `widths[0]`, then a linear head to C channels.

    Shapes
    ------
    x: (N, C) packed node features; edge_index: (2, E) packed, symmetric; batch: (N,) mesh index
    of each vertex (None means a single mesh)
    -> GraphVAEOutput with mu, logvar, z: (N, D) and recon: (N, C).

    In training mode z is a reparameterised sample (drawn with `generator` if given); in eval mode
    z = mu, so the output is deterministic.

    Examples
    --------
    >>> import trimesh
    >>> from shapeatlas.nn import mesh_graph
    >>> s = trimesh.creation.icosphere(subdivisions=1)
    >>> x = torch.as_tensor(s.vertices, dtype=torch.float32)
    >>> vae = GraphVAE(EncoderConfig(widths=(16, 16), heads=2, latent_dim=8)).eval()
    >>> out = vae(x, mesh_graph(x, s.faces))
    >>> tuple(out.mu.shape), tuple(out.recon.shape)
    ((42, 8), (42, 3))
    """

    def __init__(self, config: EncoderConfig | None = None):
        super().__init__()
        self.config = config = EncoderConfig() if config is None else config
        block = functools.partial(
            _ConvBlock, heads=config.heads, norm=config.norm, conv=config.conv
        )
        enc = (config.in_channels, *config.widths)
        self.encoder = nn.ModuleList(block(a, b) for a, b in zip(enc[:-1], enc[1:]))
        self.mu_head = nn.Linear(config.widths[-1], config.latent_dim)
        self.logvar_head = nn.Linear(config.widths[-1], config.latent_dim)
        dec = (config.latent_dim, *reversed(config.widths))
        self.decoder = nn.ModuleList(block(a, b) for a, b in zip(dec[:-1], dec[1:]))
        self.out_head = nn.Linear(config.widths[0], config.in_channels)

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        batch: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> GraphVAEOutput:
        self._check_inputs(x, edge_index, batch)
        graph = self._graph(x, edge_index, batch)
        post = self._encode(x, graph)
        z = reparameterize(post.mu, post.logvar, generator=generator) if self.training else post.mu
        return GraphVAEOutput(mu=post.mu, logvar=post.logvar, z=z, recon=self._decode(z, graph))

    def encode(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None) -> Posterior:
        """The per-vertex posterior. x: (N, C), edge_index: (2, E), batch: (N,) -> (N, D) each."""
        self._check_inputs(x, edge_index, batch)
        return self._encode(x, self._graph(x, edge_index, batch))

    def decode(self, z: Tensor, edge_index: Tensor, batch: Tensor | None = None) -> Tensor:
        """Reconstructed node features. z: (N, D), edge_index: (2, E), batch: (N,) -> (N, C)."""
        return self._decode(z, self._graph(z, edge_index, batch))

    def _encode(self, x: Tensor, graph: _Graph) -> Posterior:
        h = x
        for block in self.encoder:
            h = block(h, graph)
        return Posterior(mu=self.mu_head(h), logvar=self.logvar_head(h))

    def _decode(self, z: Tensor, graph: _Graph) -> Tensor:
        h = z
        for block in self.decoder:
            h = block(h, graph)
        return self.out_head(h)

    def _graph(self, x: Tensor, edge_index: Tensor, batch: Tensor | None) -> _Graph:
        # Once per pass: GraphNorm would otherwise read batch.max() (a device sync) in every layer,
        # and all layers share one neighbour table.
        num_graphs = 1 if batch is None or batch.numel() == 0 else int(batch.max()) + 1
        table = None
        if self.config.conv == "reordered":
            table = neighbour_table(edge_index, x.shape[0], dtype=x.dtype)
        return _Graph(edge_index=edge_index, batch=batch, num_graphs=num_graphs, neighbours=table)

    def _check_inputs(self, x: Tensor, edge_index: Tensor, batch: Tensor | None) -> None:
        c = self.config.in_channels
        if x.ndim != 2 or x.shape[1] != c:
            raise ValueError(
                f"x must have shape (N, {c}) for this GraphVAE (in_channels={c}), got "
                f"{tuple(x.shape)}; node_features(kind='spatial') gives 3 channels, 'hybrid' 6"
            )
        if edge_index.ndim != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
        if batch is not None and batch.shape != (x.shape[0],):
            raise ValueError(f"batch must have shape ({x.shape[0]},), got {tuple(batch.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x holds NaN or infinite node features; check the input meshes")
