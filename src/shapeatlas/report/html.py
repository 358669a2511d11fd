"""`shapeatlas report`: one self-contained HTML page about a fitted run (and its evaluation).

The page opens offline: plotly.js is inlined once in its head, every figure is inline JSON,
and a Content-Security-Policy forbids the page any request (no fonts, images or scripts are
fetched). The 3D panels are built in `scenes`, the evaluation's charts in `charts`, and what
they show is read and computed in `content`; this module lays the page out and writes it
atomically. Build-vs-buy: plotly draws interactive WebGL meshes, sliders and charts in one
well-kept library and writes offline HTML; a templating engine would add a dependency for a
page of a dozen sections, so the HTML is assembled from escaped strings here.
"""

from __future__ import annotations

import html
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import plotly.io as pio
from plotly.offline import get_plotlyjs

from shapeatlas import __version__
from shapeatlas.atomic import atomic_path
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh.core import Mesh
from shapeatlas.models.generative import TRAVERSE_SPAN
from shapeatlas.models.generator import DEFAULT_LATENT
from shapeatlas.report import charts, content, tables
from shapeatlas.report.scenes import (
    ATLAS_COLOUR,
    REAL_COLOUR,
    VIRTUAL_COLOUR,
    DisplayFrame,
    Shape,
    matching_figure,
    modes_figure,
    panel_figure,
)
from shapeatlas.runs.load import load_model

__all__ = ["MAX_DIRECTIONS", "MAX_GALLERY", "TRAVERSE_STEPS", "write_report"]

log = logging.getLogger(__name__)

#: Latent directions shown with a slider, at most: every direction of a generator of the
#: default size (`models.generator.DEFAULT_LATENT`).
MAX_DIRECTIONS = DEFAULT_LATENT
#: Positions along each direction, from -2 to +2 sd.
TRAVERSE_STEPS = 9
#: Virtual (and real) shapes in the gallery, at most.
MAX_GALLERY = 8
#: Shapes corresponded for the matching panel.
MATCHED_SHAPES = 3
#: Stages reported to `progress`.
STAGES = 6
#: No request of any kind: scripts and styles are inline, images only data: or blob: URLs.
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
       "img-src data: blob:; font-src data:")
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "showSendToCloud": False,
                 "toImageButtonOptions": {"format": "png", "scale": 2}}


def check_report_path(out: str | Path, *, overwrite: bool, inputs: list) -> Path:
    """Refuse a report path that exists (unless `overwrite`), is a folder, lies inside an
    input folder, or whose folder cannot be written; -> its absolute path."""
    out = Path(os.path.abspath(Path(out).expanduser()))
    if out.is_dir():
        raise ShapeAtlasError(f"{out}: is a folder; --out names the HTML file to write")
    if out.exists() and not overwrite:
        raise ShapeAtlasError(f"{out} already exists: pass --overwrite to replace it or "
                              "choose another --out")
    real = out.parent.resolve() / out.name
    for folder in inputs:
        folder = Path(folder).resolve()
        if folder in real.parents:
            raise ShapeAtlasError(f"{out} lies inside the input folder {folder}: choose "
                                  "another --out (inputs are never written)")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ShapeAtlasError(f"cannot write {out}: {parent} is not a writable folder")
    return out


def _figure(fig: dict, div_id: str) -> str:
    return pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=div_id,
                       config=PLOTLY_CONFIG, validate=False,
                       default_height=f"{fig['layout']['height']}px")


def _p(text: str) -> str:
    return f"<p>{text}</p>"


def _section(sid: str, title: str, *parts: str) -> tuple[str, str, str]:
    return sid, title, "".join(parts)


def _ml(v: float | None) -> str:
    return "open" if v is None or not np.isfinite(v) else f"{v:.0f} mL"


def _atlas_section(model, frame: DisplayFrame) -> tuple[str, str, str]:
    faces = np.asarray(model.atlas_faces_)
    atlases = model.atlas_meshes() if hasattr(model, "atlas_meshes") else [model.atlas_mesh]
    mean = np.asarray(model.training_shapes_).mean(axis=0)
    shapes = [Shape(a.vertices, faces, (f"atlas {m}" if len(atlases) > 1 else "atlas")
                    + f": {_ml(content.mesh_volume_ml(a))}", colour=ATLAS_COLOUR)
              for m, a in enumerate(atlases)]
    mean_ml = _ml(content.mesh_volume_ml(Mesh(mean, faces)))
    shapes.append(Shape(mean, faces, f"mean shape: {mean_ml}", colour=REAL_COLOUR))
    fig = panel_figure(shapes, frame, title="atlas and mean shape")
    text = (f"The atlas has {len(model.atlas_vertices_):,} vertices and {len(faces):,} faces; "
            "every correspondence and every virtual shape has its topology (vertex j of any of "
            "them corresponds to atlas vertex j). The mean shape is the mean of the "
            f"{len(model.training_shapes_)} training shapes' normalised shapes (the training "
            "meshes resampled onto the atlas).")
    if len(atlases) > 1:
        text += f" This run has {len(atlases)} atlases, one per cluster of the cohort."
    return _section("atlas", "Atlas and mean shape", _p(text), _figure(fig, "atlas-figure"))


