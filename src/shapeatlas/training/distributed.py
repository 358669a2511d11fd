"""Data-parallel fits under torchrun: the process group, and what the processes share.

`torchrun --nproc_per_node=N -m shapeatlas fit ...` starts N processes; each reads torchrun's
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) through `from_env`, and
`session` joins them in one process group: gloo on CPU, NCCL on CUDA (one GPU per process, the
process's LOCAL_RANK). The training steps use PyTorch's DistributedDataParallel and
DistributedSampler (`training.loop`); this module only holds the process group's life cycle and
the few exchanges the fit needs besides the gradients (`Dist`):

- `agree`: every process must hold the same value (the configuration, the training shapes'
  content), else all stop with one line naming the first process that differs;
- `on_main`: work only the main process (rank 0) may do (grooming into the run folder, reading
  the saved configuration); the others get its result, or its error, waiting for it up to
  `MAIN_WORK_TIMEOUT_S` rather than the session's timeout;
- `sum_`, `gather`: the atlas re-estimation's sum over shapes and the matched training shapes.

A process that dies makes the collectives of the others fail (gloo: the connection closes;
any backend: the group's timeout), and torchrun stops the others; `session` turns the failure
into one `ShapeAtlasError` line. Python objects exchanged here are pickled between the
processes of one run (never read from a file).

Shutdown follows the gloo pitfall of torch 2.x: the DDP-wrapped modules and optimisers must be
gone before the group is destroyed (`training.loop` drops them; `session` collects garbage and
waits at a barrier first), else a process may abort or hang at exit.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as tdist

from shapeatlas.data.cache import array_digest
from shapeatlas.errors import ShapeAtlasError

log = logging.getLogger(__name__)

#: How long a collective waits for a silent process before the run stops (seconds).
DEFAULT_TIMEOUT_S = 600
#: How long the other processes wait for the main process's own work (`Dist.on_main`: the
#: grooming of a raw folder takes about a second a shape). A main process that dies still
#: stops them at once: torchrun ends the others when one fails.
MAIN_WORK_TIMEOUT_S = 24 * 3600

#: The process group `on_main` waits in (gloo, `MAIN_WORK_TIMEOUT_S`), while a session is open.
_main_work_group = None


class PeerError(ShapeAtlasError):
    """Another process of the run failed or disagreed; this one stops too."""


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: rank (0: the main process, the only one that writes
    files), world_size (number of processes), local_rank (its GPU on this machine)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> range:
        """The indices of n items this process handles (every world_size-th, from its rank)."""
        return range(self.rank, n, self.world_size)

    def barrier(self) -> None:
        if self.active:
            tdist.barrier()

    def broadcast(self, value: Any = None) -> Any:
        """The main process's `value`, on every process."""
        if not self.active:
            return value
        box = [value if self.is_main else None]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list:
        """Every process's `value`, by rank, on every process."""
        if not self.active:
            return [value]
        out: list = [None] * self.world_size
        tdist.all_gather_object(out, value)
        return out

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of `tensor` over the processes (in place; returned)."""
        if self.active:
            tdist.all_reduce(tensor, op=tdist.ReduceOp.SUM)
        return tensor

    def all_true(self, flag: bool, device: torch.device | None = None) -> bool:
        """Whether `flag` holds on every process (one small all-reduce on `device`, which
        must be a CUDA device under NCCL)."""
        if not self.active:
            return bool(flag)
        failed = torch.tensor([0.0 if flag else 1.0], device=device)
        return float(self.sum_(failed)) == 0.0

    def agree(self, what: str, value: str) -> None:
        """Refuse to go on unless every process holds the same `value` (compared by hash)."""
        if not self.active:
            return
        digest = hashlib.sha256(value.encode()).hexdigest()
        digests = self.gather(digest)
        odd = [r for r, d in enumerate(digests) if d != digests[0]]
        if odd:
            raise PeerError(f"the processes of this run disagree on {what}: process {odd[0]} "
                            f"differs from process 0 (start every process with the same "
                            "command, data and configuration)")

    def on_main(self, fn: Callable[[], Any]) -> Any:
        """Run fn on the main process only; every process gets its result, or stops with its
        error (the main process re-raises it, the others raise `PeerError`)."""
        if not self.active:
            return fn()
        box: list = [None]
        error: BaseException | None = None
        if self.is_main:
            try:
                box = [("ok", fn())]
            except BaseException as exc:  # passed on to the others, then re-raised
                error = exc
                box = [("error", str(exc) or type(exc).__name__)]
        tdist.broadcast_object_list(box, src=0, group=_main_work_group)
        if error is not None:
            raise error
        kind, value = box[0]
        if kind == "error":
            raise PeerError(f"process 0 stopped: {value}")
        return value


#: One process: no process group, nothing exchanged.
SINGLE = Dist()


def from_env(environ: dict | None = None) -> Dist:
    """This process's `Dist` from torchrun's environment (SINGLE outside torchrun); malformed
    values are one clear error."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return SINGLE
    try:
        world = int(env["WORLD_SIZE"])
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", "0"))
    except ValueError:
        raise ShapeAtlasError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (as torchrun "
                              "sets them)") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ShapeAtlasError(f"RANK {rank} and WORLD_SIZE {world} do not make a process group")
    if world > 1 and not {"MASTER_ADDR", "MASTER_PORT"} <= set(env):
        raise ShapeAtlasError("WORLD_SIZE > 1 without MASTER_ADDR/MASTER_PORT: start the "
                              "processes with torchrun")
    return Dist(rank=rank, world_size=world, local_rank=local)


