"""R-ASM: the correspondence network of Atlas-R-ASMG and its training objective.

One pass: the atlas and B shapes are packed into one graph and encoded by the shared graph VAE; for
each shape, attention between the atlas's and the shape's per-vertex embeddings resamples the shape
onto the atlas topology (`H = A^T P`, K points); `H` is smoothed on the atlas graph (when matching
results, its displacement from the atlas is smoothed too, along its surface:
`deformation_smoothing`); the losses pull the smoothed shape onto the input (Chamfer) and keep it a
plausible deformation of the atlas (Laplacian of the displacement, edge lengths, normal
consistency), next to the VAE's own reconstruction and KL terms.

`pull_to_surface` is the test-time end of the refinement: a few Adam steps on the smoothed shape
with the same Chamfer + regulariser objective, so each correspondence lies on its input surface;
with `motion="normal"` each point moves only along its normal on the smoothed shape, which keeps
where along the surface the attention put it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
from scipy.spatial import cKDTree
from torch import Tensor, nn

from shapeatlas.nn.attention import attention_correspondence
from shapeatlas.nn.encoder import EncoderConfig, GraphVAE
from shapeatlas.nn.graph import pack_graphs
from shapeatlas.nn.losses import chamfer_loss, kl_divergence, l1_reconstruction
from shapeatlas.nn.refine import (
    edge_length_loss,
    face_adjacency,
    laplacian_loss,
    normal_consistency_loss,
    smooth_deformation,
    smooth_on_graph,
    vertex_normals,
)


@dataclass(frozen=True)
class GraphInput:
    """One mesh as the network sees it (all tensors on one device, normalised coordinates).

    x: (V, C) node features; points: (V, 3) positions; edge_index: (2, E) symmetric graph;
    weights: (V,) area weights for the Chamfer term (sum 1); name: for error messages.
    """

    name: str
    x: Tensor
    points: Tensor
    edge_index: Tensor
    weights: Tensor


@dataclass(frozen=True)
class AtlasGraph:
    """The atlas: a GraphInput plus its faces and the precomputed regulariser structures.

    faces: (F, 3); edges: (E, 2) undirected; face_pairs: (P, 2) faces sharing an edge;
    edge_lengths: (E,) the atlas's own edge lengths.
    """

    graph: GraphInput
    faces: Tensor
    edges: Tensor
    face_pairs: Tensor
    edge_lengths: Tensor

    @staticmethod
    def build(graph: GraphInput, faces: Tensor) -> "AtlasGraph":
        f = faces.long()
        e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]).sort(dim=1).values.unique(dim=0)
        p = graph.points
        lengths = (p[e[:, 0]] - p[e[:, 1]]).norm(dim=1)
        return AtlasGraph(graph=graph, faces=f, edges=e, face_pairs=face_adjacency(f),
                          edge_lengths=lengths)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the R-ASM loss terms (see `FitConfig`)."""

    chamfer: float = 1.0
    recon: float = 0.1
    kl: float = 1e-4
    normal: float = 0.01
    laplacian: float = 0.1
    edge: float = 0.1


@dataclass(frozen=True)
class ShapeMatch:
    """The result of matching one shape to the atlas.

    raw: (K, 3) attention-resampled shape H; smoothed: (K, 3) after graph smoothing;
    confidence: (K,) peak attention weight; best_atlas_vertex: (V,) for each shape vertex.
    """

    raw: Tensor
    smoothed: Tensor
    confidence: Tensor
    best_atlas_vertex: Tensor


class MatchSettings(Protocol):
    """What `RASM.match` reads of a matching configuration (`training.config.MatchConfig`)."""

    transport_iterations: int
    transport_sharpness: float
    transport_relaxation: float
    deformation_smoothing: int


@dataclass(frozen=True)
class StepLosses:
    """Loss terms of one step (scalars), their weighted total, per-shape Chamfer terms, and the
    B smoothed normalised shapes (K, 3) (network units; for a jointly trained generator)."""

    total: Tensor
    terms: dict[str, Tensor]
    per_shape_chamfer: Tensor
    smoothed: list[Tensor]