def _modes_section(model, frame: DisplayFrame) -> tuple[tuple[str, str, str], int, int]:
    gen = model.generator_
    total = int(gen.latent_dim)
    walks = model.traverse(directions=min(MAX_DIRECTIONS, total), steps=TRAVERSE_STEPS)
    pca = gen.kind == "pca"
    word = "mode" if pca else "direction"
    directions = [(f"{word} {r + 1}", s.vertices) for r, s in sorted(walks.items())]
    sd = np.linspace(-TRAVERSE_SPAN, TRAVERSE_SPAN, TRAVERSE_STEPS)  # as `traverse` steps
    fig = modes_figure(directions, np.asarray(model.atlas_faces_), frame, sd=sd,
                       title=f"{'PCA modes' if pca else 'β-VAE latent directions'}: "
                       "drag a slider to move along its direction")
    how = ("the PCA modes, by variance" if pca else "the β-VAE's latent directions, ordered by "
           "the variance of the training shapes' codes")
    cluster = (f" They are those of atlas {int(np.argmax(model.weights_))}, the most populated."
               if hasattr(model, "weights_") else "")
    text = (f"The model has {total} latent dimensions. Shown are the first "
            f"{len(directions)} of {how} (at most {MAX_DIRECTIONS}), one shape and one slider "
            f"each.{cluster} A slider moves its shape from −{TRAVERSE_SPAN:g} to "
            f"+{TRAVERSE_SPAN:g} standard deviations of the training codes along its "
            "direction, the other codes held at their mean; each position is decoded and made "
            "a valid mesh, as <code>shapeatlas sample --traverse</code> writes them.")
    return (_section("modes", "Modes of variation", _p(text), _figure(fig, "modes-figure")),
            len(directions), len(fig["layout"]["sliders"]))


def _gallery_section(model, run: content.RunFiles, frame: DisplayFrame, n: int, seed: int
                     ) -> tuple[str, str, str]:
    faces = np.asarray(model.atlas_faces_)
    samples = model.sample(n, seed=seed)
    vols = content.sample_volumes_ml(samples.vertices, faces)
    cluster = samples.cluster
    virtual = [Shape(v, faces, f"virtual {i + 1}"
                     + ("" if cluster is None else f" (atlas {int(cluster[i])})")
                     + f": {_ml(vol)}", colour=VIRTUAL_COLOUR)
               for i, (v, vol) in enumerate(zip(samples.vertices, vols))]
    real, source = content.real_shapes(run, model, n)
    real_shapes = [Shape(m.vertices, m.faces, f"{name}: {_ml(content.mesh_volume_ml(m))}",
                         colour=REAL_COLOUR) for name, m in real]
    # The real row is never longer than the virtual one: virtual on top, real below.
    fig = panel_figure(virtual + real_shapes, frame, columns=len(virtual),
                       title="virtual shapes (top) and real training shapes (bottom)")
    text = (f"{len(virtual)} virtual shapes drawn from the model's prior (seed {seed}; "
            "<code>-n</code> and <code>--seed</code> choose them), in the colour of "
            f"the gallery, above {len(real_shapes)} real shapes: {html.escape(source)}. "
            "Each is labelled with its enclosed volume (signed, with the atlas faces, for the "
            "virtual shapes).")
    return _section("gallery", "Virtual and real shapes", _p(text),
                    _figure(fig, "gallery-figure"))


