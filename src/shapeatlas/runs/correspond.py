"""`shapeatlas correspond`: every mesh matched onto a fitted run's atlas, written as a surface
in atlas topology (`.ply`) and the correspondence record (`.npz`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from shapeatlas.atomic import write_npz_atomic
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.io import read_mesh, write_mesh
from shapeatlas.mesh.projection import ProjectionReport
from shapeatlas.mesh.validity import mesh_validity
from shapeatlas.models.atlas import Correspondence
from shapeatlas.models.inputs import refine_pose_on_atlas
from shapeatlas.models.multi_atlas import MultiAtlasModel
from shapeatlas.outputs import check_output, staged_output
from shapeatlas.runs.folder import file_sha256, read_training_poses
from shapeatlas.runs.load import collect_mesh_paths, model_device, open_run
from shapeatlas.training.config import MatchConfig

log = logging.getLogger(__name__)


def write_correspondence(c: Correspondence, faces: np.ndarray, out_dir: Path, name: str, *,
                         surface: np.ndarray | None = None,
                         projection: ProjectionReport | None = None):
    """DIR/NAME.ply and DIR/NAME.npz of one correspondence, written even when the mesh check
    fails. -> the `Validity` of the written surface

    NAME.ply is the matched surface in atlas topology, in the input's frame: `surface` (K, 3)
    when given (the points projected onto a valid mesh, `projection` saying what moved), else
    the points themselves. NAME.npz holds the correspondence (`points`, `confidence`,
    `atlas_vertex`, `transform`, distances), `surface_points` (the .ply's vertices), the mesh
    check of that surface (`valid`, `problems`, `self_intersecting_faces`) and, with a
    projection, `projected_vertices` and `projection_max_move_mm`."""
    surface = c.points if surface is None else np.asarray(surface, dtype=np.float64)
    ok = mesh_validity(surface, faces)
    write_mesh(Mesh(surface, faces, name=name), out_dir / f"{name}.ply",
               point_data={"confidence": c.confidence.astype(np.float32)})
    write_npz_atomic(out_dir / f"{name}.npz", {
        "points": c.points, "surface_points": surface, "confidence": c.confidence,
        "atlas_vertex": c.atlas_vertex,
        "transform": c.transform, "chamfer_mm": np.float64(c.chamfer_mm),
        "hausdorff_mm": np.float64(c.hausdorff_mm), "valid": np.bool_(ok.valid),
        "problems": np.asarray(ok.problems, dtype=str),
        "self_intersecting_faces": np.int64(ok.n_self_intersecting),
        **({} if projection is None else {
            "projected_vertices": np.int64(projection.changed),
            "projection_max_move_mm": np.float64(projection.max_move_mm)}),
        **({} if c.atlas is None else {"atlas": np.int64(c.atlas),
                                       "memberships": np.asarray(c.memberships)})})
    return ok


def matched_surface(model, c: Correspondence) -> tuple[np.ndarray, ProjectionReport]:
    """The matched points of `c` projected onto a valid mesh (in the model's frame, against
    the atlas of `c`), back in the input's frame. -> ((K, 3), the projection's report)"""
    cluster = None if c.atlas is None else np.array([c.atlas])
    aligned = c.aligned_points
    projected, (report,) = model.project_shapes(aligned[None], cluster)
    inv = np.linalg.inv(c.transform)
    moved = np.any(projected[0] != aligned, axis=1, keepdims=True)  # the rest: bit for bit
    return np.where(moved, projected[0] @ inv[:3, :3].T + inv[:3, 3], c.points), report


def correspond_files(run_dir: str | Path, items: Sequence[str | Path], out_dir: str | Path, *,
                     refine: bool = True, device: str = "auto",
                     match: MatchConfig | None = None, realign: bool = False,
                     point_model: bool = True, overwrite: bool = False,
                     progress: Callable[[int], None] | None = None) -> tuple[list[dict], list[str]]:
    """Correspond every mesh to a fitted run; returns per-file summaries and error lines.

    out_dir must be new or empty unless `overwrite` (then it is replaced whole); it is built
    beside it and moved into place at the end (`shapeatlas.outputs`). Two inputs of the same
    stem are refused, naming both.

    A file the run was fitted on (same bytes as a raw or groomed training file, see
    `write_training_poses`) starts from its pose in the fit and takes only a local rigid ICP onto
    the atlas, then its turn about its flat cap where the model keeps one
    (`refine_pose_on_atlas`; a multi-atlas run keeps the fit's pose); other files are
    aligned to the atlas from scratch, by the multi-start search, then refined the same way
    (`inputs.new_shape_pose`). realign: treat every file as new.

    match: how to match (`MatchConfig`; None: the run's own `config.matching`; R-ASM runs).
    point_model: False matches without the run's point-distribution model (`ssm_modes`)."""

    paths = collect_mesh_paths(items)
    inputs = [run_dir, *items, *paths]
    check_output(out_dir, overwrite=overwrite, inputs=inputs)
    model = open_run(run_dir, device=device, match=match)
    if not point_model and getattr(model, "point_model_", None) is not None:
        model.point_model_ = None
    poses = {} if realign else read_training_poses(run_dir)
    with staged_output(out_dir, verb="correspond", overwrite=overwrite, inputs=inputs,
                       device=model_device(model)) as staging:
        return _correspond_into(model, paths, staging.path, poses, refine, match, progress)


def _correspond_into(model, paths: Sequence[Path], out_dir: Path, poses: dict, refine: bool,
                     match: MatchConfig | None, progress: Callable[[int], None] | None
                     ) -> tuple[list[dict], list[str]]:
    """`correspond_files`' work: each file matched and written into `out_dir`."""
    done, errors = [], []
    for path in paths:
        try:
            mesh = read_mesh(path)
            pose = poses.get(file_sha256(path)) if poses else None
            t0 = time.perf_counter()
            how = "aligned" if pose is None else "fit"
            if pose is not None and not isinstance(model, MultiAtlasModel):
                # (a multi-atlas run keeps it: its shapes belong to different atlases)
                pose = refine_pose_on_atlas(mesh, model.atlas_mesh, pose,
                                            cap=getattr(model, "cap_reference_", None))
                how = "fit, refined on the atlas"
            c = model.correspond([mesh], refine=refine, transforms=None if pose is None else [pose],
                                 match=match)[0]
            dt = time.perf_counter() - t0
            surface, report = matched_surface(model, c)
            ok = write_correspondence(c, model.atlas_faces_, out_dir, path.stem,
                                      surface=surface, projection=report)
            done.append({"name": path.stem, "seconds": dt, "pose": how,
                         "valid": ok.valid, "problems": ok.problems,
                         "chamfer_mm": c.chamfer_mm,
                         "hausdorff_mm": c.hausdorff_mm,
                         "mean_confidence": float(c.confidence.mean()),
                         "projection": report.as_dict(),
                         **({} if c.atlas is None else {
                             "atlas": c.atlas, "memberships": c.memberships.tolist()})})
        except ShapeAtlasError as exc:
            errors.append(str(exc))
        if progress:
            progress(1)
    return done, errors
