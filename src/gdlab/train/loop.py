"""The training loop: batches, steps, stopping rules, the divergence guard and checkpoints.

It computes and returns data (a history, a status and when it stopped); the caller decides what
to print and what to write. Each step is the tutorials' loop: forward, loss, zero_grad,
backward, optimizer.step(). Everything the loop carries from one step to the next lives in a
`LoopState`, so a run stopped anywhere (even inside an epoch) continues bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gdlab.history import History
from gdlab.losses import add_l1_gradient, l1_penalty
from gdlab.optim.gd import GradientDescent
from gdlab.optim.schedules import Schedule
from gdlab.train.analytic import AnalyticGradient
from gdlab.train.exact import ExactGradient

DIVERGENCE_FACTOR = 1000.0

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Split:
    """Training rows and optional validation rows, already on the training device and dtype."""

    X: torch.Tensor
    y: torch.Tensor
    X_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None


@dataclass(frozen=True)
class Stopping:
    epochs: int
    tol: float
    patience: int


@dataclass
class LoopState:
    """Where the loop is: enough, with the model, optimizer and RNG states, to continue exactly.

    `position` > 0 means the run stopped inside an epoch: `order` is that epoch's row order,
    `total`/`seen` its running loss sum, and `epoch_start` the parameters to roll back to if
    the rest of the epoch diverges. `current` holds the last parameters when the model was set
    to the best validation epoch at the end.
    """

    epoch: int = 0
    start_loss: float | None = None
    best: float = math.inf
    waited: int = 0
    best_params: list[torch.Tensor] | None = None
    order: torch.Tensor | None = None
    position: int = 0
    total: float = 0.0
    seen: int = 0
    epoch_start: list[torch.Tensor] | None = None
    current: list[torch.Tensor] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> LoopState:
        return cls(**{name: state[name] for name in cls.__dataclass_fields__})


@dataclass
class Outcome:
    """How training ended. `status` is converged, max_epochs, diverged or interrupted."""

    status: str
    history: History
    state: LoopState
    diverged_epoch: int | None = None
    diverged_loss: float | None = None
    notes: list[str] = field(default_factory=list)


def train(
    model: nn.Module,
    loss_fn: LossFunction,
    optimizer: torch.optim.Optimizer,
    schedule: Schedule,
    data: Split,
    stopping: Stopping,
    *,
    batch_size: int | None,
    generator: torch.Generator,
    l1: float = 0.0,
    loss_scale: float = 1.0,
    record: Callable[[], dict[str, float]] | None = None,
    on_epoch: Callable[[History], None] | None = None,
    state: LoopState | None = None,
    history: History | None = None,
    stop: Callable[[], bool] | None = None,
    checkpoint: Callable[[LoopState, History], None] | None = None,
    checkpoint_every: int = 0,
    exact: ExactGradient | None = None,
    analytic: AnalyticGradient | None = None,
) -> Outcome:
    """Train in place from `state` (a fresh start by default) until `stopping` or `stop()`.

    `stop` is polled after every optimisation step; `checkpoint` is called every
    `checkpoint_every` epochs. On divergence the parameters are rolled back to the last finite
    ones. `loss_scale` converts recorded losses to the target's units (training may run
    standardized). With `exact` (full-batch least squares) the gradients come from sufficient
    statistics instead of a pass over the rows; with `analytic` (linear and logistic models)
    mini-batch gradients come from closed formulas instead of autograd.
    """
    state = state or LoopState()
    history = history or History()
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    names = [name for name, _ in named]
    params: list[torch.Tensor] = [p for _, p in named]
    if state.current is not None:
        _restore(params, state.current)
        state.current = None
    last_good = [p.detach().clone() for p in params]
    if state.epoch_start is not None:
        _restore(last_good, state.epoch_start)
    # Early stopping on validation keeps the best epoch's parameters in buffers allocated once.
    monitor_validation = data.X_val is not None
    if monitor_validation and state.best_params is None:
        state.best_params = [p.detach().clone() for p in params]
    n = data.X.shape[0]
    size = n if batch_size is None else batch_size

    formula = exact or analytic  # gradients set without autograd, or None
    # gdlab's own gd has no per-step hooks to run: skip torch's profiler wrapper around step().
    step = optimizer.update if isinstance(optimizer, GradientDescent) else optimizer.step

    def stopped(status: str) -> Outcome:
        return Outcome(status, history, state)

    while state.epoch < stopping.epochs:
        if state.waited >= stopping.patience:
            break
        epoch = state.epoch
        lr = schedule(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if state.position == 0:
            _restore(last_good, params)  # the point to roll back to if this epoch diverges
            state.order = None if size >= n else torch.randperm(n, generator=generator)
            state.total, state.seen = 0.0, 0
        while state.position < n:
            begin = state.position
            rows = (
                None if state.order is None else state.order[begin : begin + size].to(data.X.device)
            )
            if formula is not None:
                value = formula.step_gradient(rows)
                if l1:
                    add_l1_gradient(model, l1)
            else:
                X = data.X if rows is None else data.X.index_select(0, rows)
                y = data.y if rows is None else data.y.index_select(0, rows)
                loss = loss_fn(model(X), y)
                optimizer.zero_grad()
                (loss + l1 * l1_penalty(model) if l1 else loss).backward()  # type: ignore[no-untyped-call]
                value = loss.item()
            step()
            if not math.isfinite(value):
                return _diverged(history, state, epoch + 1, value, params, last_good)
            seen = n if rows is None else len(rows)
            state.total += value * seen
            state.seen += seen
            state.position = min(begin + size, n)
            if state.position < n and stop is not None and stop():
                state.epoch_start = [t.clone() for t in last_good]
                return stopped("interrupted")
        state.position, state.order, state.epoch_start = 0, None, None
        train_loss = state.total / state.seen
        if state.start_loss is None:
            state.start_loss = train_loss
        elif state.start_loss > 0 and train_loss > DIVERGENCE_FACTOR * state.start_loss:
            return _diverged(history, state, epoch + 1, train_loss, params, last_good)
        row = record() if record else None  # small models: every parameter, as floats
        # Finite recorded values settle it without touching the tensors; anything else (no
        # record, or a value that overflowed only in original units) asks the parameters.
        if not (row and all(map(math.isfinite, row.values()))) and not _all_finite(params):
            return _diverged(history, state, epoch + 1, math.inf, params, last_good)
        val_loss = exact.validation_loss() if exact else _evaluate(model, loss_fn, data)
        total_norm, layer_norms = _grad_norms(params)
        history.append(
            epoch + 1,
            train_loss * loss_scale,
            val_loss * loss_scale,
            lr,
            total_norm,
            row,
            dict(zip(names, layer_norms, strict=True)) if layer_norms else None,
        )
        state.epoch = epoch + 1
        if on_epoch is not None:
            on_epoch(history)
        watched = val_loss if monitor_validation else train_loss
        if state.best == math.inf or watched < state.best - stopping.tol * abs(state.best):
            state.best, state.waited = watched, 0
            if state.best_params is not None:
                _restore(state.best_params, params)
        else:
            state.waited += 1
        if stop is not None and stop():
            return stopped("interrupted")
        if checkpoint is not None and checkpoint_every and state.epoch % checkpoint_every == 0:
            checkpoint(state, history)
    status = "converged" if state.waited >= stopping.patience else "max_epochs"
    if state.best_params is not None:
        state.current = [p.detach().clone() for p in params]
        _restore(params, state.best_params)
    return stopped(status)


def _diverged(
    history: History,
    state: LoopState,
    epoch: int,
    loss: float,
    params: list[torch.Tensor],
    last_good: list[torch.Tensor],
) -> Outcome:
    _restore(params, last_good)
    return Outcome("diverged", history, state, diverged_epoch=epoch, diverged_loss=loss)


@torch.no_grad()
def _restore(targets: list[torch.Tensor], sources: list[torch.Tensor]) -> None:
    """Copy `sources` into `targets` in place (also used to save into preallocated buffers)."""
    if targets:
        torch._foreach_copy_(targets, sources)  # one call for all tensors


@torch.no_grad()
def _evaluate(model: nn.Module, loss_fn: LossFunction, data: Split) -> float:
    if data.X_val is None or data.y_val is None:
        return math.nan
    return float(loss_fn(model(data.X_val), data.y_val).item())


def _all_finite(params: list[torch.Tensor]) -> bool:
    """Whether every parameter is finite: one reduction over all of them, not one per tensor."""
    with torch.no_grad():
        return bool(torch.cat([p.reshape(-1) for p in params]).isfinite().all())


def _grad_norms(params: list[torch.Tensor]) -> tuple[float, list[float]]:
    """The gradient's norm over all parameters, and per parameter tensor (layer): one fused
    call (the one torch.nn.utils.clip_grad_norm_ uses), whatever the number of layers."""
    grads = [p.grad for p in params]
    if not grads or any(g is None for g in grads):
        return math.nan, []
    with torch.no_grad():
        norms = torch.stack(torch._foreach_norm(grads)).tolist()  # type: ignore[arg-type]
    return math.sqrt(sum(v * v for v in norms)), norms
