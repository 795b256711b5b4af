"""The training loop: batches, steps, stopping rules and the divergence guard.

It computes and returns data (a history, a status and when it stopped); the caller decides what
to print. Each step is the tutorials' loop: forward, loss, zero_grad, backward, optimizer.step().
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from gdlab.history import History
from gdlab.losses import l1_penalty
from gdlab.optim.schedules import Schedule

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
class Outcome:
    """How training ended. `status` is converged, max_epochs, diverged or interrupted."""

    status: str
    history: History
    diverged_epoch: int | None = None
    diverged_loss: float | None = None
    start_loss: float | None = None
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
) -> Outcome:
    """Train in place; on divergence the parameters are rolled back to the last finite ones.

    `loss_scale` converts recorded losses to the target's units (training may run standardized).
    """
    params: list[torch.Tensor] = [p for p in model.parameters() if p.requires_grad]
    last_good = [p.detach().clone() for p in params]
    # Early stopping on validation keeps the best epoch's parameters in buffers allocated once.
    best_state = [p.detach().clone() for p in params] if data.X_val is not None else None
    history = History()
    n = data.X.shape[0]
    size = n if batch_size is None else batch_size
    start_loss: float | None = None
    best, waited = math.inf, 0
    status = "max_epochs"
    monitor_validation = data.X_val is not None

    try:
        for epoch in range(stopping.epochs):
            lr = schedule(epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            _restore(last_good, params)  # the point to roll back to if this epoch diverges
            order = None if size >= n else torch.randperm(n, generator=generator)
            total, steps = 0.0, 0
            for begin in range(0, n, size):
                rows = None if order is None else order[begin : begin + size].to(data.X.device)
                X = data.X if rows is None else data.X[rows]
                y = data.y if rows is None else data.y[rows]
                loss = loss_fn(model(X), y)
                objective = loss + l1 * l1_penalty(model) if l1 else loss
                optimizer.zero_grad()
                objective.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                value = loss.item()
                if not math.isfinite(value):
                    return _diverged(history, epoch + 1, value, start_loss, params, last_good)
                total += value * X.shape[0]
                steps += X.shape[0]
            train_loss = total / steps
            if start_loss is None:
                start_loss = train_loss
            elif start_loss > 0 and train_loss > DIVERGENCE_FACTOR * start_loss:
                return _diverged(history, epoch + 1, train_loss, start_loss, params, last_good)
            if not all(bool(torch.isfinite(p).all()) for p in params):
                return _diverged(history, epoch + 1, math.inf, start_loss, params, last_good)
            val_loss = _evaluate(model, loss_fn, data)
            history.append(
                epoch + 1,
                train_loss * loss_scale,
                val_loss * loss_scale,
                lr,
                _grad_norm(params),
                record() if record else None,
            )
            if on_epoch is not None:
                on_epoch(history)
            watched = val_loss if monitor_validation else train_loss
            if best == math.inf or watched < best - stopping.tol * abs(best):
                best, waited = watched, 0
                if best_state is not None:
                    _restore(best_state, params)
            else:
                waited += 1
                if waited >= stopping.patience:
                    status = "converged"
                    break
    except KeyboardInterrupt:
        _restore(params, last_good)
        return Outcome("interrupted", history, start_loss=start_loss)
    if best_state is not None:
        _restore(params, best_state)
    return Outcome(status, history, start_loss=start_loss)


def _diverged(
    history: History,
    epoch: int,
    loss: float,
    start_loss: float | None,
    params: list[torch.Tensor],
    last_good: list[torch.Tensor],
) -> Outcome:
    _restore(params, last_good)
    return Outcome(
        "diverged", history, diverged_epoch=epoch, diverged_loss=loss, start_loss=start_loss
    )


@torch.no_grad()
def _restore(targets: list[torch.Tensor], sources: list[torch.Tensor]) -> None:
    """Copy `sources` into `targets` in place (also used to save into preallocated buffers)."""
    for target, source in zip(targets, sources, strict=True):
        target.copy_(source)


@torch.no_grad()
def _evaluate(model: nn.Module, loss_fn: LossFunction, data: Split) -> float:
    if data.X_val is None or data.y_val is None:
        return math.nan
    return float(loss_fn(model(data.X_val), data.y_val).item())


def _grad_norm(params: list[torch.Tensor]) -> float:
    grads = [p.grad.detach() for p in params if p.grad is not None]
    if not grads:
        return math.nan
    return float(
        torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    )
