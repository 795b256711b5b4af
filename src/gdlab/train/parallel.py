"""Data-parallel runs under torchrun: the process group and every sum the engine takes over ranks.

`torchrun --nproc-per-node N -m gdlab fit ...` starts N processes with RANK, WORLD_SIZE and
the rendezvous in their environment; `join()` opens torch.distributed's process group from it
(gloo on the CPU, nccl on CUDA) and `current()` is that world everywhere in the process (one
process: a world of one, whose sums are the identity, so the one-process code path is the same).

How the work is shared, and why the answers equal one process's:
- least squares: each rank sums the Gram matrix of [z, 1, y] over its contiguous share of the
  rows; one all-reduce gives XᵀX, Xᵀy, yᵀy and n, and every rank solves the same system;
- full-batch gradients: each rank's mean gradient and loss over its share, weighted by its
  rows, summed in one all-reduce per step: the mean over all rows;
- mini-batch: every rank draws the same seeded permutation; a global batch is N x the per-rank
  batch, and rank r takes the r-th per-rank slice of it, so the summed, weighted gradient is
  that of a one-process run with `batch_size` N x b, step for step.
The stop flag (Ctrl-C, SIGTERM) travels in the same all-reduce, so every rank stops at the
same step. A collective that fails (a rank died or was killed) becomes one line that names the
ranks that no longer answer.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

from gdlab.errors import GdlabError

T = TypeVar("T")
TIMEOUT = datetime.timedelta(minutes=30)  # a rank waiting on another's preparation (range test)
ROLL_CALL = 3.0  # seconds survivors wait for each other after a failed collective


@dataclass
class World:
    """This process's place in a data-parallel run; a world of one by default."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = ""
    restarts: int = 0  # torchrun's restarts so far (TORCHELASTIC_RESTART_COUNT)
    reduce_seconds: float = 0.0  # time spent in the step's all-reduce
    reductions: int = 0
    _device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def parallel(self) -> bool:
        return self.size > 1

    @property
    def leader(self) -> bool:
        """Rank 0: the one that writes the run folder, the progress bar and the log."""
        return self.rank == 0

    def share(self, n: int) -> slice:
        """This rank's contiguous share of n rows (shares differ by at most one row)."""
        return slice(self.rank * n // self.size, (self.rank + 1) * n // self.size)

    def sum(self, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """The element-wise sum of `array` over the ranks (float64)."""
        if not self.parallel:
            return array
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
        self.all_reduce(tensor)
        return tensor.numpy()

    def all_reduce(self, tensor: torch.Tensor) -> None:
        """Sum `tensor` over the ranks in place (through the backend's device)."""
        if not self.parallel:
            return
        import torch.distributed as dist

        moved = tensor.to(self._device)
        self._guarded(lambda: dist.all_reduce(moved))
        if moved is not tensor:
            tensor.copy_(moved)

    def broadcast(self, value: T) -> T:
        """Rank 0's `value` on every rank (one estimate, not one per rank)."""
        if not self.parallel:
            return value
        import torch.distributed as dist

        box = [value]
        self._guarded(lambda: dist.broadcast_object_list(box, src=0))
        return box[0]

    def gather(self, value: T) -> list[T]:
        if not self.parallel:
            return [value]
        import torch.distributed as dist

        boxes: list[Any] = [None] * self.size
        self._guarded(lambda: dist.all_gather_object(boxes, value))
        return boxes

    def agree(self, what: dict[str, Any]) -> None:
        """Refuse, before training, ranks that were given different data or options."""
        seen = self.gather(what)
        for rank, other in enumerate(seen):
            differ = sorted(key for key in what if other.get(key) != what[key])
            if differ:
                raise GdlabError(
                    f"rank {rank} of {self.size} was given other {', '.join(differ)} than rank "
                    f"{self.rank}; start every rank with the same command and data."
                )

    def _guarded(self, collective: Callable[[], object]) -> None:
        try:
            collective()
        except (RuntimeError, ConnectionError) as error:
            raise GdlabError(self._lost(error)) from None

    def _lost(self, error: Exception) -> str:
        """The line for a failed collective: which ranks stopped answering, and the cause."""
        cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        missing = self._roll_call()
        who = (
            f"rank {', '.join(map(str, missing))} stopped answering"
            if missing
            else "another rank failed"
        )
        return (
            f"rank {self.rank} of {self.size}: {who} ({cause}); the run folder keeps its last "
            f"checkpoint: run again (or let torchrun --max-restarts) to resume it."
        )

    def _roll_call(self) -> list[int]:
        """The ranks that do not check in to the rendezvous store within ROLL_CALL seconds
        (the store lives with rank 0 or torchrun's agent; if it is gone, rank 0 is)."""
        import torch.distributed as dist

        try:
            store = dist.distributed_c10d._get_default_store()
            prefix = f"gdlab/alive/{self.restarts}/"
            store.set(f"{prefix}{self.rank}", "1")
            deadline = time.monotonic() + ROLL_CALL
            while True:
                missing = [r for r in range(self.size) if not store.check([f"{prefix}{r}"])]
                if not missing or time.monotonic() > deadline:
                    return missing
                time.sleep(0.1)
        except Exception:  # the store itself is unreachable: it was rank 0's
            return [0]


_world = World()


def current() -> World:
    """The world of this process (a world of one unless `join` opened a process group)."""
    return _world


def launched() -> bool:
    """Whether torchrun (or another launcher) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(device: str) -> World:
    """Open the process group torchrun described in the environment, once: nccl when the run
    trains on CUDA, gloo otherwise. A process not started as one of several stays alone."""
    global _world
    if _world.parallel or not launched():
        return _world
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    backend = "nccl" if cuda else "gloo"
    where = torch.device("cpu")
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise GdlabError(
                f"local rank {local_rank} has no GPU of its own ({torch.cuda.device_count()} "
                f"found); start at most that many processes per node, or use `device=cpu`."
            )
        torch.cuda.set_device(local_rank)
        where = torch.device("cuda", local_rank)
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    try:
        dist.init_process_group(backend, timeout=TIMEOUT, **_attempt_store(restarts))
    except (RuntimeError, ValueError, ConnectionError) as error:
        raise GdlabError(
            f"torch.distributed could not start ({str(error).splitlines()[0]}); check "
            f"torchrun's --rdzv options or MASTER_ADDR/MASTER_PORT."
        ) from None
    _world = World(
        rank=dist.get_rank(),
        size=dist.get_world_size(),
        local_rank=local_rank,
        backend=backend,
        restarts=restarts,
        _device=where,
    )
    return _world


def _attempt_store(restarts: int) -> dict[str, Any]:
    """Under torchrun's agent store, one key space per attempt: the store outlives the
    workers, and a restarted group that reads the killed workers' gloo addresses from it
    fails to connect ("Connection refused"). Launched by hand (rank 0 hosts the store,
    started afresh with each launch), torch's own set-up from the environment."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return {}
    import torch.distributed as dist

    size = int(os.environ["WORLD_SIZE"])
    client = dist.TCPStore(  # type: ignore[attr-defined]
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), size, is_master=False,
        timeout=TIMEOUT,
    )  # fmt: skip
    return {
        "store": dist.PrefixStore(f"gdlab/attempt/{restarts}", client),  # type: ignore[attr-defined]
        "rank": int(os.environ["RANK"]),
        "world_size": size,
    }


LEAVE_SECONDS = 300  # the longest a finished rank waits for the others (rank 0's last writes)


def leave() -> None:
    """Close the process group (at the end of the run, or before a test opens another)."""
    global _world
    if _world.parallel:
        import torch.distributed as dist

        if dist.is_initialized():
            # Meet first: a rank that tore gloo down while another still talked to it was
            # aborted at exit ("terminate called without an active exception", exit -6). A
            # rank that never comes (it failed; torchrun ends the others) is waited for at
            # most LEAVE_SECONDS.
            with contextlib.suppress(RuntimeError):
                dist.monitored_barrier(timeout=datetime.timedelta(seconds=LEAVE_SECONDS))
            dist.destroy_process_group()
    _world = World()


class Reduction:
    """The loop's reduction: after each step's gradient, one all-reduce carries every
    parameter's gradient weighted by this rank's rows, the loss sum, the row count and the
    stop flag; it leaves the mean over all ranks' rows in .grad and returns the batch's mean
    loss and rows. With `replicated` (the exact path: every rank computes the same gradient
    from the summed statistics) only the stop flag travels."""

    def __init__(self, world: World, stop: Callable[[], bool], *, replicated: bool) -> None:
        self.world, self.local_stop, self.replicated = world, stop, replicated
        self.stopped = False

    def stop(self) -> bool:
        """The stop flag of the last reduction: the same on every rank."""
        return self.stopped

    def __call__(
        self, params: Sequence[torch.Tensor], value: float, seen: int
    ) -> tuple[float, int]:
        world, flag = self.world, float(self.local_stop())
        began = time.perf_counter()
        if self.replicated:
            box = torch.tensor([flag], dtype=torch.float64)
            world.all_reduce(box)
            self.stopped = bool(box[0] > 0)
            self._timed(began)
            return value, seen
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1).double() * seen for g in grads])
        tail = torch.tensor([value * seen if seen else 0.0, float(seen), flag], dtype=torch.float64)
        buffer = torch.cat([flat.to(tail.device), tail])
        world.all_reduce(buffer)
        total, rows, stops = buffer[-3:].tolist()
        self.stopped = stops > 0
        mean = buffer[:-3] / rows
        begin = 0
        for p, g in zip(params, grads, strict=True):
            part = mean[begin : begin + g.numel()].view_as(g).to(device=p.device, dtype=p.dtype)
            if p.grad is None:
                p.grad = part
            else:
                p.grad.copy_(part)
            begin += g.numel()
        self._timed(began)
        return total / rows, int(rows)

    def _timed(self, began: float) -> None:
        self.world.reduce_seconds += time.perf_counter() - began
        self.world.reductions += 1


