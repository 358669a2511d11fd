"""Benchmark: which shape generator, measured on one run's normalised shapes (the design choice
behind the β-VAE defaults).

Takes the training normalised shapes saved in a fitted run (e.g. the LV hGCN run of
bench/compare.py), holds out every 4th shape, fits PCA and β-VAE variants on the rest, and prints:
- generalization: mean vertex distance between a held-out shape and its reconstruction (mm);
- specificity: mean vertex distance from each of 300 samples to its nearest training shape (mm);
- volume KS between the samples and the training shapes' own volumes;
- the share of samples free of self-intersections and of faces inverted against the atlas, for
  the raw decoder output and after 5 steps of the tangential relaxation `sample` applies to
  Atlas-R-ASMG samples (`sample_relax`), and the fit time.

    python bench/generator_choices.py /tmp/shapeatlas-compare/lv/hgcn
    python bench/generator_choices.py /tmp/shapeatlas-compare/lv/cpd-pca --pca-only
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import ks_2samp

from shapeatlas.mesh import geometry as geo
from shapeatlas.mesh.relax import relax_tangentially
from shapeatlas.mesh.validity import inverted_faces, self_intersecting_faces
from shapeatlas.metrics import ssm
from shapeatlas.models.generator import PCAGenerator, VAEGenerator, VAESettings
from shapeatlas.pipeline import load_model

VARIANTS = {
    "PCA (16 modes)": lambda: PCAGenerator(16),
    "β-VAE default (MLP 256, β 1, σ 1 mm, aggregate prior)": lambda: VAEGenerator(
        VAESettings(latent_dim=16)),
    "β-VAE, N(0, I) prior": lambda: VAEGenerator(VAESettings(latent_dim=16, prior="standard")),
    "β-VAE, β = 0.1": lambda: VAEGenerator(VAESettings(latent_dim=16, beta=0.1)),
    "β-VAE, σ = 2 mm": lambda: VAEGenerator(VAESettings(latent_dim=16, noise_mm=2.0)),
    "β-VAE, MLP 512-256": lambda: VAEGenerator(VAESettings(latent_dim=16, hidden=(512, 256))),
    "β-VAE, linear (no hidden layer)": lambda: VAEGenerator(VAESettings(latent_dim=16, hidden=())),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a fitted run folder")
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--pca-only", action="store_true", help="only the PCA row (e.g. a cpd-pca run)")
    args = p.parse_args()
    model = load_model(args.run, device="cpu")
    shapes, faces = model.training_shapes_, np.asarray(model.atlas_faces_)
    held = np.arange(len(shapes)) % 4 == 0
    train, test = shapes[~held], shapes[held]
    vols = np.array([geo.signed_volume(s, faces) / 1000.0 for s in train])
    print(f"{len(train)} training / {len(test)} held-out normalised shapes, K = {shapes.shape[1]}")
    print("| generator | generalization (mm) | specificity (mm) | volume KS | no self-intersection "
          "raw / relaxed | no inverted face raw / relaxed | fit (s) |")
    print("|---|---|---|---|---|---|---|")
    for name, make in list(VARIANTS.items())[: 1 if args.pca_only else None]:
        t0 = time.perf_counter()
        g = make().fit(train, seed=0)
        fit_s = time.perf_counter() - t0
        gen = np.linalg.norm(g.reconstruct(test) - test, axis=2).mean()
        s = g.decode(g.sample_latent(args.samples, np.random.default_rng(0)))
        spec = ssm.specificity(s, train, atlas_faces=faces).vertex_mean
        v = np.array([geo.signed_volume(x, faces) / 1000.0 for x in s])
        relaxed = relax_tangentially(s, faces, iterations=5)
        free = [np.mean([len(self_intersecting_faces(x, faces)) == 0 for x in y])
                for y in (s, relaxed)]
        upright = [np.mean([len(inverted_faces(x, faces, model.atlas_vertices_)) == 0
                            for x in y]) for y in (s, relaxed)]
        print(f"| {name} | {gen:.2f} | {spec:.2f} | {ks_2samp(v, vols).statistic:.3f} | "
              f"{100 * free[0]:.0f}% / {100 * free[1]:.0f}% | "
              f"{100 * upright[0]:.0f}% / {100 * upright[1]:.0f}% | {fit_s:.1f} |", flush=True)


if __name__ == "__main__":
    main()
