"""Neural building blocks of R-ASM: mesh graphs and packing, the FeaStConv graph VAE, attention
correspondence, refinement on the atlas graph, and training losses.

One concept per module: `graph` (edge_index, packing, node features), `feast` (a cheaper
FeaStConv), `encoder` (GraphVAE), `attention` (soft correspondence), `refine` (graph smoothing and
mesh regularisers), `losses` (Chamfer, KL, L1).
"""

from shapeatlas.nn.attention import AttentionMatch, attention_correspondence
from shapeatlas.nn.encoder import (
    EncoderConfig,
    GraphVAE,
    GraphVAEOutput,
    Posterior,
    reparameterize,
)
from shapeatlas.nn.feast import ReorderedFeaStConv
from shapeatlas.nn.graph import PackedGraphs, mesh_graph, node_features, pack_graphs
from shapeatlas.nn.losses import chamfer_loss, kl_divergence, l1_reconstruction
from shapeatlas.nn.refine import (
    edge_length_loss,
    face_adjacency,
    laplacian_loss,
    normal_consistency_loss,
    smooth_deformation,
    smooth_on_graph,
)

__all__ = [
    "AttentionMatch",
    "EncoderConfig",
    "GraphVAE",
    "PackedGraphs",
    "Posterior",
    "ReorderedFeaStConv",
    "GraphVAEOutput",
    "attention_correspondence",
    "chamfer_loss",
    "edge_length_loss",
    "face_adjacency",
    "kl_divergence",
    "l1_reconstruction",
    "laplacian_loss",
    "mesh_graph",
    "node_features",
    "normal_consistency_loss",
    "pack_graphs",
    "reparameterize",
    "smooth_deformation",
    "smooth_on_graph",
]