def scaling(world: World, seconds: float, *, replicated: bool) -> tuple[dict[str, Any], str]:
    """What the ranks cost and whether one process would have been faster: the summary's
    figures and a warning ('' when scaling paid).

    The model, from this run's own measurements: of the loop's `seconds`, R went to the
    all-reduce (waiting for the slowest rank included) and the rest computed on 1/N of the
    rows, so one process would take about N (seconds - R); on the exact path each rank runs
    the same O(d²) epochs, so one process takes about seconds - R (only the pass over the
    data is shared out)."""
    reduce = min(world.reduce_seconds, seconds)
    compute = seconds - reduce
    alone = compute if replicated else world.size * compute
    figures = {
        "ranks": world.size,
        "backend": world.backend,
        "seconds": seconds,
        "all_reduce_seconds": reduce,
        "all_reduces": world.reductions,
        "one_process_seconds": alone,
    }
    if alone >= seconds or seconds < 1.0:  # (a second or less: not worth a warning)
        return figures, ""
    why = (
        "the exact path repeats the same O(d²) epochs on every rank"
        if replicated
        else f"the all-reduce took {reduce / seconds:.0%} of it"
    )
    return figures, (
        f"{world.size} ranks trained in {seconds:.3g} s, but one process would take about "
        f"{alone:.3g} s ({why}): for data this size run one process, or give each rank more "
        f"rows per step (a larger batch_size)."
    )
