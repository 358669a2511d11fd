"""`shapeatlas fit`: a run folder from a folder of meshes (groomed first when they are raw)."""

from __future__ import annotations

import json
import logging
import os
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import numpy as np

from shapeatlas.atomic import write_text_atomic
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.mesh.groom import (
    MANIFEST_NAME,
    GroomedMeshes,
    GroomOptions,
    groom_cohort,
    load_groomed,
)
from shapeatlas.mesh.units import size_outliers
from shapeatlas.models.atlas import AtlasModel
from shapeatlas.models.cpd_pca import CPDPCAModel
from shapeatlas.models.generative import latent_sizes
from shapeatlas.models.multi_atlas import MultiAtlasModel
from shapeatlas.outputs import adopt, staged_output, staging_dir
from shapeatlas.runs.folder import (
    run_is_complete,
    training_sources,
    write_training_poses,
)
from shapeatlas.runs.load import load_model
from shapeatlas.training.config import FitConfig
from shapeatlas.training.distributed import SINGLE, Dist, content_digest

log = logging.getLogger(__name__)


def load_cohort(data_dir: str | Path, run_dir: Path, cfg: FitConfig,
                progress: Callable | None = None, dist: Dist = SINGLE,
                cache: str | Path | bool | None = True) -> tuple[GroomedMeshes, dict]:
    """Meshes of a groomed folder, or groom a raw folder (recorded in RUN_DIR/groomed; by the
    main process, which alone writes, when there are several; through `cache`, as
    `groom_cohort`'s, so that a resumed fit reads its shapes back rather than grooming them
    again). The meshes are read from their files one at a time, when asked for."""
    data_dir = Path(data_dir)
    if (data_dir / MANIFEST_NAME).is_file():
        meshes, manifest = load_groomed(data_dir, lazy=True)
        check_cohort_sizes(meshes, data_dir / MANIFEST_NAME, keep=cfg.grooming.keep_outliers)
        if dist.is_main:
            write_training_poses(run_dir, data_dir, manifest)
        return meshes, {"groomed_by_fit": False, "data": str(data_dir.resolve())}
    if not data_dir.is_dir():
        raise ShapeAtlasError(f"{data_dir}: not a folder")
    out = run_dir / "groomed"

    def groom() -> dict:
        opts = GroomOptions(target_vertices=cfg.grooming.target_vertices, watertight="auto",
                            consensus_rounds=cfg.grooming.consensus_rounds,
                            cap_twist=cfg.grooming.cap_twist,
                            keep_outliers=cfg.grooming.keep_outliers)
        log.info("%s has no %s: grooming it into %s", data_dir, MANIFEST_NAME, out)
        # (inside the run's own staging folder: a resumed fit grooms again, the same, from
        # the cache)
        result = groom_cohort(data_dir, out, opts, progress=progress, overwrite=True,
                              cache=cache)
        write_training_poses(run_dir, out, result.manifest)
        return {"groom_options": result.manifest["options"], "failed": result.failed}

    groomed = dist.on_main(groom)
    meshes, _ = load_groomed(out, lazy=True)
    return meshes, {"groomed_by_fit": True, "data": str(data_dir.resolve()), **groomed}


def check_cohort_sizes(meshes: GroomedMeshes, source: Path, *, keep: bool) -> None:
    """Refuse a groomed cohort with shapes far from its median size (`units.size_outliers`:
    most likely saved in another unit), unless `keep` (then a warning)."""

    outliers = size_outliers(meshes, names=[Path(n).name for n in meshes.names])
    if not outliers:
        return
    what = "; ".join(o.message for o in outliers[:3]) + (
        f"; and {len(outliers) - 3} more" if len(outliers) > 3 else "")
    if keep:
        log.warning("%s: %s (kept: groom_keep_outliers)", source, what)
        return
    raise ShapeAtlasError(f"{source}: {what} (regroom it in the right units, or fit with "
                          "--keep-outliers to use it as it is)")


def _resumable(run_dir: Path) -> bool:
    """Whether an unfinished run folder holds checkpoints worth keeping for --resume."""
    return (run_dir / "checkpoint.pt").is_file() or (run_dir / "shared").is_dir()


