"""PNG figures of an evaluation, built only from its metrics (and the sampled volumes).

matplotlib is imported lazily with the non-interactive Agg backend, so it needs no display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shapeatlas.atomic import atomic_path


def _pyplot():
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        raise ImportError("figures need matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> str:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    return path.name


#: Virtual shapes drawn in samples.png.
GALLERY_SHAPES = 8


def _gallery(plt, vertices: np.ndarray, faces: np.ndarray, volumes: np.ndarray, path: Path,
             title: str) -> str:
    """The first few samples as shaded surfaces, all seen from the same direction."""
    n = min(GALLERY_SHAPES, len(vertices))
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig = plt.figure(figsize=(2.6 * cols, 2.6 * rows))
    lo, hi = vertices[:n].min(axis=(0, 1)), vertices[:n].max(axis=(0, 1))
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1, projection="3d")
        v = vertices[i]
        ax.plot_trisurf(v[:, 0], v[:, 1], v[:, 2], triangles=faces, linewidth=0,
                        antialiased=False, color="#c98b7a", shade=True)
        ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), zlim=(lo[2], hi[2]))
        ax.set_box_aspect(hi - lo)
        ax.set_axis_off()
        ax.set_title(f"sample {i}: {volumes[i]:.0f} mL", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def write_figures(metrics: dict, out_dir: Path, *, virtual_volumes: np.ndarray,
                  real_volumes: np.ndarray, test_volumes: np.ndarray | None = None,
                  samples: np.ndarray | None = None,
                  faces: np.ndarray | None = None) -> list[str]:
    """compactness.png, generalization.png, specificity.png, volumes.png and, given the samples
    (S, K, 3) and atlas faces, samples.png -> their file names. Volumes in mL: virtual (S,),
    real (training) and test shapes (watertight ones only)."""
    plt = _pyplot()
    names = []
    title = f"{metrics['method']} ({metrics['generator']}, D={metrics['latent_dim']})"

    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    c = np.asarray(metrics["compactness"])
    ax.plot(np.arange(1, len(c) + 1), c, "o-", ms=3)
    # The PCA of the correspondences, whatever the generator: not a β-VAE's latent variance.
    note = "" if metrics["generator"] == "pca" else ", not the generator's latent variance"
    ax.set(xlabel="PCA modes m of the training normalised shapes",
           ylabel="cumulative share of their variance", ylim=(0, 1.02))
    ax.set_title(f"compactness: PCA of the training normalised shapes{note}\n{title}",
                 fontsize=9)
    ax.grid(alpha=0.3)
    names.append(_save(fig, out_dir / "compactness.png"))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    g = metrics["generalization_mm"]
    ax.errorbar([r["components"] for r in g], [r["mean"] for r in g],
                yerr=[r["se"] for r in g], fmt="o-", ms=3, capsize=3)
    ax.set(xlabel="latent directions kept, k",
           ylabel="mean surface distance (mm)",
           title=f"generalization: {metrics['n_test']} test shapes reconstructed\n"
                 "with k latent directions (mean ± SE)")
    ax.grid(alpha=0.3)
    names.append(_save(fig, out_dir / "generalization.png"))
    plt.close(fig)

    s = metrics["specificity_mm"]
    curve = metrics.get("specificity_curve_mm")
    fig, axes = plt.subplots(1, 2 if curve else 1, figsize=(9.6 if curve else 4.8, 3.4),
                             squeeze=False)
    if curve:
        ax = axes[0, 0]
        ax.errorbar([r["components"] for r in curve], [r["mean"] for r in curve],
                    yerr=[r["se"] for r in curve], fmt="o-", ms=3, capsize=3)
        ax.set(xlabel="latent directions sampled, k",
               ylabel="distance to nearest training shape (mm)",
               title=f"specificity against the latent directions sampled, k\n"
                     f"({curve[0]['n_samples']} samples per k, mean ± SE)")
        ax.grid(alpha=0.3)
    ax = axes[0, -1]
    counts = np.bincount(np.asarray(s["nearest"]), minlength=metrics["n_train"])
    ax.bar(np.arange(len(counts)), counts)
    ax.set(xlabel="training shape", ylabel="samples nearest to it",
           title=f"all {metrics['latent_dim']} directions, {s['n_samples']} samples:\n"
                 f"specificity {s['vertex_mean']:.2f} ± {s['vertex_se']:.2f} mm")
    fig.tight_layout()
    names.append(_save(fig, out_dir / "specificity.png"))
    plt.close(fig)

    if len(real_volumes):
        fig, ax = plt.subplots(figsize=(4.8, 3.4))
        test = np.zeros(0) if test_volumes is None else np.asarray(test_volumes, dtype=float)
        virtual = np.asarray(virtual_volumes, dtype=float)
        virtual = virtual[np.isfinite(virtual)]
        bins = np.histogram_bin_edges(np.concatenate([real_volumes, virtual, test]), bins=30)
        for vols, label, style in ((virtual, "virtual", {"alpha": 0.45}),
                                   (real_volumes, "real (training)", {"alpha": 0.45}),
                                   (test, "test", {"histtype": "step", "linewidth": 1.5})):
            if len(vols):
                ax.hist(vols, bins=bins, density=True, label=f"{label}, n={len(vols)}", **style)
        if len(test):  # a few test shapes make a thin histogram: mark each one too
            ax.plot(test, np.zeros(len(test)), "|", color="black", ms=12, clip_on=False)
        ks = metrics["plausibility"].get("volume_ks")
        ax.set(xlabel="enclosed volume (mL)", ylabel="density",
               title="volumes" + (f", KS real vs virtual = {ks:.3f}" if ks is not None else ""))
        ax.legend(fontsize=8)
        names.append(_save(fig, out_dir / "volumes.png"))
        plt.close(fig)
    if samples is not None and faces is not None:
        names.append(_gallery(plt, np.asarray(samples), np.asarray(faces), virtual_volumes,
                              out_dir / "samples.png", f"virtual shapes, {title}"))
        plt.close("all")
    return names
