"""What the HTML report shows, read from a run folder and an evaluation folder and computed
with the fitted model's public methods; no HTML here (`report.html` lays it out).

Everything is read, never written: the run and the evaluation stay as they are.
Shapes: `K` atlas vertices, `V` vertices of one shape, `F` faces, `D` latent size.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from shapeatlas import validate
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh import geometry as geo
from shapeatlas.mesh.closest import point_to_surface_distance
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.groom import MANIFEST_NAME, load_manifest
from shapeatlas.mesh.io import read_mesh

__all__ = ["Evaluation", "Matched", "RunFiles", "matched_shapes", "matching_error",
           "mesh_volume_ml", "read_evaluation", "read_run", "real_shapes", "sample_volumes_ml",
           "test_folder", "test_volumes"]

log = logging.getLogger(__name__)

#: Largest samples.csv read (a few dozen bytes per virtual shape).
MAX_TABLE_BYTES = 256 * 1024 * 1024
#: Largest groomed mesh file read for the report.
MAX_MESH_BYTES = 2 * 1024**3
EVALUATION_FORMAT = "shapeatlas-evaluation"


@dataclass(frozen=True)
class RunFiles:
    """The JSON files of a run folder. names: the training shapes, in the fit's order."""

    folder: Path
    config: dict
    fit_metrics: dict
    provenance: dict | None
    names: list[str]


def _json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ShapeAtlasError(f"{path.parent}: no {path.name} ({what})")
    return validate.mapping(validate.read_json(path), path)


def read_run(run_dir: str | Path) -> RunFiles:
    """config.json, fit_metrics.json and provenance.json (if any) of a finished run."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise ShapeAtlasError(f"{folder}: not a folder")
    what = "not a finished run folder written by 'shapeatlas fit'"
    config = _json(folder / "config.json", what)
    fit = _json(folder / "fit_metrics.json", what)
    prov = folder / "provenance.json"
    per_shape = fit.get("per_shape")
    names = list(per_shape) if isinstance(per_shape, dict) else []
    return RunFiles(folder, config, fit, _json(prov, "") if prov.is_file() else None, names)


@dataclass(frozen=True)
class Evaluation:
    """An evaluation folder: its metrics.json and the volumes (S,) of samples.csv (mL)."""

    folder: Path
    metrics: dict
    virtual_volumes: np.ndarray
    notes: list[str] = field(default_factory=list)


def _csv_column(path: Path, name: str) -> np.ndarray:
    text = validate.read_bytes(path, max_bytes=MAX_TABLE_BYTES).decode("utf-8", "replace")
    rows = list(csv.DictReader(io.StringIO(text)))
    if rows and name not in rows[0]:
        raise ShapeAtlasError(f"{path}: no column {name!r}")
    try:
        return np.array([float(r[name]) for r in rows], dtype=np.float64)
    except (TypeError, ValueError):
        raise ShapeAtlasError(f"{path}: column {name!r} holds a value that is not a "
                              "number") from None


def read_evaluation(folder: str | Path, run_dir: str | Path) -> Evaluation:
    """metrics.json and samples.csv of a folder `shapeatlas evaluate` wrote."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ShapeAtlasError(f"{folder}: not a folder")
    path = folder / "metrics.json"
    metrics = _json(path, "not an evaluation folder written by 'shapeatlas evaluate'")
    if metrics.get("format") != EVALUATION_FORMAT:
        raise ShapeAtlasError(f"{path}: not a shapeatlas evaluation (format "
                              f"{validate.shown(metrics.get('format'))})")
    table = folder / "samples.csv"
    vols = _csv_column(table, "volume_ml") if table.is_file() else np.zeros(0)
    notes = []
    run = metrics.get("run")
    if isinstance(run, str) and Path(run) != Path(run_dir).resolve():
        notes.append(f"This evaluation was made of the run at {run}; it is shown here with "
                     f"the run at {Path(run_dir).resolve()}.")
    return Evaluation(folder, metrics, vols, notes)


def mesh_volume_ml(mesh: Mesh) -> float | None:
    """Enclosed volume (mL) of a closed mesh; None for an open one."""
    return mesh.volume / 1000.0 if mesh.is_watertight else None


def _groomed_folder(run: RunFiles) -> Path | None:
    """The groomed training shapes: RUN/groomed, or the groomed folder the run was fitted on,
    while it is still at hand."""
    own = run.folder / "groomed"
    if (own / MANIFEST_NAME).is_file():
        return own
    data = run.fit_metrics.get("data")
    source = data.get("data") if isinstance(data, dict) else None
    if isinstance(source, str) and (Path(source) / MANIFEST_NAME).is_file():
        return Path(source)
    return None


def _read_groomed(folder: Path, n: int | None) -> list[Mesh]:
    """The first n shapes (all for None) of a groomed folder, in its manifest's order."""
    shapes = load_manifest(folder)["shapes"]
    out = []
    for s in shapes[:n]:
        path = folder / s["output"]
        validate.regular_file(path, max_bytes=MAX_MESH_BYTES)
        out.append(read_mesh(path))
    return out


