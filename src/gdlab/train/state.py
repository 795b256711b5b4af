"""What the training loop carries and returns: its inputs (the data split, the stop tests),
its resumable state, its checkpoint cadence and how a run ended."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from gdlab.history import History
from gdlab.train.rules import Tolerances, Verdict

if TYPE_CHECKING:
    from gdlab.train.streamed import TensorStream

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SLOW_CHECKPOINT = 1.0  # seconds; a checkpoint slower than this is spaced out (Cadence)
CHECKPOINT_SHARE = 0.1  # at most this share of the run's time goes to slow checkpoints


@dataclass
class Cadence:
    """Checkpoints every `every` epochs (0: none), except that a slow one (a model of 10^6
    coefficients takes seconds to save) is spaced out so that saving takes at most
    CHECKPOINT_SHARE of the time; fast checkpoints keep the exact cadence."""

    every: int
    cost: float = 0.0  # seconds the last checkpoint took
    ended: float = 0.0  # time.monotonic() when it ended

    def due(self, epoch: int) -> bool:
        if not self.every or epoch % self.every:
            return False
        if self.cost < SLOW_CHECKPOINT:
            return True
        return time.monotonic() - self.ended >= self.cost / CHECKPOINT_SHARE

    def timed(self, save: Callable[[], None]) -> None:
        start = time.monotonic()
        save()
        self.ended = time.monotonic()
        self.cost = self.ended - start


@dataclass
class Split:
    """Training rows and optional validation rows, already on the training device and dtype.

    A streamed file's rows are not held: X and y are then tensors on the meta device, of the
    rows' shapes, and `stream` (`val_stream`) reads them block by block (`train/streamed.py`).
    Passes over all the rows go through `blocks`, whichever holds them.
    """

    X: torch.Tensor
    y: torch.Tensor
    X_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    stream: TensorStream | None = None
    val_stream: TensorStream | None = None

    def blocks(
        self, rows: int | None = None, *, validation: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The training (or validation) rows in blocks of at most `rows` (None: one block of
        them all; a stream: its own blocks)."""
        stream = self.val_stream if validation else self.stream
        if stream is not None:
            yield from stream.blocks()
            return
        X, y = (self.X_val, self.y_val) if validation else (self.X, self.y)
        if X is None or y is None:
            return
        step = rows or len(X)
        for begin in range(0, len(X), step):
            yield X[begin : begin + step], y[begin : begin + step]

    def head(self, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `rows` training rows, as tensors that hold them."""
        if self.stream is not None:
            return self.stream.head(rows)
        return self.X[:rows], self.y[:rows]


@dataclass(frozen=True)
class Stopping:
    """The budget and the stop tests of `gdlab.train.rules`, with what the run knows about itself.

    `distance` (least squares from XᵀX) measures ‖θ − θ*‖; `assured` says the run provably
    converges to θ* (gd or momentum below its stability limit on least squares, a constant
    rate), so a slow or oscillating approach is not a stall; `unstable` says the rate is above
    that limit, so the run can only diverge (at the latest when the budget ends), and
    `rise_diverges` (plain gd there) that any rise of the loss is that divergence.
    `first_order` is False where no first-order test exists (an L1 penalty, AdamW's decay).
    """

    epochs: int
    tolerances: Tolerances
    distance: Callable[[], float] | None = None
    optimum_norm: float = 0.0
    condition: float = 1.0  # κ of the least-squares Hessian: θ* is known to about κ·ε
    assured: bool = False
    unstable: bool = False
    rise_diverges: bool = False
    weight_decay: float = 0.0
    first_order: bool = True
    separated: Callable[[], bool] | None = None  # classifiers: every training row on its side


@dataclass
class LoopState:
    """Where the loop is: enough, with the model, optimizer and RNG states, to continue exactly.

    `position` > 0 means the run stopped inside an epoch: `order` is that epoch's row order,
    `total`/`seen` its running loss sum, and `epoch_start` the parameters to roll back to if
    the rest of the epoch diverges. `current` holds the last parameters when the model was set
    to the best validation epoch at the end. `recent` keeps the last training losses that the
    divergence and stall tests look at; `start_grad` is ‖g₀‖, the gradient test's reference.
    """

    epoch: int = 0
    start_loss: float | None = None
    best: float = math.inf
    best_epoch: int = 0
    lowest: float = math.inf
    waited: int = 0
    best_params: list[torch.Tensor] | None = None
    order: torch.Tensor | None = None
    position: int = 0
    total: float = 0.0
    seen: int = 0
    epoch_start: list[torch.Tensor] | None = None
    current: list[torch.Tensor] | None = None
    start_grad: float | None = None
    recent: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> LoopState:
        fresh = cls()
        return cls(
            **{name: state.get(name, getattr(fresh, name)) for name in cls.__dataclass_fields__}
        )


@dataclass
class Outcome:
    """How training ended: the verdict of `gdlab.train.rules`, or interrupted."""

    verdict: Verdict
    history: History
    state: LoopState
    diverged_epoch: int | None = None
    diverged_loss: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.verdict.status