class RASM(nn.Module):
    """The shared graph VAE plus attention and smoothing (no learned parameters besides the VAE).

    Shapes
    ------
    atlas: AtlasGraph with K vertices; shapes: B GraphInputs with V_b vertices each
    -> B ShapeMatch results with (K, 3) points, and the VAE output over all packed vertices.
    """

    def __init__(self, encoder: EncoderConfig, *, sharpness: float, smooth_gamma: float,
                 smooth_iterations: int, attention_memory_mb: float):
        super().__init__()
        self.vae = GraphVAE(encoder)
        self.sharpness = float(sharpness)
        self.smooth_gamma = float(smooth_gamma)
        self.smooth_iterations = int(smooth_iterations)
        self.attention_memory_mb = float(attention_memory_mb)

    def embed(self, graphs: Sequence[GraphInput], *, generator: torch.Generator | None = None):
        """Encode several meshes in one packed pass. -> (GraphVAEOutput, PackedGraphs)"""
        packed = pack_graphs([(g.x, g.edge_index) for g in graphs])
        out = self.vae(packed.x, packed.edge_index, packed.batch, generator=generator)
        return out, packed

    def match(self, atlas_emb: Tensor, shape: GraphInput, shape_emb: Tensor,
              atlas: AtlasGraph, *, matching: MatchSettings | None = None) -> ShapeMatch:
        """Attention correspondence + graph smoothing of one shape. `matching`: the settings of
        the matching of results (`training.config.MatchConfig`), which balances the attention
        (`transport_iterations`, `transport_sharpness`, `transport_relaxation`; see
        nn.attention) when `transport_iterations` > 0 and then smooths the displacement from the
        atlas along the smoothed shape's surface (`deformation_smoothing` iterations,
        `nn.refine.smooth_deformation`); training steps and the atlas re-estimation give None:
        the plain softmax at `sharpness`, no deformation smoothing."""
        iterations = matching.transport_iterations if matching is not None else 0
        att = attention_correspondence(
            atlas_emb, shape_emb, shape.points,
            sharpness=matching.transport_sharpness if iterations else self.sharpness,
            memory_budget_mb=self.attention_memory_mb, checkpoint=self.training,
            transport_iterations=iterations,
            transport_relaxation=matching.transport_relaxation if iterations else 1.0,
            atlas_weights=atlas.graph.weights,
            shape_weights=shape.weights,
        )
        smoothed = smooth_on_graph(att.points, atlas.graph.edge_index, gamma=self.smooth_gamma,
                                   iterations=self.smooth_iterations)
        if matching is not None and matching.deformation_smoothing:
            smoothed = smooth_deformation(smoothed, atlas.graph.points, atlas.graph.edge_index,
                                          gamma=self.smooth_gamma,
                                          iterations=matching.deformation_smoothing,
                                          normals=vertex_normals(smoothed, atlas.faces))
        return ShapeMatch(raw=att.points, smoothed=smoothed, confidence=att.confidence,
                          best_atlas_vertex=att.best_atlas_vertex)

    def forward(self, atlas: AtlasGraph, shapes: Sequence[GraphInput], *,
                generator: torch.Generator | None = None):
        out, packed = self.embed([atlas.graph, *shapes], generator=generator)
        ptr = packed.ptr.tolist()
        emb = [out.mu[ptr[i]:ptr[i + 1]] for i in range(len(ptr) - 1)]
        matches = [self.match(emb[0], s, emb[i + 1], atlas) for i, s in enumerate(shapes)]
        return matches, out, packed


