"""Model folders on disk, for every method: `model.safetensors` (tensors) + `model.json` (format,
version, config, ...) + `atlas.ply`. Nothing is ever unpickled.

The models build their own tensors and metadata; this module owns the files, their checks and
the error messages, so `AtlasModel`, `CPDPCAModel` and `runs.load.load_model` read and write them
one way.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from shapeatlas import __version__, validate
from shapeatlas.atomic import atomic_path, write_text_atomic
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh.cap import CapReference
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.io import write_mesh
from shapeatlas.models.inputs import Normalisation
from shapeatlas.models.point_model import PointModel
from shapeatlas.training.config import FitConfig
from shapeatlas.validate import shown

META_NAME = "model.json"
WEIGHTS_NAME = "model.safetensors"
#: Largest `model.json` read back (a few kB in practice).
MAX_META_BYTES = 16 * 1024 * 1024
#: Largest `model.safetensors` read back (tens of MB in practice).
MAX_WEIGHTS_BYTES = 64 * 1024**3


def write_model_folder(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict, *,
                       atlas: Mesh) -> Path:
    """Write the tensors, `meta` (with `shapeatlas` = this version added) and the atlas mesh."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with atomic_path(path / WEIGHTS_NAME) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    write_text_atomic(path / META_NAME,
                      json.dumps({**meta, "shapeatlas": __version__}, indent=1) + "\n")
    write_mesh(atlas, path / "atlas.ply")
    return path


def read_model_meta(path: str | Path) -> dict:
    """The parsed `model.json` of a model folder (a JSON object with a string `format`); a clear
    error when it is not one."""
    path = Path(path)
    meta_path = path / META_NAME
    if not meta_path.is_file() or not (path / WEIGHTS_NAME).is_file():
        raise ShapeAtlasError(f"{path}: not a shapeatlas model folder (needs {META_NAME} and "
                              f"{WEIGHTS_NAME})")
    meta = validate.mapping(validate.read_json(meta_path, max_bytes=MAX_META_BYTES), meta_path)
    validate.get(meta, "format", validate.Str(200), meta_path)
    return meta


def read_model_meta_of(path: str | Path, fmt: str, what: str) -> dict:
    """`read_model_meta`, refusing a folder of another model kind (`what`: for the message)."""
    meta = read_model_meta(path)
    if meta.get("format") != fmt:
        raise ShapeAtlasError(f"{Path(path) / META_NAME}: not a shapeatlas {what} "
                              f"(format {meta.get('format')!r})")
    return meta


def check_model_version(meta: dict, *, version: int, source: str) -> None:
    """Refuse a model written by a newer shapeatlas (or with a `version` that is no number)."""
    found = validate.get(meta, "version", validate.Int(0, 10**6), source, default=0)
    if found > version:
        raise ShapeAtlasError(f"{source}: written by a newer shapeatlas "
                              f"({shown(meta.get('shapeatlas'))}); upgrade to load it")


def read_model_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a model folder (safetensors: no code is executed)."""
    from safetensors.torch import load_file

    weights = Path(path) / WEIGHTS_NAME
    validate.regular_file(weights, max_bytes=MAX_WEIGHTS_BYTES)
    try:
        return load_file(str(weights))
    except Exception as exc:
        raise ShapeAtlasError(f"{weights}: unreadable weights ({str(exc).splitlines()[0]})"
                              ) from None


def config_of(meta: dict, source: str | Path) -> FitConfig:
    """The `config` field of a `model.json`, checked field by field."""

    if "config" not in meta:
        raise validate.field_error(source, "config", "is missing")
    return FitConfig.from_dict(meta["config"], source=str(source))


def atlas_of(tensors: dict[str, torch.Tensor], source: str | Path
             ) -> tuple[np.ndarray, np.ndarray]:
    """The atlas of a model file: vertices (K, 3) float64, finite, K >= 4, and faces (F, 3)
    int64 within [0, K)."""
    verts = validate.tensor(tensors, "atlas.vertices", source, shape=(None, 3))
    if not 4 <= len(verts) <= validate.MAX_VERTICES:
        raise ShapeAtlasError(f"{source}: tensor 'atlas.vertices' must hold 4 to "
                              f"{validate.MAX_VERTICES:,} vertices, got {len(verts):,}")
    return verts, validate.faces(tensors, "atlas.faces", len(verts), source)


def normalisation_of(meta: dict, source: str | Path):
    """The `normalisation` field of a `model.json` (centre, scale, optional matrix), checked."""

    d = validate.mapping(meta.get("normalisation"), source, "normalisation")
    validate.matrix(d, "center", (3,), source, prefix="normalisation.")
    validate.get(d, "scale", validate.Float(0.0, 1e9, lo_open=True), source,
                 prefix="normalisation.")
    validate.matrix(d, "matrix", (3, 3), source, prefix="normalisation.", optional=True)
    return Normalisation.from_dict(d, source=str(source))


def cap_of(tensors: dict[str, torch.Tensor], source: str | Path):
    """The cap outline of a model file (`cap.*` tensors), or None; checked."""

    caps = {k: torch.from_numpy(validate.tensor(tensors, k, source))
            for k in tensors if k.startswith("cap.")}
    return cap_from_tensors(caps, source=str(source))


def point_model_of(tensors: dict[str, torch.Tensor], n_vertices: int, source: str | Path):
    """The point-distribution model of a model file (`point_model.*`), or None; checked."""

    if not any(k.startswith("point_model.") for k in tensors):
        return None
    pm = PointModel(**{k: validate.tensor(tensors, f"point_model.{k}", source)
                       for k in ("mean", "modes", "sd")})
    pm.check(n_vertices, source=str(source))
    return pm


def cap_tensors(cap) -> dict[str, torch.Tensor]:
    """A model's cap outline (`mesh.cap.CapReference` or None) as `cap.*` tensors for its file."""
    if cap is None:
        return {}
    return {f"cap.{k}": torch.from_numpy(v) for k, v in cap.to_arrays().items()}


def cap_from_tensors(tensors: dict[str, torch.Tensor], *, source: str):
    """The cap outline a model file holds (`cap_tensors`), or None for a file without one
    (written before it existed, or by a fit on a cohort without caps)."""

    if not any(k.startswith("cap.") for k in tensors):
        return None
    return CapReference.from_arrays({k[4:]: v.numpy() for k, v in tensors.items()
                                     if k.startswith("cap.")}, source=source)
