"""Run folders: the library functions behind `shapeatlas fit` and `shapeatlas correspond`.

A run folder holds `config.json` (full, reloadable with `--config`), `model.safetensors` +
`model.json` (the model of either method, with its shape generator and the training shapes'
normalised shapes; no pickle), `atlas.ply`, `train_log.csv` and `checkpoint.pt` (R-ASM, for
`--resume`), `fit_metrics.json`, `training_poses.json` (the SHA-256 of every training file, raw
and groomed, with the pose `fit` used for it) and `groomed/` when `fit` had to groom raw meshes
itself.
`load_model` reads either method's folder; `sample` and `evaluate` live in `shapeatlas.virtual`
and `shapeatlas.evaluate`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from shapeatlas import validate
from shapeatlas.atomic import write_npz_atomic, write_text_atomic
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh.core import Mesh
from shapeatlas.mesh.groom import (
    MANIFEST_NAME,
    GroomOptions,
    find_mesh_files,
    groom_cohort,
    load_groomed,
    load_manifest,
)
from shapeatlas.mesh.io import is_mesh_file, read_mesh, write_mesh
from shapeatlas.mesh.projection import ProjectionReport
from shapeatlas.mesh.units import size_outliers
from shapeatlas.mesh.validity import mesh_validity
from shapeatlas.metrics.correspondence import (
    nearest_point_baseline_error,
    paired_atlas_error,
)
from shapeatlas.metrics.surface import mesh_surface_distances, point_to_surface_distance
from shapeatlas.models.atlas import MODEL_FORMAT as RASM_FORMAT
from shapeatlas.models.atlas import AtlasModel, Correspondence
from shapeatlas.models.cpd_pca import MODEL_FORMAT as CPD_FORMAT
from shapeatlas.models.cpd_pca import CPDPCAModel
from shapeatlas.models.generative import latent_sizes
from shapeatlas.models.inputs import refine_pose_on_atlas
from shapeatlas.models.multi_atlas import MODEL_FORMAT as MULTI_FORMAT
from shapeatlas.models.multi_atlas import MultiAtlasModel
from shapeatlas.models.persistence import read_model_meta
from shapeatlas.outputs import (
    adopt,
    check_output,
    output_names,
    staged_output,
    staging_dir,
)
from shapeatlas.training.config import FitConfig, MatchConfig
from shapeatlas.validate import regular_file

log = logging.getLogger(__name__)

#: In a run folder: the fit's pose of each training file, keyed by the file's SHA-256.
TRAINING_POSES_NAME = "training_poses.json"
TRAINING_POSES_FORMAT = "shapeatlas-training-poses"


def load_cohort(data_dir: str | Path, run_dir: Path, cfg: FitConfig,
                progress: Callable | None = None) -> tuple[list[Mesh], dict]:
    """Meshes of a groomed folder, or groom a raw folder (recorded in RUN_DIR/groomed)."""
    data_dir = Path(data_dir)
    if (data_dir / MANIFEST_NAME).is_file():
        meshes, manifest = load_groomed(data_dir)
        check_cohort_sizes(meshes, data_dir / MANIFEST_NAME, keep=cfg.grooming.keep_outliers)
        write_training_poses(run_dir, data_dir, manifest)
        return meshes, {"groomed_by_fit": False, "data": str(data_dir.resolve())}
    if not data_dir.is_dir():
        raise ShapeAtlasError(f"{data_dir}: not a folder")
    out = run_dir / "groomed"
    opts = GroomOptions(target_vertices=cfg.grooming.target_vertices, watertight="auto",
                        consensus_rounds=cfg.grooming.consensus_rounds,
                        cap_twist=cfg.grooming.cap_twist, keep_outliers=cfg.grooming.keep_outliers)
    log.info("%s has no %s: grooming it into %s", data_dir, MANIFEST_NAME, out)
    # (inside the run's own staging folder: a resumed fit grooms again, the same)
    result = groom_cohort(data_dir, out, opts, progress=progress, overwrite=True)
    meshes, manifest = load_groomed(out)
    write_training_poses(run_dir, out, manifest)
    return meshes, {"groomed_by_fit": True, "data": str(data_dir.resolve()),
                    "groom_options": result.manifest["options"], "failed": result.failed}


def check_cohort_sizes(meshes: Sequence[Mesh], source: Path, *, keep: bool) -> None:
    """Refuse a groomed cohort with shapes far from its median size (`units.size_outliers`:
    most likely saved in another unit), unless `keep` (then a warning)."""

    outliers = size_outliers(meshes, names=[Path(m.name).name for m in meshes])
    if not outliers:
        return
    what = "; ".join(o.message for o in outliers[:3]) + (
        f"; and {len(outliers) - 3} more" if len(outliers) > 3 else "")
    if keep:
        log.warning("%s: %s (kept: groom_keep_outliers)", source, what)
        return
    raise ShapeAtlasError(f"{source}: {what} (regroom it in the right units, or fit with "
                          "--keep-outliers to use it as it is)")


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
    """Hex SHA-256 of a regular file's bytes (`ShapeAtlasError` for anything else, or a file
    larger than `max_bytes`; at most that many bytes are read)."""

    regular_file(path, max_bytes=max_bytes)
    h = hashlib.sha256()
    left = max_bytes
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(min(1 << 20, left + 1)), b""):
            left -= len(block)
            if left < 0:
                raise ShapeAtlasError(f"{path}: more than the {max_bytes:,} bytes expected")
            h.update(block)
    return h.hexdigest()


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


def _resumable(run_dir: Path) -> bool:
    """Whether an unfinished run folder holds checkpoints worth keeping for --resume."""
    return (run_dir / "checkpoint.pt").is_file() or (run_dir / "shared").is_dir()


def fit_run(data_dir: str | Path, run_dir: str | Path, cfg: FitConfig, *, resume: bool = False,
            overwrite: bool = False, progress: Callable[[dict], None] | None = None,
            groom_progress: Callable | None = None
            ) -> AtlasModel | CPDPCAModel | MultiAtlasModel:
    """Fit the configured method (`cfg.method`) on a folder and write the whole run folder.

    The run is built in `outputs.work_dir(run_dir)` (RUN_DIR.partial/new), checkpointed there,
    and moved to `run_dir` when finished; a run that was stopped keeps its checkpoints there,
    and `resume=True` continues it. resume on a finished run returns its model.
    overwrite: replace a non-empty `run_dir` whole (else refused before any work).
    """

    target = Path(run_dir)
    if resume and not staging_dir(target).exists():
        if run_is_complete(target):
            log.info("%s is complete: nothing to resume", target)
            return load_model(target, device=cfg.device)
        if (target / "config.json").is_file():
            adopt(target, verb="fit")  # a run stopped in place, by an older shapeatlas
    with staged_output(target, verb="fit", overwrite=overwrite, inputs=[data_dir],
                       device=cfg.device, resume=resume, resumable=_resumable) as staging:
        model = _fit_in(data_dir, staging.path, cfg, resume=resume, progress=progress,
                        groom_progress=groom_progress)
        staging.record(device=str(model.device_))
    return model


def _fit_in(data_dir: str | Path, run_dir: Path, cfg: FitConfig, *, resume: bool,
            progress: Callable[[dict], None] | None,
            groom_progress: Callable | None) -> AtlasModel | CPDPCAModel | MultiAtlasModel:
    """`fit_run`'s work, in the staging folder `run_dir`."""
    cfg_path = run_dir / "config.json"
    if resume:
        if not cfg_path.is_file():
            raise ShapeAtlasError(f"{run_dir}: nothing to resume (no config.json)")
        saved = FitConfig.from_json(cfg_path)
        if saved.replace(device=cfg.device) != cfg.replace(device=saved.device):
            log.warning("--resume uses the run's saved configuration; other options are ignored")
        cfg = saved.replace(device=cfg.device)
    write_text_atomic(cfg_path, cfg.to_json())
    meshes, data_info = load_cohort(data_dir, run_dir, cfg, groom_progress)
    model_cls = (CPDPCAModel if cfg.method == "cpd-pca"
                 else AtlasModel if cfg.clustering.atlases == 1 else MultiAtlasModel)
    groomed_dir = run_dir / "groomed" if data_info["groomed_by_fit"] else Path(data_dir)
    extra = ({"sources": training_sources(groomed_dir, meshes)}
             if cfg.single_atlas_rasm and cfg.model.ssm_modes else {})
    model = model_cls(cfg).fit(meshes, run_dir=run_dir, resume=resume, progress=progress,
                               **extra)
    model.save(run_dir)
    rows = model.history_
    epoch_rate = [r["shapes_per_second"] for r in rows] if rows else []
    gen = model.generator_
    metrics = {
        "method": cfg.method,
        "n_shapes": len(meshes),
        "atlas_vertices": int(len(model.atlas_vertices_)),
        "atlas_init": model.atlas_init_name_,
        "fit_seconds": model.fit_seconds_,
        "correspondence_seconds": model.rasm_seconds_,
        "point_model": getattr(model, "point_model_report_", None),
        "generator_seconds": model.generator_seconds_,
        "generator": {"kind": gen.kind, **latent_sizes(gen)},
        "epochs_run": len(rows),
        "shapes_per_second_per_epoch": float(np.mean(epoch_rate)) if epoch_rate else None,
        "chamfer_mm_mean": float(np.mean([c for _, c, _ in model.fit_matching_])),
        "hausdorff_mm_mean": float(np.mean([h for _, _, h in model.fit_matching_])),
        "per_shape": {Path(n).stem: {"chamfer_mm": c, "hausdorff_mm": h}
                      for n, c, h in model.fit_matching_},
        "data": data_info,
        "device": str(model.device_),
    }
    if isinstance(model, MultiAtlasModel):
        names = [Path(m.name).stem for m in meshes]
        metrics["atlases"] = {
            "n_atlases": model.n_atlases_, "weights": model.weights_.tolist(),
            "selection": model.selection_, "cluster_seconds": model.cluster_seconds_,
            "shared_network_seconds": model.shared_seconds_,
            "labels": {nm: int(c) for nm, c in zip(names, model.labels_)},
            "memberships": {nm: [round(float(x), 4) for x in r]
                            for nm, r in zip(names, model.memberships_)}}
    write_text_atomic(run_dir / "fit_metrics.json", json.dumps(metrics, indent=1) + "\n")
    return model


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
    model = load_model(run_dir, device=device)
    if not point_model and getattr(model, "point_model_", None) is not None:
        model.point_model_ = None
    check_match(model, match, run_dir)
    poses = {} if realign else read_training_poses(run_dir)
    with staged_output(out_dir, verb="correspond", overwrite=overwrite, inputs=inputs,
                       device=str(getattr(model, "device_", "cpu"))) as staging:
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