def real_shapes(run: RunFiles, model, n: int) -> tuple[list[tuple[str, Mesh]], str]:
    """Up to n training shapes as (name, mesh) and where they come from: the groomed meshes,
    or, when they are no longer at hand, the model's normalised shapes (atlas faces)."""
    folder = _groomed_folder(run)
    if folder is not None:
        try:
            meshes = _read_groomed(folder, n)
            return ([(Path(m.name).stem, m) for m in meshes],
                    f"the groomed training meshes in {folder}")
        except ShapeAtlasError as exc:
            log.warning("groomed training shapes not used: %s", exc)
    shapes = np.asarray(model.training_shapes_)[:n]
    names = run.names if len(run.names) == len(model.training_shapes_) else [
        f"shape {i}" for i in range(len(model.training_shapes_))]
    faces = np.asarray(model.atlas_faces_)
    return ([(nm, Mesh(v, faces, name=nm)) for nm, v in zip(names, shapes)],
            "the model's normalised training shapes (the groomed meshes are not at hand)")


def test_folder(evaluation: Evaluation) -> Path | None:
    """The groomed test shapes of an evaluation: EVAL/groomed-test, or the groomed folder it
    was given, while it is still at hand."""
    own = evaluation.folder / "groomed-test"
    if (own / MANIFEST_NAME).is_file():
        return own
    test = evaluation.metrics.get("test")
    if isinstance(test, str) and (Path(test) / MANIFEST_NAME).is_file():
        return Path(test)
    return None


def test_volumes(evaluation: Evaluation) -> np.ndarray:
    """Volumes (mL) of the evaluation's test shapes while they are at hand (NaN: open)."""
    folder = test_folder(evaluation)
    if folder is None:
        return np.zeros(0)
    try:
        meshes = _read_groomed(folder, None)
    except ShapeAtlasError as exc:
        log.warning("test volumes not shown: %s", exc)
        return np.zeros(0)
    return np.array([np.nan if (v := mesh_volume_ml(m)) is None else v for m in meshes])


def matching_error(points: np.ndarray, faces: np.ndarray, mesh: Mesh) -> np.ndarray:
    """How far the matched surface departs from the input around each atlas vertex (mm).

    points: (K, 3) the matched points in the input's frame, faces: (F, 3) the atlas faces,
    mesh: the input. -> (K,) the larger of the distance from the matched point to the input
    surface and the mean distance to the matched surface of the input vertices whose nearest
    matched point it is (0 where none is). The first is 0 once the CPD refinement and the
    pull have put the points on the surface; the second shows where the matched surface still
    misses part of the input (cuts a corner, falls short of a tip)."""
    pts = np.asarray(points, dtype=np.float64)
    onto_input = point_to_surface_distance(pts, mesh)
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    back = point_to_surface_distance(verts, pts, np.asarray(faces))
    owner = cKDTree(pts).query(verts)[1]
    counts = np.bincount(owner, minlength=len(pts))
    sums = np.bincount(owner, weights=back, minlength=len(pts))
    missed = np.divide(sums, counts, out=np.zeros(len(pts)), where=counts > 0)
    return np.maximum(onto_input, missed)


@dataclass(frozen=True)
class Matched:
    """One shape matched onto the atlas. points: (K, 3) the normalised shape (aligned frame);
    error: (K,) `matching_error` (mm); confidence: (K,) the correspondence's confidence."""

    name: str
    points: np.ndarray
    error: np.ndarray
    confidence: np.ndarray
    chamfer_mm: float


def matched_shapes(model, run: RunFiles, evaluation: Evaluation | None, n: int
                   ) -> tuple[list[Matched], str, list[str]]:
    """Correspond up to n shapes with `model.correspond`: the evaluation's test shapes when
    they are at hand, else training shapes (from their pose in the fit).
    -> (matched shapes, what they are, notes on shapes that could not be matched)"""
    meshes, poses, what, notes = [], None, "", []
    folder = test_folder(evaluation) if evaluation is not None else None
    if folder is not None:
        try:
            meshes = _read_groomed(folder, n)
            what = (f"test shapes of the evaluation ({folder}), each aligned to the atlas "
                    "by itself")
        except ShapeAtlasError as exc:
            notes.append(f"The evaluation's test shapes could not be read ({exc}): training "
                         "shapes are shown instead.")
    if not meshes:
        groomed = _groomed_folder(run)
        try:
            meshes = [] if groomed is None else _read_groomed(groomed, n)
        except ShapeAtlasError as exc:
            notes.append(f"The groomed training shapes could not be read ({exc}).")
        poses = [np.eye(4)] * len(meshes)  # groomed files are in the aligned frame
        what = f"training shapes ({groomed}), from their pose in the fit"
    out = []
    for i, mesh in enumerate(meshes):
        name = Path(mesh.name).stem
        try:
            c = model.correspond([mesh], transforms=None if poses is None else [poses[i]])[0]
        except ShapeAtlasError as exc:
            notes.append(f"{name} could not be matched: {exc}")
            continue
        err = matching_error(c.points, model.atlas_faces_, mesh)
        out.append(Matched(name, c.aligned_points, err, np.asarray(c.confidence, dtype=float),
                           float(c.chamfer_mm)))
    return out, what, notes


def sample_volumes_ml(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Signed enclosed volumes (mL) of shapes (S, K, 3) with the atlas faces (F, 3) -> (S,)."""
    f = np.asarray(faces)
    return np.array([geo.signed_volume(v, f) / 1000.0 for v in vertices])
