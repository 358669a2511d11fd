"""Timings and peak memory of the neural building blocks (not part of the test run).

Run: python bench/bench_nn.py            (every case, each in a fresh process)
     python bench/bench_nn.py CASE       (one case: see CASES)

Peak memory is the growth of the process's peak RSS during the timed work, so each case needs a
process of its own.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
import warnings

import numpy as np
import torch
import trimesh

from shapeatlas.nn import (
    EncoderConfig,
    GraphVAE,
    attention_correspondence,
    mesh_graph,
    pack_graphs,
)

VAE_CONFIGS = {
    "vae-default": EncoderConfig(),
    "vae-default-pyg": EncoderConfig(conv="pyg"),
    "vae-cheap": EncoderConfig(widths=(32, 32, 64, 64), heads=4),
    "vae-cheap-pyg": EncoderConfig(widths=(32, 32, 64, 64), heads=4, conv="pyg"),
}
CASES = [*VAE_CONFIGS, "attention-nograd", "attention-checkpoint"]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_vae(case: str, repeats: int = 4) -> None:
    graphs = []
    for b in range(4):  # 4 ellipsoids x 2,562 vertices
        s = trimesh.creation.icosphere(subdivisions=4)
        v = torch.as_tensor(s.vertices * np.array([1 + 0.1 * b, 1.0, 0.8]), dtype=torch.float32)
        graphs.append((v, mesh_graph(v, s.faces)))
    packed = pack_graphs(graphs)
    cfg = VAE_CONFIGS[case]
    torch.manual_seed(0)
    model = GraphVAE(cfg).train()
    base = _peak_mb()
    times = []
    for _ in range(repeats + 1):  # the first run warms up
        model.zero_grad()
        t = time.perf_counter()
        out = model(packed.x, packed.edge_index, packed.batch)
        loss = (out.recon - packed.x).abs().mean() + 1e-3 * out.mu.square().mean()
        loss.backward()
        times.append(time.perf_counter() - t)
    print(f"{case}: widths {cfg.widths}, heads {cfg.heads}, conv {cfg.conv}, "
          f"N={packed.num_nodes}: fwd+bwd median {np.median(times[1:]):.2f} s "
          f"(runs {', '.join(f'{t:.2f}' for t in times)}), peak RSS +{_peak_mb() - base:.0f} MB")


def bench_attention(case: str, n_shape: int = 20_000, n_atlas: int = 3_000, dim: int = 128) -> None:
    g = torch.Generator().manual_seed(0)
    atlas = torch.randn(n_atlas, dim, generator=g)
    shape = torch.randn(n_shape, dim, generator=g)
    pts = torch.randn(n_shape, 3, generator=g)
    with torch.no_grad():
        attention_correspondence(atlas[:10], shape[:100], pts[:100])  # load the kernels first
    if case == "attention-nograd":
        base = _peak_mb()
        t = time.perf_counter()
        with torch.no_grad():
            attention_correspondence(atlas, shape, pts)
        label = "no_grad"
    else:
        atlas.requires_grad_()
        shape.requires_grad_()
        base = _peak_mb()
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = attention_correspondence(atlas, shape, pts, sharpness=10.0, checkpoint=True)
        (out.points.square().sum() + out.confidence.sum()).backward()
        label = "fwd+bwd, checkpoint=True"
    dt = time.perf_counter() - t
    print(f"{case}: {n_shape} x {n_atlas}, D={dim}, {label}, 256 MB budget: {dt:.2f} s, "
          f"peak RSS +{_peak_mb() - base:.0f} MB")


def main(argv: list[str]) -> None:
    if not argv:
        for case in CASES:
            subprocess.run([sys.executable, __file__, case], check=True)
        return
    case = argv[0]
    if case in VAE_CONFIGS:
        bench_vae(case)
    elif case.startswith("attention"):
        bench_attention(case)
    else:
        raise SystemExit(f"unknown case {case!r}; choose from {CASES}")


if __name__ == "__main__":
    main(sys.argv[1:])