def _matching_section(model, run: content.RunFiles, evaluation, frame: DisplayFrame
                      ) -> tuple[tuple[str, str, str], list[str]]:
    matched, what, notes = content.matched_shapes(model, run, evaluation, MATCHED_SHAPES)
    intro = ("Each shape is matched onto the atlas with <code>model.correspond</code> (the "
             "run's own matching), and drawn as its matched points with the atlas faces. Each "
             "atlas vertex is coloured by its <b>matching error</b> (mm): the larger of its "
             "matched point's distance to the input surface and the mean distance to the "
             "matched surface of the input vertices nearest to it, so it shows where the "
             "matched surface misses part of the input. The button switches to the "
             "<b>correspondence confidence</b>: " + (
                 "the largest share of the atlas vertex's CPD posterior on one input vertex"
                 if model.config.method == "cpd-pca" else
                 "the largest attention weight of the atlas vertex") + ", in (0, 1], low "
             "where several places of the shape match it about equally well (both are "
             "defined in <code>docs/metrics.md</code>). The last shape is the atlas, coloured "
             "by the mean of each over the matched shapes: where matching is hard.")
    if not matched:
        why = "; ".join(notes) if notes else (
            "neither the evaluation's test shapes nor the groomed training shapes are at hand")
        return _section("matching", "Correspondences", _p(intro),
                        _p(f"No shape could be matched here: {html.escape(why)}.")), notes
    faces = np.asarray(model.atlas_faces_)
    err = np.mean([m.error for m in matched], axis=0)
    conf = np.mean([m.confidence for m in matched], axis=0)
    shapes = [Shape(m.points, faces, m.name) for m in matched]
    shapes.append(Shape(model.atlas_vertices_, faces, f"atlas: mean of {len(matched)}"))
    values = [{"error": m.error, "confidence": m.confidence} for m in matched]
    values.append({"error": err, "confidence": conf})
    every_err = np.concatenate([v["error"] for v in values])
    every_conf = np.concatenate([v["confidence"] for v in values])
    limits = {"error": (0.0, float(max(np.percentile(every_err, 98), 1e-3))),
              "confidence": (float(min(every_conf.min(), 0.99)), 1.0)}
    fig = matching_figure(shapes, values, frame, limits=limits,
                          title="matching error and correspondence confidence")
    table = tables.table(
        ["shape", "Chamfer (mm)", "error: mean (mm)", "error: max (mm)", "confidence: mean",
         "confidence: min"],
        [[m.name, f"{m.chamfer_mm:.2f}", f"{m.error.mean():.2f}", f"{m.error.max():.2f}",
          f"{m.confidence.mean():.3f}", f"{m.confidence.min():.3f}"] for m in matched])
    parts = [_p(intro), _p(f"Shown: {len(matched)} {html.escape(what)}."),
             _figure(fig, "matching-figure"), table]
    parts += [_p(html.escape(n)) for n in notes]
    return _section("matching", "Correspondences", *parts), [m.name for m in matched]


def _evaluation_section(model, run: content.RunFiles, evaluation) -> tuple[str, str, str]:
    if evaluation is None:
        return _section("evaluation", "Evaluation", _p(
            "No evaluation was given. To add one, score the run on held-out shapes and build "
            "the report again with it:"), "<pre>shapeatlas evaluate RUN --test DIR --out EVAL\n"
            "shapeatlas report RUN --evaluation EVAL --out report.html</pre>",
            _p("The evaluation's compactness, generalization, specificity and volume "
               "distributions then appear here (definitions in <code>docs/metrics.md</code>)."))
    m = evaluation.metrics
    path = evaluation.folder / "metrics.json"
    try:
        real = np.asarray(model.real_volumes_, dtype=float)
        vols = {"real (training)": real, "test": content.test_volumes(evaluation),
                "virtual": evaluation.virtual_volumes}
        pl = m.get("plausibility", {})
        ks = pl.get("volume_ks")
        figs = [_figure(charts.compactness_chart(m["compactness"]), "compactness-figure"),
                _figure(charts.generalization_chart(m["generalization_mm"]),
                        "generalization-figure"),
                _figure(charts.specificity_chart(m["specificity_mm"], run.names),
                        "specificity-figure"),
                _figure(charts.volumes_chart(vols, "volumes" + (
                    f" (real vs virtual KS = {ks:.3f})" if ks is not None else "")),
                        "volumes-figure")]
        summary = tables.evaluation_summary(m)
        per_shape = tables.evaluation_matching(m)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ShapeAtlasError(f"{path}: not the metrics of this shapeatlas's evaluate "
                              f"({type(exc).__name__}: {exc})") from None
    text = (f"From <code>{html.escape(str(evaluation.folder))}</code>: {m.get('n_test')} test "
            f"shapes against {m.get('n_train')} training shapes and "
            f"{m.get('specificity_mm', {}).get('n_samples')} virtual shapes. Specificity is "
            "measured with every latent direction, so it is one number, not a curve. The "
            "definitions are in <code>docs/metrics.md</code>.")
    notes = "".join(_p(html.escape(n)) for n in evaluation.notes)
    return _section("evaluation", "Evaluation", _p(text), notes, summary,
                    '<div class="grid">' + "".join(f"<div>{f}</div>" for f in figs) + "</div>",
                    "<h3>Matching of the test shapes</h3>", per_shape)


