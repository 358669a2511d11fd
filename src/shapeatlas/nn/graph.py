"""Mesh graphs as tensors, and packing meshes of different sizes into one batch.

Meshes in a cohort have different vertex counts and connectivity, so they are batched the way
PyTorch Geometric batches graphs: node features are concatenated, each mesh's edge indices are
offset by the number of vertices before it, and a `batch` vector (mesh index of every vertex) plus a
`ptr` vector (where each mesh starts) say which vertices belong to which mesh. Nothing is padded.

`pack_graphs` is written out here instead of going through `torch_geometric.data.Batch` so that the
result is a small immutable record with exactly four documented tensors and no hidden state; the
layout is the same as `Batch.from_data_list` produces (`x`, `edge_index`, `batch`, `ptr`).

Shapes use the project's letters: `V` vertices of one mesh, `F` faces, `E` undirected edges,
`N` packed vertices, `B` meshes, `C` channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["PackedGraphs", "mesh_graph", "node_features", "pack_graphs"]


def _device_of(*arrays: object) -> torch.device:
    for a in arrays:
        if isinstance(a, Tensor):
            return a.device
    return torch.device("cpu")


def mesh_graph(vertices: Tensor | np.ndarray, faces: Tensor | np.ndarray) -> Tensor:
    """The symmetric vertex graph of a triangle mesh, in PyG's `edge_index` layout.

    Every undirected mesh edge appears twice, once in each direction; self loops (from degenerate
    faces that repeat a vertex) are dropped. Columns are sorted by source, then target.

    Parameters
    ----------
    vertices: (V, 3); only the vertex count V is used, so isolated vertices keep their index.
    faces: (F, 3) integer vertex indices.

    Returns
    -------
    (2, 2E) long tensor on the device of `vertices` (or of `faces`, or the CPU for arrays).
    """
    device = _device_of(vertices, faces)
    n_verts = int(vertices.shape[0])
    # torch.tensor copies, so read-only arrays (a Mesh's) are fine and the input is never shared.
    if isinstance(faces, Tensor):
        f = faces.to(device)
    else:
        f = torch.tensor(np.asarray(faces), device=device)
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {tuple(f.shape)}")
    if f.is_floating_point():
        raise ValueError(f"faces must hold integer vertex indices, got dtype {f.dtype}")
    f = f.long()
    if f.numel() and (int(f.min()) < 0 or int(f.max()) >= n_verts):
        raise ValueError(
            f"faces index vertices {int(f.min())}..{int(f.max())}, but there are {n_verts} vertices"
        )
    src = torch.cat([f[:, 0], f[:, 1], f[:, 2]])
    dst = torch.cat([f[:, 1], f[:, 2], f[:, 0]])
    src, dst = torch.cat([src, dst]), torch.cat([dst, src])
    keep = src != dst
    # One integer key per directed edge: unique() both removes duplicates and sorts by (src, dst).
    key = torch.unique(src[keep] * n_verts + dst[keep])
    return torch.stack([key // n_verts, key % n_verts])


def node_features(
    vertices: Tensor | np.ndarray,
    normals: Tensor | np.ndarray | None = None,
    *,
    kind: Literal["spatial", "hybrid"] = "spatial",
) -> Tensor:
    """Per-vertex input features for the graph encoder.

    "spatial" is the coordinates alone; "hybrid" appends the unit vertex normals.

    Parameters
    ----------
    vertices: (V, 3) coordinates.
    normals: (V, 3) unit vertex normals; required for "hybrid", ignored for "spatial".
    kind: which features to build.

    Returns
    -------
    (V, 3) for "spatial" or (V, 6) for "hybrid". Tensors keep their device and dtype; NumPy arrays
    become CPU tensors of `torch.get_default_dtype()`.
    """
    v = _as_float_tensor(vertices, "vertices")
    if kind == "spatial":
        return v.clone()
    if kind != "hybrid":
        raise ValueError(f"kind must be 'spatial' or 'hybrid', got {kind!r}")
    if normals is None:
        raise ValueError("kind='hybrid' needs the vertex normals (e.g. Mesh.vertex_normals)")
    n = _as_float_tensor(normals, "normals").to(device=v.device, dtype=v.dtype)
    if n.shape != v.shape:
        raise ValueError(f"normals must match vertices {tuple(v.shape)}, got {tuple(n.shape)}")
    return torch.cat([v, n], dim=1)


def _as_float_tensor(a: Tensor | np.ndarray, what: str) -> Tensor:
    t = a if isinstance(a, Tensor) else torch.tensor(np.asarray(a), dtype=torch.get_default_dtype())
    if t.ndim != 2 or t.shape[1] != 3:
        raise ValueError(f"{what} must have shape (V, 3), got {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    return t


@dataclass(frozen=True, eq=False)
class PackedGraphs:
    """B mesh graphs packed into one disconnected graph (PyG layout, no padding).

    Attributes
    ----------
    x: (N, C) node features of all meshes, mesh after mesh.
    edge_index: (2, E_total) long; mesh b's indices are offset by `ptr[b]`.
    batch: (N,) long mesh index of every packed vertex.
    ptr: (B + 1,) long; mesh b owns packed vertices `ptr[b]:ptr[b + 1]`.
    """

    x: Tensor
    edge_index: Tensor
    batch: Tensor
    ptr: Tensor

    @property
    def num_graphs(self) -> int:
        """B, the number of meshes."""
        return int(self.ptr.numel() - 1)

    @property
    def num_nodes(self) -> int:
        """N, the number of packed vertices."""
        return int(self.x.shape[0])

    def split(self, values: Tensor) -> list[Tensor]:
        """Cut a per-vertex tensor of the packed batch back into one tensor per mesh.

        values: (N, ...) -> list of B tensors (V_b, ...), views into `values`.
        """
        if values.shape[0] != self.num_nodes:
            raise ValueError(f"values must have {self.num_nodes} rows, got {values.shape[0]}")
        sizes = (self.ptr[1:] - self.ptr[:-1]).tolist()
        return list(torch.split(values, sizes, dim=0))


def pack_graphs(graphs: Sequence[tuple[Tensor, Tensor]]) -> PackedGraphs:
    """Pack B graphs of different sizes into one, by concatenation and index offsets.

    Parameters
    ----------
    graphs: B pairs `(x, edge_index)` with x: (V_b, C) and edge_index: (2, E_b) long, all on one
        device, with the same C and dtype.

    Returns
    -------
    PackedGraphs with x: (N, C), edge_index: (2, sum E_b), batch: (N,), ptr: (B + 1,),
    N = sum V_b, on the inputs' device.
    """
    if len(graphs) == 0:
        raise ValueError("pack_graphs needs at least one (x, edge_index) pair, got none")
    xs, eis = [], []
    x0 = graphs[0][0]
    for b, (x, ei) in enumerate(graphs):
        if x.ndim != 2 or x.shape[1] != x0.shape[1]:
            raise ValueError(
                f"graph {b}: x must have shape (V, {x0.shape[1]}) like graph 0, "
                f"got {tuple(x.shape)}"
            )
        if x.device != x0.device or x.dtype != x0.dtype:
            raise ValueError(
                f"graph {b}: x is {x.dtype} on {x.device}, but graph 0 is {x0.dtype} on {x0.device}"
            )
        if ei.ndim != 2 or ei.shape[0] != 2 or ei.is_floating_point():
            raise ValueError(
                f"graph {b}: edge_index must be an integer (2, E) tensor, got {tuple(ei.shape)}"
            )
        if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= x.shape[0]):
            raise ValueError(
                f"graph {b}: edge_index refers to vertices {int(ei.min())}..{int(ei.max())}, "
                f"but x has {x.shape[0]} rows"
            )
        xs.append(x)
        eis.append(ei.to(device=x0.device, dtype=torch.long))
    sizes = torch.tensor([x.shape[0] for x in xs], dtype=torch.long, device=x0.device)
    ptr = torch.cat([sizes.new_zeros(1), torch.cumsum(sizes, 0)])
    edge_index = torch.cat([ei + ptr[b] for b, ei in enumerate(eis)], dim=1)
    batch = torch.repeat_interleave(torch.arange(len(xs), device=x0.device), sizes)
    return PackedGraphs(x=torch.cat(xs, dim=0), edge_index=edge_index, batch=batch, ptr=ptr)
