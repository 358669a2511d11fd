"""Model folders on disk, for every method: `model.safetensors` (tensors) + `model.json` (format,
version, config, ...) + `atlas.ply`. Nothing is ever unpickled.

The models build their own tensors and metadata; this module owns the files, their checks and
the error messages, so `AtlasModel`, `CPDPCAModel` and `pipeline.load_model` read and write them
one way.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from shapeatlas import __version__
from shapeatlas.atomic import atomic_path, write_text_atomic
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.io import write_mesh

META_NAME = "model.json"
WEIGHTS_NAME = "model.safetensors"


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
    """The parsed `model.json` of a model folder; a clear error when it is not one."""
    path = Path(path)
    meta_path = path / META_NAME
    if not meta_path.is_file() or not (path / WEIGHTS_NAME).is_file():
        raise ShapeAtlasError(f"{path}: not a shapeatlas model folder (needs {META_NAME} and "
                              f"{WEIGHTS_NAME})")
    try:
        return json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ShapeAtlasError(f"{meta_path}: not valid JSON ({exc})") from None


def read_model_meta_of(path: str | Path, fmt: str, what: str) -> dict:
    """`read_model_meta`, refusing a folder of another model kind (`what`: for the message)."""
    meta = read_model_meta(path)
    if meta.get("format") != fmt:
        raise ShapeAtlasError(f"{Path(path) / META_NAME}: not a shapeatlas {what} "
                              f"(format {meta.get('format')!r})")
    return meta


def check_model_version(meta: dict, *, version: int, source: str) -> None:
    """Refuse a model written by a newer shapeatlas."""
    if meta.get("version", 0) > version:
        raise ShapeAtlasError(f"{source}: written by a newer shapeatlas "
                              f"({meta.get('shapeatlas')}); upgrade to load it")


def read_model_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a model folder (safetensors: no code is executed)."""
    from safetensors.torch import load_file

    weights = Path(path) / WEIGHTS_NAME
    try:
        return load_file(str(weights))
    except Exception as exc:
        raise ShapeAtlasError(f"{weights}: unreadable weights ({exc})") from None