def _page(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    nav = " · ".join(f'<a href="#{sid}">{html.escape(t)}</a>' for sid, t, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{html.escape(t)}</h2>{b}</section>'
                   for sid, t, b in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{tables.STYLE}</style>"
            f"<script>{get_plotlyjs()}</script></head><body>"
            f"<header><h1>{html.escape(title)}</h1><p>{subtitle}</p><nav>{nav}</nav></header>"
            f"{body}<footer>Made by shapeatlas {__version__}. Drag a 3D panel to turn it "
            "(all its shapes turn together), scroll to zoom, double-click to reset.</footer>"
            "</body></html>\n")


def write_report(run_dir: str | Path, out_path: str | Path, *,
                 evaluation: str | Path | None = None, n_samples: int = 4, seed: int = 0,
                 device: str = "auto", overwrite: bool = False,
                 progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Write one self-contained HTML report of a run (and of its evaluation) to `out_path`.

    The page holds the atlas and the mean shape, a slider per latent direction (at most
    `MAX_DIRECTIONS`), `n_samples` virtual shapes beside as many real ones with their volumes,
    a few shapes matched onto the atlas coloured by matching error and confidence, the
    evaluation's charts (with `evaluation`, a folder `shapeatlas evaluate` wrote), and the
    run's settings, data and timings. Nothing is written into the run or the evaluation;
    `out_path` must not exist unless `overwrite`, and is written atomically.
    -> a summary: path, bytes, seconds per stage, sections, directions, sliders, matched.
    """
    t_start = time.perf_counter()
    if not 1 <= n_samples <= MAX_GALLERY:
        raise ShapeAtlasError(f"the number of virtual shapes shown must be from 1 to "
                              f"{MAX_GALLERY}, got {n_samples}")
    inputs = [run_dir] + ([] if evaluation is None else [evaluation])
    out = check_report_path(out_path, overwrite=overwrite, inputs=inputs)
    seconds: dict[str, float] = {}

    def stage(name: str, t0: float) -> float:
        seconds[name] = time.perf_counter() - t0
        if progress:
            progress("report", 1, STAGES)
        return time.perf_counter()

    t = time.perf_counter()
    run = content.read_run(run_dir)
    ev = None if evaluation is None else content.read_evaluation(evaluation, run_dir)
    model = load_model(run_dir, device=device)
    frame = DisplayFrame(np.asarray(model.training_shapes_).mean(axis=0))
    t = stage("loading", t)
    sections = [_atlas_section(model, frame)]
    modes, n_directions, n_sliders = _modes_section(model, frame)
    sections.append(modes)
    t = stage("modes", t)
    sections.append(_gallery_section(model, run, frame, n_samples, seed))
    t = stage("gallery", t)
    matching, matched = _matching_section(model, run, ev, frame)
    sections.append(matching)
    t = stage("matching", t)
    sections.append(_evaluation_section(model, run, ev))
    t = stage("evaluation", t)
    sections += [_section("settings", "Settings", tables.settings(run.config)),
                 _section("data", "Data", tables.data(run)),
                 _section("timings", "Timings", tables.timings(run, ev, seconds))]
    name = Path(run_dir).resolve().name
    fit = run.fit_metrics
    gen = fit.get("generator", {})
    subtitle = html.escape(
        f"{fit.get('method')} run {Path(run_dir).resolve()}: {fit.get('n_shapes')} training "
        f"shapes, an atlas of {fit.get('atlas_vertices')} vertices, {gen.get('kind')} with "
        f"{gen.get('latent_dim')} latent dimensions. Report of "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, shapeatlas "
        f"{__version__}. Lengths in mm, volumes in mL; shapes in the run's aligned frame, "
        "seen along the principal axes of the mean shape.")
    page = _page(f"shapeatlas report: {name}", subtitle, sections)
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    stage("writing", t)
    return {"path": str(out), "bytes": out.stat().st_size,
            "seconds": {**seconds, "total": time.perf_counter() - t_start},
            "sections": [sid for sid, _, _ in sections], "directions": n_directions,
            "latent_dim": int(model.generator_.latent_dim), "sliders": n_sliders,
            "matched": matched, "evaluation": ev is not None}
