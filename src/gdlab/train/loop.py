"""The training loop: batches, steps, stopping rules, the divergence guard and checkpoints.

It computes and returns data (a history, a status and when it stopped); the caller decides what
to print and what to write. Each step is the tutorials' loop: forward, loss, zero_grad,
backward, optimizer.step(). Everything the loop carries from one step to the next lives in a
`LoopState`, so a run stopped anywhere (even inside an epoch) continues bit for bit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gdlab.history import History
from gdlab.losses import add_l1_gradient
from gdlab.optim.gd import GradientDescent
from gdlab.optim.schedules import Schedule
from gdlab.train.analytic import AnalyticGradient
from gdlab.train.exact import ExactGradient
from gdlab.train.rules import (
    RISE_WINDOW,
    Measure,
    Tolerances,
    Verdict,
    divergence,
    epoch_order,
    falling,
    first_order,
    improved,
    recent_improvement,
    rises,
    stall_reason,
)
from gdlab.train.sources import AutogradGradient, GradientSource, Reduce, no_reduction

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SEPARATION_EVERY = 100  # epochs between checks that a classifier separates its training rows
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


FULL_GRADIENT_ROWS = 1 << 16  # rows per chunk when a mini-batch run measures the full gradient


@dataclass
class Split:
    """Training rows and optional validation rows, already on the training device and dtype."""

    X: torch.Tensor
    y: torch.Tensor
    X_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None


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
    reduction: Reduce = no_reduction,
) -> Outcome:
    """Train in place from `state` (a fresh start by default) until a stop test or `stop()`.

    `stop` is polled after every optimisation step; `checkpoint` is called every
    `checkpoint_every` epochs. On divergence the parameters are rolled back to the last finite
    ones. `loss_scale` converts recorded losses to the target's units (training may run
    standardized). With `exact` (full-batch least squares) the gradients come from sufficient
    statistics instead of a pass over the rows; with `analytic` (linear and logistic models)
    mini-batch gradients come from closed formulas instead of autograd (`train/sources.py`);
    `reduction` is applied to the parameters' gradients before every step (identity in one
    process).
    """
    state = state or LoopState()
    history = history or History()
    cadence = Cadence(checkpoint_every)
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
    mini_batch = size < n
    tolerances = stopping.tolerances

    source: GradientSource = exact or analytic or AutogradGradient(model, loss_fn, data.X, data.y)
    # gdlab's own gd has no per-step hooks to run: skip torch's profiler wrapper around step().
    step = optimizer.update if isinstance(optimizer, GradientDescent) else optimizer.step

    def full_gradient() -> float:
        return _full_gradient_norm(model, loss_fn, data, params, l1, stopping.weight_decay)

    def first_order_measure(epoch_gradient: float) -> Measure | None:
        """The convergence measure of this epoch: distance to θ*, else the gradient norm (a
        mini-batch run measures its full gradient only when asked, at a stall or the end)."""
        if stopping.distance is not None:
            threshold = tolerances.distance_threshold(stopping.optimum_norm, stopping.condition)
            return Measure("distance to optimum", stopping.distance(), threshold)
        if not stopping.first_order or state.start_grad is None:
            return None
        threshold = tolerances.gradient_threshold(state.start_grad)
        return Measure("gradient norm", epoch_gradient, threshold)

    def ended(
        status: str, test: str = "", reason: str = "", measure: Measure | None = None
    ) -> Outcome:
        """The verdict, with the first-order measure (taken now if the epoch had none: the
        full gradient of a mini-batch run) and the plateau measure beside their thresholds."""
        if measure is None and status != "diverged":
            gradient = full_gradient() if mini_batch else (history.grad_norm or [math.nan])[-1]
            measure = first_order_measure(gradient)
        if status != "diverged" and first_order(measure):
            assert measure is not None
            status, test, reason = "converged", _test_of(measure), ""
        plateau = Measure("loss improvement", recent_improvement(state.recent), tolerances.ftol)
        verdict = Verdict(status, test, reason, [m for m in (measure, plateau) if m is not None])
        return _keep_best(Outcome(verdict, history, state), params)

    if mini_batch and state.start_grad is None and stopping.first_order:
        state.start_grad = full_gradient()
    while state.epoch < stopping.epochs:
        epoch = state.epoch
        lr = schedule(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if state.position == 0:
            _restore(last_good, params)  # the point to roll back to if this epoch diverges
            state.order = epoch_order(n, size, generator)
            state.total, state.seen = 0.0, 0
        while state.position < n:
            begin = state.position
            rows = (
                None if state.order is None else state.order[begin : begin + size].to(data.X.device)
            )
            value = source.step_gradient(rows)
            if l1:
                add_l1_gradient(model, l1)
            reduction(params)
            step()
            if not math.isfinite(value):
                return _diverged(history, state, epoch + 1, value, params, last_good, "not_finite")
            seen = n if rows is None else len(rows)
            state.total += value * seen
            state.seen += seen
            state.position = min(begin + size, n)
            if state.position < n and stop is not None and stop():
                state.epoch_start = [t.clone() for t in last_good]
                return Outcome(Verdict("interrupted"), history, state)
        state.position, state.order, state.epoch_start = 0, None, None
        train_loss = state.total / state.seen
        previous = state.recent[-1] if state.recent else None
        state.recent = [*state.recent[-(RISE_WINDOW - 1) :], train_loss]
        if state.start_loss is None:
            state.start_loss = train_loss
        state.lowest = min(state.lowest, train_loss)
        test = divergence(train_loss, state.start_loss, state.lowest, state.recent)
        if test is None and stopping.rise_diverges and rises(previous, train_loss):
            test = "unstable_rate"
        if test is not None:
            return _diverged(history, state, epoch + 1, train_loss, params, last_good, test)
        row = record() if record else None  # small models: every parameter, as floats
        # Finite recorded values settle it without touching the tensors; anything else (no
        # record, or a value that overflowed only in original units) asks the parameters.
        if not (row and all(map(math.isfinite, row.values()))) and not _all_finite(params):
            return _diverged(history, state, epoch + 1, math.inf, params, last_good, "not_finite")
        val_loss = exact.validation_loss() if exact else _evaluate(model, loss_fn, data)
        total_norm, layer_norms = _grad_norms(params)
        gradient = (
            _penalized_norm(params, stopping.weight_decay)
            if stopping.weight_decay and not mini_batch
            else total_norm
        )
        if not mini_batch and state.start_grad is None:
            state.start_grad = gradient
        history.append(
            epoch + 1,
            train_loss * loss_scale,
            val_loss * loss_scale,
            lr,
            gradient,
            row,
            dict(zip(names, layer_norms, strict=True)) if layer_norms else None,
        )
        state.epoch = epoch + 1
        if on_epoch is not None:
            on_epoch(history)
        watched = val_loss if monitor_validation else train_loss
        if improved(watched, state.best, tolerances.ftol):
            state.best, state.best_epoch, state.waited = watched, state.epoch, 0
            if state.best_params is not None:
                _restore(state.best_params, params)
        else:
            state.waited += 1
        measure = None if mini_batch else first_order_measure(gradient)
        if first_order(measure):
            return ended("converged", "", "", measure)
        if (
            stopping.separated is not None
            and state.epoch % SEPARATION_EVERY == 0
            and state.waited == 0
            and stopping.separated()
        ):
            return ended("separable", "separation", "", measure)
        if state.waited >= tolerances.patience:
            if monitor_validation:
                return ended("early_stopped", "plateau", "validation", measure)
            steady = stopping.assured or stopping.unstable  # converges, or can only diverge
            if not steady and not falling(state.recent[-tolerances.patience :]):
                reason = stall_reason(
                    state.recent, epsilon=tolerances.epsilon, mini_batch=mini_batch
                )[0]
                return ended("stalled", "plateau", reason, measure)
        if stop is not None and stop():
            return Outcome(Verdict("interrupted"), history, state)
        if checkpoint is not None and cadence.due(state.epoch):
            cadence.timed(lambda: checkpoint(state, history))
    if stopping.unstable:
        return _diverged(history, state, state.epoch, math.nan, params, params, "unstable_rate")
    return ended("max_epochs")


def _keep_best(outcome: Outcome, params: list[torch.Tensor]) -> Outcome:
    """With a validation split the model ends at its best epoch; the last one is kept aside."""
    state = outcome.state
    if state.best_params is not None:
        state.current = [p.detach().clone() for p in params]
        _restore(params, state.best_params)
    return outcome


def _test_of(measure: Measure) -> str:
    return "distance" if measure.name.startswith("distance") else "gradient"


def _diverged(
    history: History,
    state: LoopState,
    epoch: int,
    loss: float,
    params: list[torch.Tensor],
    last_good: list[torch.Tensor],
    test: str,
) -> Outcome:
    _restore(params, last_good)
    verdict = Verdict("diverged", test)
    return Outcome(verdict, history, state, diverged_epoch=epoch, diverged_loss=loss)


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


def _penalized_norm(params: list[torch.Tensor], weight_decay: float) -> float:
    """‖g + weight_decay·θ‖: the gradient of the L2-penalized loss every coupled optimizer
    follows, which is zero at its optimum."""
    grads = [p.grad for p in params]
    if any(g is None for g in grads):
        return math.nan
    with torch.no_grad():
        total = torch._foreach_add(grads, params, alpha=weight_decay)  # type: ignore[arg-type]
        return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(total))))


def _full_gradient_norm(
    model: nn.Module,
    loss_fn: LossFunction,
    data: Split,
    params: list[torch.Tensor],
    l1: float,
    weight_decay: float,
) -> float:
    """The norm of the full-batch gradient at the current parameters, in chunks of rows, for
    mini-batch runs whose recorded gradient is one batch's. `.grad` is left as it was."""
    saved = [None if p.grad is None else p.grad.clone() for p in params]
    n = data.X.shape[0]
    for p in params:
        p.grad = None
    for begin in range(0, n, FULL_GRADIENT_ROWS):
        X = data.X[begin : begin + FULL_GRADIENT_ROWS]
        y = data.y[begin : begin + FULL_GRADIENT_ROWS]
        (loss_fn(model(X), y) * (len(X) / n)).backward()  # type: ignore[no-untyped-call]
    if l1:
        add_l1_gradient(model, l1)
    norm = _penalized_norm(params, weight_decay)
    for p, grad in zip(params, saved, strict=True):
        p.grad = grad
    return norm
