"""Loading a fitted run (`load_model`, exported as `shapeatlas.load_run`), checking matching
settings against it, and collecting the mesh files a verb is given."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh.groom import find_mesh_files
from shapeatlas.mesh.io import is_mesh_file
from shapeatlas.models.atlas import MODEL_FORMAT as RASM_FORMAT
from shapeatlas.models.atlas import AtlasModel
from shapeatlas.models.cpd_pca import MODEL_FORMAT as CPD_FORMAT
from shapeatlas.models.cpd_pca import CPDPCAModel
from shapeatlas.models.multi_atlas import MODEL_FORMAT as MULTI_FORMAT
from shapeatlas.models.multi_atlas import MultiAtlasModel
from shapeatlas.models.persistence import read_model_meta
from shapeatlas.outputs import output_names
from shapeatlas.training.config import MatchConfig

log = logging.getLogger(__name__)


def load_model(run_dir: str | Path, *, device: str = "auto"
               ) -> AtlasModel | CPDPCAModel | MultiAtlasModel:
    """The model of a run folder, whichever method wrote it (safetensors + JSON, no pickle)."""
    meta = read_model_meta(run_dir)
    if meta.get("format") == CPD_FORMAT:
        return CPDPCAModel.from_saved(meta, run_dir)
    if meta.get("format") == RASM_FORMAT:
        return AtlasModel.from_saved(meta, run_dir, device=device)
    if meta.get("format") == MULTI_FORMAT:
        return MultiAtlasModel.from_saved(meta, run_dir, device=device)
    raise ShapeAtlasError(f"{Path(run_dir) / 'model.json'}: unknown model format "
                          f"{meta.get('format')!r}")


def check_match(model, match: MatchConfig | None, run_dir: str | Path) -> None:
    """Refuse, before any file is read, matching settings that the run cannot use."""
    if match is None:
        return
    if isinstance(model, CPDPCAModel):
        raise ShapeAtlasError(f"{run_dir}: matching settings need an R-ASM run, not CPD-PCA "
                              "(its registration is set by the fit's config.cpd)")
    try:
        model.match_config(match)
    except ShapeAtlasError as exc:
        raise ShapeAtlasError(f"{run_dir}: {exc}") from None


def open_run(run_dir: str | Path, *, device: str = "auto", match: MatchConfig | None = None,
             generator: bool = False) -> AtlasModel | CPDPCAModel | MultiAtlasModel:
    """The model a verb works with, checked before any input is read: that it has a shape
    generator (`generator`) and can use the matching settings `match` (`check_match`)."""
    model = load_model(run_dir, device=device)
    if generator:
        model._check_generator()
    check_match(model, match, run_dir)
    return model


def model_device(model) -> str:
    """The device a loaded model runs on, as the run's provenance records it."""
    return str(getattr(model, "device_", "cpu"))


def collect_mesh_paths(items: Sequence[str | Path]) -> list[Path]:
    """Expand folders into their mesh files; keep files as given. Two files of the same stem
    are refused, naming both: their outputs (NAME.ply, NAME.npz) would overwrite each other."""
    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            paths += find_mesh_files(p)
        elif p.exists() and not is_mesh_file(p):
            raise ShapeAtlasError(f"{p}: not a mesh file (.obj .ply .stl .off .vtk .vtp)")
        else:
            paths.append(p)
    if not paths:
        raise ShapeAtlasError("no mesh files to correspond")

    output_names(paths)
    return paths
