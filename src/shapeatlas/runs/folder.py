"""A run folder's records: which files it holds and the poses `fit` used.

A run folder holds `config.json` (full, reloadable with `--config`), `model.safetensors` +
`model.json` (the model of either method, with its shape generator and the training shapes'
normalised shapes; no pickle), `atlas.ply`, `train_log.csv` and `checkpoint.pt` (R-ASM, for
`--resume`), `fit_metrics.json`, `training_poses.json` (the SHA-256 of every training file, raw
and groomed, with the pose `fit` used for it) and `groomed/` when `fit` had to groom raw meshes
itself.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from shapeatlas import validate
from shapeatlas.atomic import write_text_atomic
from shapeatlas.data.cache import file_digest
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.groom import load_groomed, load_manifest
from shapeatlas.mesh.io import is_mesh_file, read_mesh
from shapeatlas.metrics.surface import point_to_surface_distance
from shapeatlas.validate import regular_file

log = logging.getLogger(__name__)


#: In a run folder: the fit's pose of each training file, keyed by the file's SHA-256.
TRAINING_POSES_NAME = "training_poses.json"


TRAINING_POSES_FORMAT = "shapeatlas-training-poses"


#: A source file whose transformed surface lies further than this fraction of the groomed
#: shape's RMS radius from it (mean vertex-to-surface distance, both ways) is taken to have
#: changed since grooming.
SOURCE_MISMATCH = 0.05


def training_sources(groomed_dir: str | Path, meshes: Sequence[Mesh] | None = None
                     ) -> tuple[list[Mesh], list[np.ndarray]] | None:
    """The original files of a fit's training shapes with their grooming transforms (file
    frame -> aligned frame), in the order of the groomed meshes; None (logged) when the groomed
    folder has no manifest, or a source cannot be read or no longer matches its groomed shape
    (`SOURCE_MISMATCH`). meshes: the folder's groomed meshes if already loaded."""

    try:
        if meshes is None:
            meshes, manifest = load_groomed(groomed_dir)
        else:
            manifest = load_manifest(groomed_dir)
        sources = [read_mesh(check_source(s["source"])) for s in manifest["shapes"]]
        poses = [np.asarray(s["transform"], dtype=np.float64) for s in manifest["shapes"]]
        for src, pose, g in zip(sources, poses, meshes):
            moved = src.transformed(pose)
            gap = 0.5 * (point_to_surface_distance(moved.vertices, g).mean()
                         + point_to_surface_distance(g.vertices, moved).mean())
            b = np.asarray(g.vertices)
            radius = np.sqrt(((b - b.mean(axis=0)) ** 2).sum(axis=1).mean())
            if not gap <= SOURCE_MISMATCH * radius:
                raise ShapeAtlasError(f"{src.name} lies {gap:.3g} mm from its groomed shape: "
                                      "changed since grooming?")
        return sources, poses
    except (ShapeAtlasError, OSError, KeyError) as exc:
        log.info("the groomed meshes, not the original files, which are not at hand (%s)", exc)
        return None


#: Largest source or groomed mesh file that `fit` hashes or reads back through a manifest.
MAX_SOURCE_BYTES = 2 * 1024**3


def check_source(path: str | Path) -> Path:
    """`path` if it can be a training shape's original file: a mesh file (by extension) that
    is a regular file of at most `MAX_SOURCE_BYTES` (never a device or FIFO, which could hang
    a read); else `ShapeAtlasError`. A manifest's `source` may point anywhere, so it is checked
    before it is opened."""

    path = Path(path)
    if not is_mesh_file(path):
        raise ShapeAtlasError(f"{path}: not a mesh file")
    regular_file(path, max_bytes=MAX_SOURCE_BYTES)
    return path


def file_sha256(path: str | Path, *, max_bytes: int = MAX_SOURCE_BYTES) -> str:
    """Hex SHA-256 of a training source file (`data.cache.file_digest`, at most `max_bytes`)."""
    return file_digest(path, max_bytes=max_bytes)


def write_training_poses(run_dir: Path, groomed_dir: Path, manifest: dict) -> None:
    """RUN_DIR/training_poses.json: for each training shape, the SHA-256 of its source file with
    the groomed pose (source frame -> aligned frame), and of its groomed file with the identity
    (groomed files are in the aligned frame). `correspond` then gives a training file the pose
    it was fitted in instead of aligning it afresh. A source that is gone, unreadable or no
    regular mesh file (`check_source`) is left out, with a log line."""
    poses = {}
    for s in manifest["shapes"]:
        for path, pose in ((Path(s["source"]), s["transform"]),
                           (groomed_dir / s["output"], np.eye(4).tolist())):
            try:
                poses.setdefault(file_sha256(check_source(path)),
                                 {"name": s["name"], "file": str(path), "transform": pose})
            except (OSError, ShapeAtlasError) as exc:
                log.info("%s, so correspond will align it afresh", exc)
    write_text_atomic(run_dir / TRAINING_POSES_NAME, json.dumps(
        {"format": TRAINING_POSES_FORMAT, "version": 1, "poses": poses}, indent=1) + "\n")


#: Largest `training_poses.json` read back (about 300 bytes per training file).
MAX_POSES_BYTES = 64 * 1024 * 1024


def read_training_poses(run_dir: str | Path) -> dict[str, np.ndarray]:
    """SHA-256 -> (4, 4) pose of the fit's own files (empty for a run written before them);
    `ShapeAtlasError` naming the file and the field for a file that is not one."""

    path = Path(run_dir) / TRAINING_POSES_NAME
    if not path.exists():
        return {}
    d = validate.mapping(validate.read_json(path, max_bytes=MAX_POSES_BYTES), path)
    if d.get("format") != TRAINING_POSES_FORMAT:
        raise ShapeAtlasError(f"{path}: not a training-poses file written by 'shapeatlas fit' "
                              f"(format {validate.shown(d.get('format'))})")
    poses = validate.mapping(d.get("poses"), path, "poses")
    out = {}
    for key, entry in poses.items():
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise validate.field_error(path, "poses", f"must be keyed by SHA-256 hex digests, "
                                       f"got {validate.shown(key)}")
        entry = validate.mapping(entry, path, f"poses.{key[:12]}")
        out[key] = validate.matrix(entry, "transform", (4, 4), path, prefix=f"poses.{key[:12]}.")
    return out


def run_is_complete(run_dir: str | Path) -> bool:
    """Whether a run folder holds a finished fit (its model and fit_metrics.json)."""
    run_dir = Path(run_dir)
    return (run_dir / "model.json").is_file() and (run_dir / "fit_metrics.json").is_file()
