"""The R-ASM training loop: rounds of epochs, checkpoints, exact resume, logs. No model maths here.

- Every `checkpoint_every` epochs, `RUN_DIR/checkpoint.pt` is written atomically: model and
  optimiser state, the current atlas, the epoch/round counters, early-stopping state and the log
  rows. `resume=True` continues from it exactly (the shuffling and VAE sampling of each epoch are
  seeded from (seed, round, epoch), so a resumed run replays the same sequence).
- A non-finite loss stops the run with `TrainingError` naming the shape(s) of the failing step;
  the last good checkpoint is left untouched.
- Per-epoch metrics go to `RUN_DIR/train_log.csv` and, if the `tensorboard` package is
  installed, to `RUN_DIR/tensorboard/`; each epoch also logs one INFO line ("round r/R, epoch
  e/E: loss ..."), and `progress` gets a dict after every step (stage "correspondence", round,
  rounds, epoch, epochs, step, steps, loss).
- `joint`: an optional second model trained in the same steps (the β-VAE when the generator
  is trained jointly with the correspondence network); it shares the optimiser and the
  checkpoint, its loss is added to the R-ASM loss, and its gradients are clipped on their own so
  they never shrink the correspondence network's steps.
- Data-parallel under torchrun (`dist`, `training.distributed`): the network is wrapped in
  PyTorch's DistributedDataParallel and each epoch's shapes are dealt out by its
  DistributedSampler, so each step's global batch of `training.batch_size` shapes is split
  over the processes and their gradients averaged; the epoch's losses, the non-finite checks
  and early stopping are agreed by all; only the main process writes files.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from shapeatlas.atomic import atomic_path, write_text_atomic
from shapeatlas.errors import ShapeAtlasError
from shapeatlas.nn.rasm import RASM, AtlasGraph, GraphInput, LossWeights, rasm_losses
from shapeatlas.training.config import FitConfig
from shapeatlas.training.distributed import SINGLE, Dist

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "train_log.csv"
CHECKPOINT_VERSION = 1
#: What every checkpoint holds (`save_checkpoint`).
CHECKPOINT_KEYS = frozenset({"model", "optimizer", "atlas_points", "state", "rows"})


class TrainingError(ShapeAtlasError):
    """Training cannot go on (e.g. a non-finite loss); the message names the shapes involved."""


@dataclass
class TrainState:
    """What a checkpoint restores, besides the model and optimiser."""

    round: int = 0
    epoch: int = 0  # epochs completed in this round
    best: float = float("inf")
    bad_epochs: int = 0
    rows: list = field(default_factory=list)
    done: bool = False


@dataclass(frozen=True)
class JointTerm:
    """A model trained together with R-ASM. loss(shape indices, smoothed shapes (K, 3) in network
    units, torch generator) -> (weighted loss, {name: float}) for one step's batch."""

    module: torch.nn.Module
    loss: Callable[[Sequence[int], list, torch.Generator], tuple[torch.Tensor, dict]]