def device_type(device: str) -> str:
    """"cuda" or "cpu": where a fit with `FitConfig.device` `device` runs its network."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if device.startswith("cuda") else "cpu"


@contextmanager
def session(dist: Dist, device: str,
            timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[Dist]:
    """The process group of `dist` for the block (nothing when it is a single process).

    device: the fit's device setting ("auto", "cpu", "cuda"): NCCL and the GPU of the process's
    LOCAL_RANK on CUDA, gloo on CPU. A failed collective (a process
    died, or stayed silent past `timeout_s`) becomes a `PeerError`; the group is always shut
    down in the order the gloo pitfall needs.
    """
    if not dist.active:
        yield dist
        return
    on_gpu = device_type(device) == "cuda"
    if on_gpu:
        if dist.local_rank >= torch.cuda.device_count():
            raise ShapeAtlasError(f"process {dist.rank} wants GPU {dist.local_rank}, but this "
                                  f"machine has {torch.cuda.device_count()}: start at most as "
                                  "many processes per node as GPUs")
        torch.cuda.set_device(dist.local_rank)
    tdist.init_process_group("nccl" if on_gpu else "gloo", rank=dist.rank, world_size=dist.world_size,
                             timeout=timedelta(seconds=timeout_s))
    global _main_work_group
    healthy = False
    try:
        # The main process's own work (grooming hundreds of shapes) may outlast `timeout_s`.
        _main_work_group = tdist.new_group(backend="gloo",
                                           timeout=timedelta(seconds=MAIN_WORK_TIMEOUT_S))
        yield dist
        healthy = True
    except tdist.DistError as exc:
        first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise PeerError(f"process {dist.rank}: lost another process of the run ({first[:200]}); "
                        "all stop: add --resume to the same command to continue") from None
    finally:
        gc.collect()
        if healthy:
            try:
                tdist.barrier()
            except tdist.DistError:
                pass
        _main_work_group = None
        tdist.destroy_process_group()


def content_digest(arrays: Iterable[tuple[str, Sequence[np.ndarray]]]) -> str:
    """A hash of named arrays (e.g. every training mesh's vertices and faces), to check that
    all processes hold the same data."""
    h = hashlib.sha256()
    for name, parts in arrays:
        h.update(name.encode())
        h.update(array_digest(parts).encode())
    return h.hexdigest()
