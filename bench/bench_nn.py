"""Timings of the neural building blocks on this machine (not part of the test run).

Run: python bench/bench_nn.py [vae|attention|all]
"""

from __future__ import annotations

import resource
import sys
import time

import numpy as np
import torch
import trimesh

from shapeatlas.nn import EncoderConfig, GraphVAE, attention_correspondence, mesh_graph, pack_graphs


def bench_vae(repeats: int = 3) -> None:
    graphs = []
    for b in range(4):  # 4 ellipsoids x 2,562 vertices
        s = trimesh.creation.icosphere(subdivisions=4)
        v = torch.as_tensor(s.vertices * np.array([1 + 0.1 * b, 1.0, 0.8]), dtype=torch.float32)
        graphs.append((v, mesh_graph(v, s.faces)))
    packed = pack_graphs(graphs)
    print(f"packed batch: N={packed.num_nodes}, directed edges={packed.edge_index.shape[1]}")
    configs = {
        "default (64,64,128,128) h8": EncoderConfig(),
        "default, PyG FeaStConv": EncoderConfig(conv="pyg"),
        "cheap (32,32,64,64) h4": EncoderConfig(widths=(32, 32, 64, 64), heads=4),
        "cheap, PyG FeaStConv": EncoderConfig(widths=(32, 32, 64, 64), heads=4, conv="pyg"),
    }
    for name, cfg in configs.items():
        torch.manual_seed(0)
        model = GraphVAE(cfg).train()
        times = []
        for _ in range(repeats + 1):
            model.zero_grad()
            t = time.perf_counter()
            out = model(packed.x, packed.edge_index, packed.batch)
            loss = (out.recon - packed.x).abs().mean() + 1e-3 * out.mu.square().mean()
            loss.backward()
            times.append(time.perf_counter() - t)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"VAE fwd+bwd {name}: median {np.median(times[1:]):.2f} s "
              f"(runs {', '.join(f'{t:.2f}' for t in times)}), process peak RSS {rss:.0f} MB")


def bench_attention(n_shape: int = 20_000, n_atlas: int = 3_000, dim: int = 128) -> None:
    g = torch.Generator().manual_seed(0)
    atlas = torch.randn(n_atlas, dim, generator=g)
    shape = torch.randn(n_shape, dim, generator=g)
    pts = torch.randn(n_shape, 3, generator=g)
    with torch.no_grad():
        attention_correspondence(atlas[:10], shape[:100], pts[:100])  # warm up kernels
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        attention_correspondence(atlas, shape, pts)
        dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"attention {n_shape} x {n_atlas}, D={dim}, no_grad, 256 MB budget: {dt:.2f} s, "
          f"peak RSS +{(peak - base) / 1024:.0f} MB")
    a = atlas.clone().requires_grad_()
    s = shape.clone().requires_grad_()
    t = time.perf_counter()
    out = attention_correspondence(a, s, pts, sharpness=10.0, checkpoint=True)
    (out.points.square().sum() + out.confidence.sum()).backward()
    dt = time.perf_counter() - t
    peak2 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"attention fwd+bwd with checkpoint: {dt:.2f} s, peak RSS +{(peak2 - base) / 1024:.0f} MB")


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what in ("vae", "all"):
        bench_vae()
    if what in ("attention", "all"):
        bench_attention()