def fit_run(data_dir: str | Path, run_dir: str | Path, cfg: FitConfig, *, resume: bool = False,
            overwrite: bool = False, progress: Callable[[dict], None] | None = None,
            groom_progress: Callable | None = None, dist: Dist = SINGLE,
            cache: str | Path | bool | None = True
            ) -> AtlasModel | CPDPCAModel | MultiAtlasModel:
    """Fit the configured method (`cfg.method`) on a folder and write the whole run folder.

    The run is built in `outputs.work_dir(run_dir)` (RUN_DIR.partial/new), checkpointed there,
    and moved to `run_dir` when finished; a run that was stopped keeps its checkpoints there,
    and `resume=True` continues it. resume on a finished run returns its model.
    overwrite: replace a non-empty `run_dir` whole (else refused before any work).
    progress: called with a dict as the fit goes, each with "stage", "step" and "steps" (done
    and total in that stage): "preparing" (the training shapes, read once and kept on disk
    for the fit), "correspondence" (R-ASM training steps, with round, rounds,
    epoch, epochs and loss), "matching" (the training shapes matched for the generator),
    "generator" (β-VAE epochs, with epoch, epochs and loss; with several atlases also atlas
    and atlases) and "registration" (CPD-PCA, with round and rounds).
    groom_progress: `(stage, increment, total)` of the grooming of a raw folder.
    dist: this process's place in a data-parallel fit under torchrun (`training.distributed`;
    every process calls `fit_run` with the same arguments): the main process alone writes the
    run folder; `fit_metrics.json` records the processes (`world_size`) and their devices.
    cache: where the grooming of a raw folder keeps each shape by content (`groom_cohort`'s
    `cache`: True, the default folder; a folder; False, none), so that `resume` reads the
    groomed shapes back instead of grooming them again.
    """

    target = Path(run_dir)
    if dist.active:
        dist.agree("the configuration", cfg.to_json())
        dist.agree("the run folder and options",
                   json.dumps([os.path.abspath(target), resume, overwrite]))
        problem = distributed_problem(cfg)
        if problem:
            raise ShapeAtlasError(problem)
    # The main process alone checks and stages the run folder (`staged_output`) and writes
    # into it; the other processes of a data-parallel fit work in the same staging folder.
    complete = dist.on_main(lambda: resume and not staging_dir(target).exists()
                            and run_is_complete(target))
    if complete:
        log.info("%s is complete: nothing to resume", target)
        return load_model(target, device=cfg.device)
    with ExitStack() as stack:
        staging = None

        def enter() -> str:
            nonlocal staging
            if resume and not staging_dir(target).exists() and (target / "config.json").is_file():
                adopt(target, verb="fit")  # a run stopped in place, by an older shapeatlas
            staging = stack.enter_context(staged_output(
                target, verb="fit", overwrite=overwrite, inputs=[data_dir], device=cfg.device,
                resume=resume, resumable=_resumable))
            return str(staging.path)

        path = Path(dist.on_main(enter))
        model = _fit_in(data_dir, path, cfg, resume=resume, progress=progress,
                        groom_progress=groom_progress, dist=dist, cache=cache)
        if staging is not None:
            staging.record(device=str(model.device_),
                           **({"world_size": dist.world_size} if dist.active else {}))
    dist.barrier()  # the run folder is in place for every process
    return model


def distributed_problem(cfg: FitConfig) -> str | None:
    """Why `cfg` cannot be fitted by several processes (None: it can)."""
    if not cfg.single_atlas_rasm:
        return ("several processes fit the single-atlas R-ASM model only (method 'rasm', "
                "clustering.atlases 1); fit this configuration in one process")
    if cfg.generator.mode == "joint":
        return ("generator.mode 'joint' trains in one process only: fit it without torchrun, "
                "or use generator.mode 'after'")
    return None


def _fit_in(data_dir: str | Path, run_dir: Path, cfg: FitConfig, *, resume: bool,
            progress: Callable[[dict], None] | None, groom_progress: Callable | None,
            dist: Dist = SINGLE, cache: str | Path | bool | None = True
            ) -> AtlasModel | CPDPCAModel | MultiAtlasModel:
    """`fit_run`'s work, in the staging folder `run_dir`."""
    cfg_path = run_dir / "config.json"
    if resume:
        def saved_config() -> str:
            if not cfg_path.is_file():
                raise ShapeAtlasError(f"{run_dir}: nothing to resume (no config.json)")
            return FitConfig.from_json(cfg_path).to_json()

        saved = FitConfig.from_dict(json.loads(dist.on_main(saved_config)), source=str(cfg_path))
        if saved.replace(device=cfg.device) != cfg.replace(device=saved.device):
            log.warning("--resume uses the run's saved configuration; other options are ignored")
        cfg = saved.replace(device=cfg.device)
    if dist.is_main:
        write_text_atomic(cfg_path, cfg.to_json())
    meshes, data_info = load_cohort(data_dir, run_dir, cfg, groom_progress, dist=dist,
                                    cache=cache)
    if dist.active:  # (a pass over every file: only where there are processes to compare)
        dist.agree("the training shapes (their names, vertices and faces)", content_digest(
            (m.name, (np.asarray(m.vertices), np.asarray(m.faces))) for m in meshes))
    model_cls = (CPDPCAModel if cfg.method == "cpd-pca"
                 else AtlasModel if cfg.clustering.atlases == 1 else MultiAtlasModel)
    groomed_dir = run_dir / "groomed" if data_info["groomed_by_fit"] else Path(data_dir)
    extra = ({"sources": training_sources(groomed_dir, meshes)}
             if cfg.single_atlas_rasm and cfg.model.ssm_modes else {})
    if dist.active:
        extra["dist"] = dist
    model = model_cls(cfg).fit(meshes, run_dir=run_dir, resume=resume, progress=progress,
                               **extra)
    devices = dist.gather(str(model.device_))
    if not dist.is_main:
        return model
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
        "world_size": dist.world_size,
        "devices": devices,
    }
    if isinstance(model, MultiAtlasModel):
        names = [Path(n).stem for n in meshes.names]
        metrics["atlases"] = {
            "n_atlases": model.n_atlases_, "weights": model.weights_.tolist(),
            "selection": model.selection_, "cluster_seconds": model.cluster_seconds_,
            "shared_network_seconds": model.shared_seconds_,
            "labels": {nm: int(c) for nm, c in zip(names, model.labels_)},
            "memberships": {nm: [round(float(x), 4) for x in r]
                            for nm, r in zip(names, model.memberships_)}}
    write_text_atomic(run_dir / "fit_metrics.json", json.dumps(metrics, indent=1) + "\n")
    return model
