"""The evaluation's charts in the HTML report, as plotly figure dicts, from an evaluation
folder's `metrics.json` (definitions in docs/metrics.md) and the volumes of the three cohorts.

These are 2D (SVG) charts: they use no WebGL context, unlike the 3D panels (`scenes`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["compactness_chart", "generalization_chart", "specificity_chart", "volumes_chart"]

CHART_HEIGHT_PX = 320
#: Colours of the real (training), test and virtual cohorts in every chart.
COHORT_COLOURS = {"real (training)": "#4c72b0", "test": "#55a868", "virtual": "#c44e52"}


def _layout(title: str, x: str, y: str, **extra) -> dict:
    return {"title": {"text": title, "font": {"size": 14}}, "height": CHART_HEIGHT_PX,
            "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
            "xaxis": {"title": {"text": x}, "zeroline": False},
            "yaxis": {"title": {"text": y}, "zeroline": False},
            "paper_bgcolor": "white", "plot_bgcolor": "#f7f7f7", **extra}


def compactness_chart(compactness: Sequence[float]) -> dict:
    """Cumulative variance explained against the number of PCA modes (1 .. B-1)."""
    c = [float(x) for x in compactness]
    trace = {"type": "scatter", "mode": "lines+markers", "x": list(range(1, len(c) + 1)),
             "y": c, "hovertemplate": "%{x} modes: %{y:.3f}<extra></extra>"}
    layout = _layout("compactness", "PCA modes of the training normalised shapes",
                     "cumulative variance explained")
    layout["yaxis"]["range"] = [0, 1.02]
    layout["xaxis"]["dtick"] = 1
    return {"data": [trace], "layout": layout}


def generalization_chart(rows: Sequence[dict]) -> dict:
    """Test surface distance (mean ± SE) against the latent directions kept."""
    trace = {"type": "scatter", "mode": "lines+markers",
             "x": [int(r["components"]) for r in rows], "y": [float(r["mean"]) for r in rows],
             "error_y": {"type": "data", "array": [float(r["se"]) for r in rows],
                         "visible": True},
             "hovertemplate": "%{x} directions: %{y:.2f} mm<extra></extra>"}
    layout = _layout("generalization (mean ± SE)", "latent directions kept",
                     "test surface distance (mm)")
    layout["xaxis"]["dtick"] = 1
    return {"data": [trace], "layout": layout}


def specificity_chart(specificity: dict, names: Sequence[str] | None) -> dict:
    """How many virtual shapes lie nearest each training shape (specificity's `nearest`)."""
    nearest = np.asarray(specificity.get("nearest", []), dtype=int)
    n_train = len(names) if names else (int(nearest.max()) + 1 if len(nearest) else 0)
    counts = np.bincount(nearest, minlength=n_train) if len(nearest) else np.zeros(0, int)
    x = list(names) if names and len(names) == len(counts) else list(range(len(counts)))
    trace = {"type": "bar", "x": x, "y": counts.tolist(),
             "hovertemplate": "%{x}: %{y} samples<extra></extra>"}
    title = (f"specificity {specificity['vertex_mean']:.2f} ± {specificity['vertex_se']:.2f} mm:"
             " samples nearest each training shape")
    layout = _layout(title, "training shape", "virtual shapes nearest to it")
    layout["xaxis"]["type"] = "category"
    return {"data": [trace], "layout": layout}


def volumes_chart(volumes: dict[str, np.ndarray], title: str) -> dict:
    """Overlaid volume histograms (probability density) of the cohorts that have volumes."""
    values = {k: np.asarray(v, dtype=float)[np.isfinite(v)] for k, v in volumes.items()}
    values = {k: v for k, v in values.items() if len(v)}
    every = np.concatenate(list(values.values())) if values else np.zeros(1)
    lo, hi = float(every.min()), float(every.max())
    size = (hi - lo) / 30 if hi > lo else 1.0
    traces = [{"type": "histogram", "x": v.round(3).tolist(), "name": f"{k} (n={len(v)})",
               "histnorm": "probability density", "opacity": 0.55,
               "marker": {"color": COHORT_COLOURS.get(k)},
               "xbins": {"start": lo - size / 2, "end": hi + size, "size": size}}
              for k, v in values.items()]
    layout = _layout(title, "enclosed volume (mL)", "density", barmode="overlay")
    layout["legend"] = {"orientation": "h", "y": -0.25}
    layout["height"] = CHART_HEIGHT_PX + 40
    return {"data": traces, "layout": layout}
