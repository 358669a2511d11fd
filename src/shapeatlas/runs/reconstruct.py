"""`shapeatlas reconstruct`: meshes passed through a fitted model (correspond, encode,
decode), written in each input's own frame."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from shapeatlas.atomic import write_text_atomic
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh.io import read_mesh, write_mesh
from shapeatlas.mesh.validity import mesh_validity
from shapeatlas.metrics.ssm import symmetric_surface_distance
from shapeatlas.outputs import check_output, staged_output
from shapeatlas.runs.load import collect_mesh_paths, model_device, open_run
from shapeatlas.training.config import MatchConfig

log = logging.getLogger(__name__)


def reconstruct_files(run_dir: str | Path, paths: Sequence[str | Path], out_dir: str | Path, *,
                      n_components: int | None = None, device: str = "auto",
                      match: MatchConfig | None = None, overwrite: bool = False,
                      progress: Callable[[int], None] | None = None
                      ) -> tuple[list[dict], list[str]]:
    """Each mesh (paths: mesh files or folders of them) through the model (correspond, encode,
    decode), written as OUT/NAME.ply in the input's own frame, and OUT/reconstruct.json;
    returns per-file summaries (each with the mesh check: `valid`, `problems`, `validity`; a
    failing shape is still written) and error lines.

    out_dir must be new or empty unless `overwrite` (then it is replaced whole); it is built
    beside it and moved into place at the end (`shapeatlas.outputs`). Two inputs of the same
    stem are refused, naming both. match: how to correspond (`MatchConfig`; None: the run's
    own; R-ASM runs). progress(1) after each file."""

    items = [Path(p) for p in paths]
    paths = collect_mesh_paths(items)  # names checked there (`output_names`)
    inputs = [run_dir, *items, *paths]
    check_output(out_dir, overwrite=overwrite, inputs=inputs)
    model = open_run(run_dir, device=device, match=match, generator=True)
    with staged_output(out_dir, verb="reconstruct", overwrite=overwrite, inputs=inputs,
                       device=model_device(model)) as staging:
        return _reconstruct_into(model, paths, staging.path, n_components, match, progress)


def _reconstruct_into(model, paths: Sequence[Path], out_dir: Path, n_components: int | None,
                      match: MatchConfig | None, progress: Callable[[int], None] | None
                      ) -> tuple[list[dict], list[str]]:
    """`reconstruct_files`' work, in the staging folder `out_dir`."""
    done, errors = [], []
    for path in paths:
        try:
            mesh = read_mesh(path)
            rec = model.reconstruct([mesh], n_components=n_components, match=match)[0]
            write_mesh(rec, out_dir / f"{path.stem}.ply")
            err = symmetric_surface_distance(np.asarray(rec.vertices), np.asarray(rec.faces),
                                             np.asarray(mesh.vertices), np.asarray(mesh.faces))
            ok = mesh_validity(rec.vertices, rec.faces)
            done.append({"name": path.stem, "file": f"{path.stem}.ply",
                         "surface_distance_mm": err, "valid": ok.valid,
                         "problems": ok.problems, "validity": ok.as_dict()})
        except ShapeAtlasError as exc:
            errors.append(str(exc))
        if progress:
            progress(1)
    write_text_atomic(out_dir / "reconstruct.json", json.dumps(
        {"format": "shapeatlas-reconstruct", "shapes": done, "skipped": errors}, indent=1) + "\n")
    return done, errors