def consecutive_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """(shape i, shape i+1) for every i, wrapping around: each shape is a source once."""
    return list(zip(names, names[1:] + names[:1]))


def atlas_pair_errors(points: dict, truth: dict, names: Sequence[str]) -> list[np.ndarray]:
    """Ground-truth error of atlas correspondences on consecutive pairs of a synthetic cohort.

    points: NAME -> (K, 3) atlas points in that file's frame; truth: from `load_truth`.
    -> per pair, (K,) distances in mm (see `metrics.correspondence.paired_atlas_error`).
    """

    return [paired_atlas_error(points[a], points[b], a_vertices=truth[a].vertices_file,
                               a_faces=truth[a].faces, a_domain=truth[a].domain,
                               b_vertices=truth[b].vertices_file, b_faces=truth[b].faces,
                               b_domain=truth[b].domain)
            for a, b in consecutive_pairs(names)]


def surface_matching(meshes: Sequence, corr: Sequence, atlas_faces: np.ndarray) -> dict:
    """Mean surface Chamfer and Hausdorff (mm) between each input mesh and its matched shape
    (the atlas faces on its correspondence points), vertex-to-triangle both ways and
    area-weighted (`metrics.surface.mesh_surface_distances`). `Correspondence.chamfer_mm` and
    `hausdorff_mm` are vertex-to-vertex, like the paper's: a point inside a large flat triangle
    of the input (a QSlim-decimated LV cap has no vertex inside its rim) is as far from every
    vertex as the triangle is wide, though it lies on the surface. -> {"surface_chamfer_mm",
    "surface_hausdorff_mm"}"""

    d = [mesh_surface_distances(m, (c.points, atlas_faces)) for m, c in zip(meshes, corr)]
    return {"surface_chamfer_mm": float(np.mean([x.chamfer for x in d])),
            "surface_hausdorff_mm": float(np.mean([x.hausdorff for x in d]))}


def baseline_pair_errors(transforms: dict, truth: dict, names: Sequence[str]) -> list[np.ndarray]:
    """The same pairs for "rigid alignment (transforms: file -> aligned), then nearest point".

    -> per pair, (V_A,) distances in mm, one per vertex of the source shape.
    """

    out = []
    for a, b in consecutive_pairs(names):
        ta, tb, fa, fb = truth[a], truth[b], transforms[a], transforms[b]
        xa, xb = ta.vertices_file, tb.vertices_file
        out.append(nearest_point_baseline_error(
            a_aligned=xa @ fa[:3, :3].T + fa[:3, 3], b_aligned=xb @ fb[:3, :3].T + fb[:3, 3],
            b_faces=tb.faces, b_vertices=xb, a_domain=ta.domain, b_domain=tb.domain,
            b_to_file=np.linalg.inv(fb)))
    return out
