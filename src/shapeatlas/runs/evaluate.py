"""`shapeatlas evaluate`: score a fitted run on a test folder (definitions in `metrics.ssm`).

Writes OUT/metrics.json, OUT/samples.csv (volume and validity of every virtual shape scored) and
PNG figures (compactness, generalization, specificity, volumes, and a gallery of the first
virtual shapes).
Test meshes are aligned to the run's atlas one by one (as `correspond` does), so a test folder
needs no shared grooming with the training data; a raw folder (no groom.json) is groomed first
with the run's grooming options into OUT/groomed-test.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np

from shapeatlas.atomic import write_text_atomic
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh.groom import (
    MANIFEST_NAME,
    GroomOptions,
    groom_cohort,
    load_groomed,
)
from shapeatlas.metrics import ssm
from shapeatlas.metrics.surface import hausdorff95
from shapeatlas.models.generative import latent_sizes
from shapeatlas.outputs import check_output, staged_output
from shapeatlas.report.figures import write_figures
from shapeatlas.runs.folder import training_sources
from shapeatlas.runs.load import model_device, open_run
from shapeatlas.runs.sample import sample_validity
from shapeatlas.training.config import MatchConfig

log = logging.getLogger(__name__)

#: At most this many latent sizes are scored for the generalization curve.
MAX_CURVE_POINTS = 8


def curve_components(latent_dim: int) -> list[int]:
    """Latent sizes / mode counts at which generalization is scored: 1 .. D, at most 8 values."""
    pts = np.unique(np.round(np.geomspace(1, latent_dim, min(MAX_CURVE_POINTS, latent_dim))))
    return [int(p) for p in pts]


#: At most this many samples are drawn for each point of the specificity curve.
CURVE_SAMPLES = 200


def curve_samples(n_samples: int, points: int) -> int:
    """Samples per point of the specificity curve: min(n_samples, 200, ⌈n_samples / (points -
    1)⌉), so the points below D together draw about n_samples shapes at most (the point D takes
    the first of the n_samples shapes already drawn)."""
    share = -(-n_samples // (points - 1)) if points > 1 else n_samples
    return max(1, min(n_samples, CURVE_SAMPLES, share))


def _test_meshes(test_dir: Path, out_dir: Path, model, progress) -> list:
    """The test shapes: the groomed ones, or, for a run whose point model was kept, the
    original files that their `groom.json` names when they are at hand and unchanged."""
    groomed = test_dir
    if not (test_dir / MANIFEST_NAME).is_file():
        if not test_dir.is_dir():
            raise ShapeAtlasError(f"{test_dir}: not a folder")
        groomed = out_dir / "groomed-test"
        target = model.config.grooming.target_vertices
        log.info("%s has no %s: grooming it into %s", test_dir, MANIFEST_NAME, groomed)
        groom_cohort(
            test_dir,
            groomed,
            GroomOptions(target_vertices=target, watertight="auto"),
            progress=progress,
        )
    meshes = load_groomed(groomed)[0]
    if getattr(model, "point_model_", None) is not None:
        # The point model was fitted on the training shapes' original files and the generator
        # learnt from them; QSlim-decimated copies are matched differently (docs/results.md).

        sources = training_sources(groomed, meshes)
        if sources is not None:
            log.info("point model: evaluating the original files named in %s", groomed)
            return sources[0]
    return meshes


def evaluate_run(
    run_dir: str | Path,
    test_dir: str | Path,
    out_dir: str | Path,
    *,
    n_samples: int = 1000,
    seed: int = 0,
    device: str = "auto",
    figures: bool = True,
    match: MatchConfig | None = None,
    overwrite: bool = False,
    progress: Callable | None = None,
) -> dict:
    """Matching, compactness, generalization, specificity and plausibility of a run.

    out_dir must be new or empty unless `overwrite` (then it is replaced whole); it is built
    beside it and moved into place at the end (`shapeatlas.outputs`). match: how to
    correspond the test shapes (`MatchConfig`; None: the run's own; R-ASM runs).
    progress(stage, increment, total) through each stage: "groom" (a raw test folder),
    "match" (test shapes), "general" (generalization: test shapes x latent sizes), "specific"
    (specificity: samples) and "validity" (the samples' mesh check).
    -> the metrics dict (also written to OUT/metrics.json).
    """

    inputs = [run_dir, test_dir]
    check_output(out_dir, overwrite=overwrite, inputs=inputs)
    model = open_run(run_dir, device=device, match=match, generator=True)
    with staged_output(out_dir, verb="evaluate", overwrite=overwrite, inputs=inputs,
                       device=model_device(model)) as staging:
        return _evaluate_into(model, run_dir, test_dir, staging.path, n_samples=n_samples,
                              seed=seed, figures=figures, match=match, progress=progress)


def _evaluate_into(model, run_dir: str | Path, test_dir: str | Path, out_dir: Path, *,
                   n_samples: int, seed: int, figures: bool, match: MatchConfig | None,
                   progress: Callable | None) -> dict:
    """`evaluate_run`'s work, in the staging folder `out_dir`."""

    meshes = _test_meshes(Path(test_dir), out_dir, model, progress)

    # Matching: every test mesh aligned to the atlas on its own; refuse the wrong organ/scale.
    def stage(name: str, total: int) -> Callable[[int], None] | None:
        return (lambda k: progress(name, k, total)) if progress else None

    t0 = time.perf_counter()
    corr, kept, skipped = [], [], []
    matched = stage("match", len(meshes))
    for m in meshes:
        try:
            corr.append(model.correspond([m], match=match)[0])
            kept.append(m)
        except ShapeAtlasError as exc:
            skipped.append(str(exc))
            log.warning("skipped %s", exc)
        if matched:
            matched(1)
    if not corr:
        raise ShapeAtlasError(
            f"none of the {len(meshes)} test shapes in {test_dir} could be "
            f"matched to this run's atlas; first problem: {skipped[0]}"
        )
    if len(corr) < 2:
        raise ShapeAtlasError(f"{test_dir}: at least 2 test shapes are needed, {len(corr)} matched")
    t_corr = time.perf_counter() - t0
    aligned = [m.transformed(c.transform) for m, c in zip(kept, corr)]
    test_shapes = np.stack([c.aligned_points for c in corr])
    matching = [
        {
            "name": c.name,
            "chamfer_mm": c.chamfer_mm,
            "hausdorff_mm": c.hausdorff_mm,
            "hd95_mm": hausdorff95(np.asarray(m.vertices), c.points),
        }
        for m, c in zip(kept, corr)
    ]

    faces = np.asarray(model.atlas_faces_)
    gen = model.generator_
    comps = curve_components(gen.latent_dim)
    general = ssm.generalization(gen, test_shapes, aligned, atlas_faces=faces, components=comps,
                                 progress=stage("general", len(comps) * len(corr)))

    t0 = time.perf_counter()
    samples = model.sample(n_samples, seed=seed, progress=stage("sample", n_samples))
    t_sample = time.perf_counter() - t0
    spec = ssm.specificity(samples.vertices, model.training_shapes_, atlas_faces=faces,
                           progress=stage("specific", n_samples))
    n_curve = curve_samples(n_samples, len(comps))
    curve_progress = stage("curve", n_curve * sum(k < gen.latent_dim for k in comps))
    spec_curve = ssm.specificity_curve(
        lambda k: (samples.vertices[:n_curve] if k >= gen.latent_dim
                   else model.sample(n_curve, seed=seed, components=k,
                                     progress=curve_progress).vertices),
        model.training_shapes_, components=comps)
    checks = sample_validity(model, samples.vertices, progress=stage("validity", n_samples))
    virtual_vol = np.array([c["volume_ml"] for c in checks])
    virtual_ext = np.array([ssm.extents(v, model.axes_) for v in samples.vertices])
    real_vol, real_ext = model.real_volumes_, model.real_extents_
    finite = np.isfinite(real_vol)
    plaus = (
        ssm.plausibility(real_vol[finite], real_ext[finite], virtual_vol, virtual_ext)
        if finite.sum() >= 2
        else {"note": "training meshes are not watertight: no volumes"}
    )
    plaus["validity"] = {
        "watertight": float(np.mean([c["watertight"] for c in checks])),
        "no_self_intersections": float(
            np.mean([c["self_intersecting_faces"] == 0 for c in checks])
        ),
        "no_inverted_faces": float(np.mean([c["inverted_faces"] == 0 for c in checks])),
        "valid": float(np.mean([c["valid"] for c in checks])),
    }
    test_vols = [m.volume / 1000.0 for m in aligned if m.is_watertight]
    compact = ssm.compactness(model.training_shapes_)

    def mean_se(key: str) -> dict:
        x = np.array([r[key] for r in matching])
        return {"mean": float(x.mean()), "se": float(x.std(ddof=1) / np.sqrt(len(x)))}

    metrics = {
        "format": "shapeatlas-evaluation",
        "run": str(Path(run_dir).resolve()),
        "test": str(Path(test_dir).resolve()),
        "method": model.config.method,
        "generator": gen.kind,
        **latent_sizes(gen),
        "n_train": int(len(model.training_shapes_)),
        "n_test": len(corr),
        "skipped": skipped,
        "units": "mm, mL; definitions: docs/metrics.md",
        "matching": {
            "chamfer_mm": mean_se("chamfer_mm"),
            "hausdorff_mm": mean_se("hausdorff_mm"),
            "hd95_mm": mean_se("hd95_mm"),
            "per_shape": matching,
            "seconds_per_shape": t_corr / len(corr),
        },
        "compactness": compact.tolist(),
        "generalization_mm": general,
        "specificity_mm": {"n_samples": n_samples, "seed": seed, **spec.to_dict()},
        "specificity_curve_mm": spec_curve,
        "plausibility": plaus,
        "test_volume_ml": (
            {"mean": float(np.mean(test_vols)), "sd": float(np.std(test_vols))}
            if test_vols
            else None
        ),
        "sampling_seconds": t_sample,
    }
    if samples.cluster is not None:
        metrics["clusters"] = cluster_metrics(
            model, samples, virtual_vol, virtual_ext, corr, test_shapes, aligned)
    write_text_atomic(out_dir / "samples.csv", samples_table(checks, samples.cluster))
    write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    if figures:

        metrics["figures"] = write_figures(
            metrics, out_dir, virtual_volumes=virtual_vol, real_volumes=real_vol[finite],
            test_volumes=np.array(test_vols), samples=samples.vertices, faces=faces,
        )
        write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    return metrics


def samples_table(checks: list[dict], cluster: np.ndarray | None) -> str:
    """CSV of every virtual shape scored: sample, cluster (multi-atlas models), volume_ml and the
    validity flags of `sample_validity` (1/0), so the virtual cohort's volumes can be compared with
    any reference (e.g. a known population) without sampling again."""
    keys = ["volume_ml", "watertight", "self_intersecting_faces", "inverted_faces", "valid"]
    head = ["sample"] + (["cluster"] if cluster is not None else []) + keys
    lines = [",".join(head)]
    for i, c in enumerate(checks):
        lead = [str(i)] + ([str(int(cluster[i]))] if cluster is not None else [])
        lines.append(",".join(lead + [str(int(c[k]) if isinstance(c[k], bool) else c[k])
                                      for k in keys]))
    return "\n".join(lines) + "\n"


def cluster_metrics(model, samples, virtual_vol: np.ndarray, virtual_ext: np.ndarray,
                    corr: list, test_shapes: np.ndarray, aligned: list) -> list[dict]:
    """Per-atlas metrics of a multi-atlas model: sizes, specificity of the atlas's samples
    against its own training shapes, generalization (all latent directions) of the test shapes
    assigned to it, and its volume distributions."""
    faces = np.asarray(model.atlas_faces_)
    test_atlas = np.array([c.atlas for c in corr])
    out = []
    for m in range(model.n_atlases_):
        sm = np.flatnonzero(samples.cluster == m)
        tr = np.flatnonzero(model.labels_ == m)
        te = np.flatnonzero(test_atlas == m)
        row = {"atlas": m, "weight": float(model.weights_[m]), "n_train": int(len(tr)),
               "n_test": int(len(te)), "n_samples": int(len(sm))}
        if len(sm) and len(tr):
            spec = ssm.specificity(samples.vertices[sm], model.training_shapes_[tr],
                                   atlas_faces=faces)
            row["specificity_mm"] = {"vertex_mean": spec.vertex_mean, "vertex_se": spec.vertex_se}
        if len(te):
            g = ssm.generalization(model.generator_, test_shapes[te], [aligned[i] for i in te],
                                   atlas_faces=faces, components=[model.generator_.latent_dim])
            row["generalization_mm"] = {k: g[0][k] for k in ("mean", "se")}
        closed = tr[np.isfinite(model.real_volumes_[tr])]
        if len(sm) >= 2 and len(closed) >= 2:
            p = ssm.plausibility(model.real_volumes_[closed], model.real_extents_[closed],
                                 virtual_vol[sm], virtual_ext[sm])
            row["volume_ml"] = {"real": p["real_volume_ml"], "virtual": p["virtual_volume_ml"],
                                "ks": p["volume_ks"]}
        out.append(row)
    return out