def regulariser_terms(h: Tensor, atlas: AtlasGraph, *, scale: Tensor | float = 1.0) -> dict:
    """L_Ref regularisers of a shape h (K, 3) on the atlas topology.

    laplacian: of the displacement h - atlas (a smooth deformation, keeping the atlas's detail);
    edge: squared deviation from the atlas's edge lengths times `scale` (the shape's size relative
    to the atlas); normal: normal consistency across atlas edges.
    """
    return {
        "laplacian": laplacian_loss(h - atlas.graph.points, atlas.graph.edge_index),
        "edge": edge_length_loss(h, atlas.edges, reference_lengths=atlas.edge_lengths * scale),
        "normal": normal_consistency_loss(h, atlas.faces, face_pairs=atlas.face_pairs),
    }


def size_ratio(points: Tensor, weights: Tensor, reference: Tensor) -> Tensor:
    """RMS radius of weighted `points` over that of `reference` (detached)."""
    c = (points * weights[:, None]).sum(0)
    r = ((points - c).square().sum(1) * weights).sum().sqrt()
    rc = reference - reference.mean(0)
    return (r / rc.square().sum(1).mean().sqrt()).detach()


def rasm_losses(model: RASM, atlas: AtlasGraph, shapes: Sequence[GraphInput],
                weights: LossWeights, *, generator: torch.Generator | None = None) -> StepLosses:
    """The R-ASM objective for one packed step (mean over the B shapes)."""
    matches, out, packed = model(atlas, shapes, generator=generator)
    chamfers, regs = [], {"laplacian": [], "edge": [], "normal": []}
    for m, s in zip(matches, shapes):
        chamfers.append(chamfer_loss(s.points, m.smoothed, weights_a=s.weights))
        scale = size_ratio(s.points, s.weights, atlas.graph.points)
        for k, v in regulariser_terms(m.smoothed, atlas, scale=scale).items():
            regs[k].append(v)
    per_shape = torch.stack(chamfers)
    terms = {
        "chamfer": per_shape.mean(),
        "recon": l1_reconstruction(out.recon, packed.x),
        "kl": kl_divergence(out.mu, out.logvar),
        **{k: torch.stack(v).mean() for k, v in regs.items()},
    }
    total = sum(getattr(weights, k) * v for k, v in terms.items())
    return StepLosses(total=total, terms=terms, per_shape_chamfer=per_shape,
                      smoothed=[m.smoothed for m in matches])


PULL_MOTIONS = ("free", "normal")


def pull_to_surface(h: Tensor, target: Tensor, atlas: AtlasGraph, *, target_weights: Tensor,
                    steps: int, lr: float, weights: LossWeights, motion: str = "free") -> Tensor:
    """Test-time refinement: Adam on the K points, Chamfer to `target` plus the L_Ref terms.

    h: (K, 3) start (the smoothed attention result); target: (V, 3) the input's vertices
    (normalised units); motion: "free" (every coordinate moves; the paper's refinement) or
    "normal" (each point moves only along its normal on `h`, one offset per point, so it
    cannot slide along the surface); -> (K, 3) refined points (detached).
    """
    if motion not in PULL_MOTIONS:
        raise ValueError(f"motion must be one of {PULL_MOTIONS}, got {motion!r}")
    if steps <= 0:
        return h.detach()
    start = h.detach().clone()
    if motion == "normal":
        normals = vertex_normals(start, atlas.faces)
        offset = torch.zeros(len(start), 1, dtype=start.dtype, device=start.device,
                             requires_grad=True)
        variable = offset
    else:
        variable = start.requires_grad_(True)
    opt = torch.optim.Adam([variable], lr=lr)
    scale = size_ratio(target, target_weights, atlas.graph.points)
    target_tree = cKDTree(target.detach().to("cpu", torch.float64).numpy())
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        x = start + offset * normals if motion == "normal" else variable
        loss = weights.chamfer * chamfer_loss(target, x, weights_a=target_weights,
                                              tree_a=target_tree)
        for k, v in regulariser_terms(x, atlas, scale=scale).items():
            loss = loss + getattr(weights, k) * v
        loss.backward()
        opt.step()
    return (start + offset * normals).detach() if motion == "normal" else variable.detach()