class _EpochSampler(DistributedSampler):
    """PyTorch's DistributedSampler (each process every world_size-th shape of the epoch's
    order, padded by repeating the first ones so that all take as many), shuffled by the fit's
    seed for each (round, epoch): one process takes the same order as single-process fits always
    have, and a resumed run replays it."""

    def __init__(self, n: int, dist: Dist, cfg: FitConfig):
        super().__init__(range(n), num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
                         drop_last=False)
        self.n, self.cfg, self.round = n, cfg, 0

    def set_round_epoch(self, round_: int, epoch: int) -> None:
        self.round = round_
        self.set_epoch(epoch)

    def __iter__(self):
        order = np.random.default_rng(_seed(self.cfg, self.round, self.epoch)).permutation(
            self.n).tolist()
        order += (order * -(-self.total_size // self.n))[:self.total_size - self.n]
        return iter(order[self.rank:self.total_size:self.num_replicas])


def loss_weights(cfg: FitConfig) -> LossWeights:
    t = cfg.training
    return LossWeights(chamfer=t.w_chamfer, recon=t.w_recon, kl=t.w_kl, normal=t.w_normal,
                       laplacian=t.w_laplacian, edge=t.w_edge)


def _seed(cfg: FitConfig, *parts: int) -> int:
    return int(np.random.SeedSequence([cfg.seed, *parts]).generate_state(1)[0])


def save_checkpoint(run_dir: Path, model: RASM, opt: torch.optim.Optimizer,
                    atlas_points: torch.Tensor, state: TrainState,
                    joint: torch.nn.Module | None = None) -> None:
    payload = {
        "version": CHECKPOINT_VERSION,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "atlas_points": atlas_points.detach().cpu(),
        "state": {"round": state.round, "epoch": state.epoch, "best": state.best,
                  "bad_epochs": state.bad_epochs, "done": state.done},
        "rows": json.dumps(state.rows),  # a string: loads under weights_only, ints stay ints
    }
    if joint is not None:
        payload["joint"] = joint.state_dict()
    with atomic_path(run_dir / CHECKPOINT_NAME) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(run_dir: Path, model: RASM, opt: torch.optim.Optimizer,
                    joint: torch.nn.Module | None = None) -> tuple[torch.Tensor, TrainState]:
    path = run_dir / CHECKPOINT_NAME
    if not path.is_file():
        raise ShapeAtlasError(f"{run_dir}: nothing to resume (no {CHECKPOINT_NAME})")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message suggests weights_only=False, which would run the file's code.
        raise ShapeAtlasError(f"{path}: not a shapeatlas checkpoint (it holds Python objects "
                              "other than tensors, which are never loaded)") from None
    except Exception as exc:
        why = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise ShapeAtlasError(f"{path}: not a shapeatlas checkpoint (unreadable: {why})"
                              ) from None
    if not isinstance(payload, dict) or not CHECKPOINT_KEYS <= set(payload):
        raise ShapeAtlasError(f"{path}: not a shapeatlas checkpoint (it lacks the model, "
                              "optimiser or training state)")
    version = payload.get("version", 0)
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise ShapeAtlasError(f"{path}: written by a newer shapeatlas; upgrade to resume")
    if (joint is not None) != ("joint" in payload):
        have = "a jointly trained generator" if "joint" in payload else "no joint generator"
        raise ShapeAtlasError(f"{path}: the checkpoint has {have}, unlike this configuration "
                              "(generator.mode changed?); resume with the run's own config")
    try:
        model.load_state_dict(payload["model"])
        if joint is not None:
            joint.load_state_dict(payload["joint"])
        opt.load_state_dict(payload["optimizer"])
    except (RuntimeError, ValueError) as exc:
        raise ShapeAtlasError(f"{path}: the checkpoint does not fit this configuration "
                              f"({str(exc).splitlines()[0]})") from None
    try:
        s = payload["state"]
        rows = json.loads(payload["rows"])
        state = TrainState(round=int(s["round"]), epoch=int(s["epoch"]), best=float(s["best"]),
                           bad_epochs=int(s["bad_epochs"]), rows=rows, done=bool(s["done"]))
        if not isinstance(rows, list) or not isinstance(payload["atlas_points"], torch.Tensor):
            raise TypeError("rows or atlas points of the wrong type")
    except (KeyError, TypeError, ValueError) as exc:
        raise ShapeAtlasError(f"{path}: not a shapeatlas checkpoint (its training state is "
                              f"malformed: {exc})") from None
    return payload["atlas_points"], state


def _write_log(run_dir: Path, rows: list[dict]) -> None:
    if not rows:
        return
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(run_dir / LOG_NAME, buf.getvalue())


def _tensorboard(run_dir: Path | None):
    if run_dir is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard is optional
        log.info("tensorboard is not installed: metrics go to %s only", LOG_NAME)
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def train(
    model: RASM,
    shapes: Sequence[GraphInput],
    make_atlas: Callable[[torch.Tensor], AtlasGraph],
    atlas_points: torch.Tensor,
    reestimate_atlas: Callable[[AtlasGraph], torch.Tensor],
    cfg: FitConfig,
    *,
    run_dir: Path | None = None,
    resume: bool = False,
    progress: Callable[[dict], None] | None = None,
    dist: Dist = SINGLE,
    joint: JointTerm | None = None,
) -> tuple[torch.Tensor, list[dict]]:
    """Train `model` in `cfg.training.atlas_rounds` rounds; return the final atlas points and
    the log rows.

    make_atlas(points (K, 3)) -> AtlasGraph; reestimate_atlas(atlas) -> new points (K, 3)
    (with several processes it must return the same points on all of them).
    dist: this process's place in a data-parallel run (every process calls `train`).
    joint: a model trained in the same steps (see `JointTerm`; one process only).
    """
    if joint is not None and dist.active:
        raise ShapeAtlasError("generator.mode 'joint' trains in one process only: run it "
                              "without torchrun, or use generator.mode 'after'")
    writer_rank = dist.is_main and run_dir is not None
    joint_module = joint.module if joint is not None else None
    groups = [list(model.parameters())]
    if joint is not None:
        groups.append(list(joint.module.parameters()))
    opt = torch.optim.Adam([p for g in groups for p in g], lr=cfg.training.lr, amsgrad=True)
    state = TrainState()
    if resume:
        if run_dir is None:
            raise ShapeAtlasError("resume needs a run folder")
        atlas_points, state = load_checkpoint(run_dir, model, opt, joint_module)
        atlas_points = atlas_points.to(shapes[0].points.device)
        log.info("resuming at round %d, epoch %d", state.round + 1, state.epoch + 1)
    weights = loss_weights(cfg)
    tb = _tensorboard(run_dir) if writer_rank else None
    n = len(shapes)
    device = shapes[0].points.device
    step_model: torch.nn.Module = model
    if dist.active:
        step_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    # Each process takes its share of a global batch of `batch_size` shapes (rounded up to a
    # multiple of the processes); the sampler pads the epoch so that all take as many steps.
    per_process = -(-cfg.training.batch_size // dist.world_size)
    sampler = _EpochSampler(n, dist, cfg)
    atlas = make_atlas(atlas_points)
    try:
        while not state.done:
            stalled = cfg.training.patience > 0 and state.bad_epochs >= cfg.training.patience
            if state.epoch >= cfg.training.epochs or stalled:
                # End of a round: re-estimate the atlas, or finish.
                if state.round + 1 >= cfg.training.atlas_rounds:
                    state.done = True
                    break
                model.eval()
                atlas_points = reestimate_atlas(atlas)
                atlas = make_atlas(atlas_points)
                state = TrainState(round=state.round + 1, rows=state.rows)
                if writer_rank:
                    save_checkpoint(run_dir, model, opt, atlas_points, state, joint_module)
                continue
            model.train()
            if joint_module is not None:
                joint_module.train()
            t0 = time.perf_counter()
            tc = cfg.training
            sampler.set_round_epoch(state.round, state.epoch)
            order = list(sampler)
            gen = torch.Generator(device=device)
            gen.manual_seed(_seed(cfg, state.round, state.epoch, dist.rank, 1))
            jgen = torch.Generator(device=device)  # own stream: joint
            jgen.manual_seed(_seed(cfg, state.round, state.epoch, dist.rank, 2))  # never shifts gen
            lr = tc.lr * tc.lr_decay ** (state.round * tc.epochs + state.epoch)
            for group in opt.param_groups:
                group["lr"] = lr
            sums: dict[str, float] = {}
            n_steps = 0
            for start in range(0, len(order), per_process):
                idx = [int(i) for i in order[start:start + per_process]]
                batch = [shapes[i] for i in idx]
                opt.zero_grad(set_to_none=True)
                out = rasm_losses(step_model, atlas, batch, weights, generator=gen)
                total, terms = out.total, dict(out.terms)
                if joint is not None:
                    j_loss, j_terms = joint.loss(idx, out.smoothed, jgen)
                    total = total + j_loss
                    terms.update(j_terms)
                finite = bool(torch.isfinite(total))
                if not dist.all_true(finite, device):
                    bad = ([s.name for s, c in zip(batch, out.per_shape_chamfer)
                            if not torch.isfinite(c)] or [s.name for s in batch]
                           if not finite else ["those of another process"])
                    raise TrainingError(
                        f"non-finite loss in round {state.round + 1}, epoch {state.epoch + 1}, "
                        f"on shape(s) {', '.join(bad)}; the last good checkpoint is kept"
                        + (f" in {run_dir / CHECKPOINT_NAME}" if run_dir else "")
                    )
                total.backward()  # (under DDP, the gradients are averaged over the processes)
                norms = [torch.nn.utils.clip_grad_norm_(g, cfg.training.grad_clip) for g in groups]
                if not all(torch.isfinite(nm) for nm in norms):
                    raise TrainingError(
                        f"non-finite gradient in round {state.round + 1}, epoch "
                        f"{state.epoch + 1}, on shapes {', '.join(s.name for s in batch)}")
                opt.step()
                n_steps += 1
                for k, v in {"loss": total, **terms}.items():
                    v = v.detach() if isinstance(v, torch.Tensor) else v  # or a plain float
                    sums[k] = sums.get(k, 0.0) + float(v)
                if progress:
                    progress({"stage": "correspondence",
                              "round": state.round + 1, "rounds": tc.atlas_rounds,
                              "epoch": state.epoch + 1, "epochs": tc.epochs,
                              "step": n_steps, "steps": -(-len(order) // per_process),
                              "loss": float(total.detach())})
            means = _mean_over_processes(dist, sums, n_steps, device)
            dt = time.perf_counter() - t0
            row = {"round": state.round + 1, "epoch": state.epoch + 1, "lr": lr, **means,
                   "seconds": dt, "shapes_per_second": len(order) * dist.world_size / dt}
            state.rows.append(row)
            loss = row["loss"]
            if loss < state.best * (1.0 - cfg.training.min_delta):
                state.best, state.bad_epochs = loss, 0
            else:
                state.bad_epochs += 1
            state.epoch += 1
            log.info("round %d/%d, epoch %d/%d: loss %.5f (chamfer %.5f) %.1f s", row["round"],
                     tc.atlas_rounds, row["epoch"], tc.epochs, loss, row["chamfer"], dt)
            if writer_rank:
                _write_log(run_dir, state.rows)
                if tb is not None:
                    step = len(state.rows)
                    for k, v in row.items():
                        if k not in ("round", "epoch"):
                            tb.add_scalar(k, v, step)
                if state.epoch % cfg.training.checkpoint_every == 0:
                    save_checkpoint(run_dir, model, opt, atlas_points, state, joint_module)
        if writer_rank:
            save_checkpoint(run_dir, model, opt, atlas_points, state, joint_module)
    finally:
        if tb is not None:
            tb.close()
        # No DDP module or optimiser may outlive the process group (the gloo pitfall), not even
        # through this frame in a traceback.
        step_model = opt = None
    return atlas_points, state.rows


def _mean_over_processes(dist: Dist, sums: dict[str, float], n_steps: int,
                         device: torch.device) -> dict[str, float]:
    """The epoch's mean of each logged term over every step of every process (the same keys
    on all), so that every process logs and stops early on the same numbers."""
    keys = sorted(sums)
    v = torch.tensor([sums[k] for k in keys] + [float(n_steps)], dtype=torch.float64,
                     device=device if device.type == "cuda" else None)
    v = dist.sum_(v).cpu()
    steps = max(float(v[-1]), 1.0)
    means = {k: float(x) / steps for k, x in zip(keys, v[:-1])}
    return {k: means[k] for k in sums}  # the order of the terms as logged
