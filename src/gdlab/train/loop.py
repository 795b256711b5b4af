"""The training loop: batches, steps, stopping rules, the divergence guard and checkpoints.

It computes and returns data (a history, a status and when it stopped); the caller decides what
to print and what to write. Each step is the tutorials' loop: the gradient of a batch (from a
gradient source, `train/sources.py`), the L1 subgradient, the reduction across processes,
optimizer.step(). Everything the loop carries from one step to the next lives in a
`LoopState` (`train/state.py`), so a run stopped anywhere (even inside an epoch) continues bit
for bit. The tests that end a run are the pure functions of `train/rules.py`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch._utils import _unflatten_dense_tensors

from gdlab.history import History
from gdlab.losses import add_l1_gradient
from gdlab.optim.registry import bare_step
from gdlab.optim.schedules import Schedule
from gdlab.train.analytic import AnalyticGradient
from gdlab.train.exact import ExactGradient
from gdlab.train.norms import EpochNorms, Norms, full_gradient_norm, penalized_norm
from gdlab.train.parallel import World
from gdlab.train.record import RawRecord
from gdlab.train.rules import (
    RISE_WINDOW,
    Measure,
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
from gdlab.train.state import Cadence, LoopState, LossFunction, Outcome, Split, Stopping
from gdlab.train.streamed import Batch, StreamedGradient, TensorStream

SEPARATION_EVERY = 100  # epochs between checks that a classifier separates its training rows


class Loop:
    """One run: `run()` trains the model in place from `state` (a fresh start by default) until
    a stop test or `stop()`.

    `stop` is polled after every optimisation step; `checkpoint` is called every
    `checkpoint_every` epochs, and `on_step` after every step. On divergence the parameters
    are rolled back to the last finite ones. `loss_scale` converts recorded losses to the
    target's units (training may run standardized). With `exact` (full-batch least squares)
    the gradients come from sufficient statistics instead of a pass over the rows; with
    `analytic` (linear and logistic models) mini-batch gradients come from closed formulas
    instead of autograd (`train/sources.py`); `reduction` is applied to the parameters'
    gradients before every step (identity in one process); with a data-parallel `world`
    a mini-batch step takes this rank's slice of a global batch of world.size x
    `batch_size` rows, and a full-batch step the rows of `data` (the rank's share). With
    `track_updates` each epoch
    also records every tensor's update ratio ‖Δθ‖/‖θ‖ (what the depth diagnosis reads).
    """

    def __init__(
        self,
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
        on_step: Callable[[], None] | None = None,
        state: LoopState | None = None,
        history: History | None = None,
        stop: Callable[[], bool] | None = None,
        checkpoint: Callable[[LoopState, History], None] | None = None,
        checkpoint_every: int = 0,
        exact: ExactGradient | None = None,
        analytic: AnalyticGradient | None = None,
        reduction: Reduce = no_reduction,
        world: World | None = None,
        track_updates: bool = False,
    ) -> None:
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.schedule, self.data, self.stopping = schedule, data, stopping
        self.generator, self.l1, self.loss_scale, self.record = generator, l1, loss_scale, record
        self.on_epoch, self.on_step = on_epoch, on_step
        self.stop, self.checkpoint = stop, checkpoint
        self.exact, self.reduction, self.track_updates = exact, reduction, track_updates
        self.state = state = state or LoopState()
        self.history = history or History()
        self.cadence = Cadence(checkpoint_every)
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.names = [name for name, _ in named]
        self.params: list[torch.Tensor] = [p for _, p in named]
        self.measure_norms = EpochNorms(self.params)
        self.values = self.measure_norms.values  # detached: what copies write, without autograd
        if state.current is not None:
            _restore(self.values, state.current)
            state.current = None
        self.last_good = [p.clone() for p in self.values]
        self.copied: torch.Tensor | None = None  # or the rollback point, flat (train/norms.py)
        if state.epoch_start is not None:
            _restore(self.last_good, state.epoch_start)
        # Early stopping on validation keeps the best epoch's parameters in buffers made once.
        self.validating = data.X_val is not None
        if self.validating and state.best_params is None:
            state.best_params = [p.clone() for p in self.values]
        self.n = data.X.shape[0]
        self.world = world = world or World()  # a global batch is world.size x batch_size
        self.rank, self.ranks = world.rank, world.size
        self.size = self.n if batch_size is None else batch_size * self.ranks
        self.mini_batch = self.size < self.n
        self.source: GradientSource = (
            exact
            or analytic
            or (StreamedGradient(model, loss_fn, data.stream) if data.stream else None)
            or AutogradGradient(model, loss_fn, data.X, data.y)
        )
        # the epoch's order and its batches: row numbers in memory, a shuffle's seed streamed
        self.order = epoch_order if data.stream is None else TensorStream.epoch_order
        self.batch: Callable[[torch.Tensor, int, int], torch.Tensor | Batch] = (
            self._rows if data.stream is None else data.stream.batch
        )
        self.step = bare_step(optimizer)  # (no profiler wrapper while no step hook is set)

    def run(self) -> Outcome:
        state = self.state
        gradient_test = self.stopping.first_order and self.stopping.tolerances.gtol > 0
        if self.mini_batch and state.start_grad is None and gradient_test:
            state.start_grad = self._full_gradient()  # (a pass over the data: when tested)
        while state.epoch < self.stopping.epochs:
            outcome = self._epoch()
            if outcome is not None:
                return outcome
        if self.stopping.unstable:  # the budget ended above the stability limit
            return self._diverged(state.epoch, math.nan, "unstable_rate", roll_back=False)
        return self._ended("max_epochs")

    def _epoch(self) -> Outcome | None:
        """One epoch: its batches, the divergence guard, the record and the stop tests."""
        state, epoch = self.state, self.state.epoch
        lr = self.schedule(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if state.position == 0:
            if self.copied is None:  # (else the norms' flat copy of last epoch is that point)
                _restore(self.last_good, self.values)  # the point to roll back to on divergence
            state.order = self.order(self.n, self.size, self.generator)
            state.total, state.seen = 0.0, 0
        outcome = self._batches(epoch)
        if outcome is not None:
            return outcome
        state.position, state.order, state.epoch_start = 0, None, None
        train_loss = state.total / state.seen
        previous = state.recent[-1] if state.recent else None
        state.recent = [*state.recent[-(RISE_WINDOW - 1) :], train_loss]
        if state.start_loss is None:
            state.start_loss = train_loss
        state.lowest = min(state.lowest, train_loss)
        test = divergence(train_loss, state.start_loss, state.lowest, state.recent)
        if test is None and self.stopping.rise_diverges and rises(previous, train_loss):
            test = "unstable_rate"
        if test is not None:
            return self._diverged(epoch + 1, train_loss, test)
        norms = self.measure_norms(self.last_good if self.track_updates else None)
        if not norms.finite:
            return self._diverged(epoch + 1, math.inf, "not_finite")
        self.copied = norms.copy
        val_loss, gradient = self._append(epoch, lr, train_loss, self._row(norms), norms)
        outcome = self._stop_tests(train_loss, val_loss, gradient)
        if outcome is not None:
            return outcome
        if self.stop is not None and self.stop():
            return Outcome(Verdict("interrupted"), self.history, state)
        if self.checkpoint is not None and self.cadence.due(state.epoch):
            checkpoint = self.checkpoint
            self.cadence.timed(lambda: checkpoint(state, self.history))
        return None

    def _batches(self, epoch: int) -> Outcome | None:
        """The epoch's steps from `state.position` on; an outcome if it ends inside them."""
        state, n, size = self.state, self.n, self.size
        while state.position < n:
            begin = state.position
            order = state.order
            rows = None if order is None else self.batch(order, begin, size)
            seen = n if rows is None else len(rows)
            if seen:
                value = self.source.step_gradient(rows)
            else:  # a rank whose share of the last global batch is empty
                value = 0.0
                for p in self.params:
                    p.grad = torch.zeros_like(p)
            if self.l1:
                add_l1_gradient(self.model, self.l1)
            value, seen = self.reduction(self.params, value, seen)
            self.step()
            if self.on_step is not None:
                self.on_step()
            if not math.isfinite(value):
                return self._diverged(epoch + 1, value, "not_finite")
            state.total += value * seen
            state.seen += seen
            state.position = min(begin + size, n)
            if state.position < n and self.stop is not None and self.stop():
                state.epoch_start = [t.clone() for t in self._rollback_point()]
                return Outcome(Verdict("interrupted"), self.history, state)
        return None

    def _rows(self, order: torch.Tensor, begin: int, size: int) -> torch.Tensor:
        """The batch's rows on this rank: all of them in one process; in a data-parallel run
        the rank's slice of the global batch (`train/parallel.py`)."""
        end = min(begin + size, self.n)
        if self.ranks > 1:
            share = size // self.ranks
            begin, end = begin + self.rank * share, min(begin + (self.rank + 1) * share, end)
        return order[begin:end].to(self.data.X.device)

    def _row(self, norms: Norms) -> dict[str, float] | None:
        """The recorded parameters (small models): from the entries the norms copied when
        the record is of raw entries, else the record's own (original units)."""
        if isinstance(self.record, RawRecord) and norms.entries is not None:
            return self.record.of(norms.entries)
        return self.record() if self.record else None

    def _append(
        self, epoch: int, lr: float, train_loss: float, row: dict[str, float] | None, norms: Norms
    ) -> tuple[float, float]:
        """Record the epoch in the history; its validation loss and gradient norm."""
        state, stopping = self.state, self.stopping
        if self.exact is not None:
            val_loss = self.exact.validation_loss()
        else:  # (with no validation rows, NaN without a call: a tiny epoch notices)
            val_loss = self._evaluate() if self.validating else math.nan
        layer_norms, ratios = norms.layers, norms.ratios
        gradient = (
            penalized_norm(self.params, stopping.weight_decay)
            if stopping.weight_decay and not self.mini_batch
            else norms.total
        )
        if not self.mini_batch and state.start_grad is None:
            state.start_grad = gradient
        self.history.append(
            epoch + 1,
            train_loss * self.loss_scale,
            val_loss * self.loss_scale,
            lr,
            gradient,
            row,
            dict(zip(self.names, layer_norms, strict=True)) if layer_norms else None,
            dict(zip(self.names, ratios, strict=True)) if ratios else None,
        )
        state.epoch = epoch + 1
        if self.on_epoch is not None:
            self.on_epoch(self.history)
        return val_loss, gradient

    def _stop_tests(self, train_loss: float, val_loss: float, gradient: float) -> Outcome | None:
        """Convergence, separation, early stopping and the stall test, in that order."""
        state, stopping, tolerances = self.state, self.stopping, self.stopping.tolerances
        watched = val_loss if self.validating else train_loss
        if improved(watched, state.best, tolerances.ftol):
            state.best, state.best_epoch, state.waited = watched, state.epoch, 0
            if state.best_params is not None:
                _restore(state.best_params, self.values)
        else:
            state.waited += 1
        measure = None if self.mini_batch else self._measure(gradient)
        if first_order(measure):
            return self._ended("converged", "", "", measure)
        if (
            stopping.separated is not None
            and state.epoch % SEPARATION_EVERY == 0
            and state.waited == 0
            and stopping.separated()
        ):
            return self._ended("separable", "separation", "", measure)
        if state.waited < tolerances.patience:
            return None
        if self.validating:
            return self._ended("early_stopped", "plateau", "validation", measure)
        steady = stopping.assured or stopping.unstable  # converges, or can only diverge
        if steady or falling(state.recent[-tolerances.patience :]):
            return None
        reason = stall_reason(state.recent, epsilon=tolerances.epsilon, mini_batch=self.mini_batch)[
            0
        ]
        return self._ended("stalled", "plateau", reason, measure)

    def _measure(self, epoch_gradient: float) -> Measure | None:
        """The convergence measure of this epoch: distance to θ*, else the gradient norm (a
        mini-batch run measures its full gradient only when asked, at a stall or the end)."""
        stopping, state = self.stopping, self.state
        tolerances = stopping.tolerances
        if stopping.distance is not None:
            threshold = tolerances.distance_threshold(stopping.optimum_norm, stopping.condition)
            return Measure("distance to optimum", stopping.distance(), threshold)
        if not stopping.first_order or state.start_grad is None:
            return None
        threshold = tolerances.gradient_threshold(state.start_grad)
        return Measure("gradient norm", epoch_gradient, threshold)

    def _ended(
        self, status: str, test: str = "", reason: str = "", measure: Measure | None = None
    ) -> Outcome:
        """The verdict, with the first-order measure (taken now if the epoch had none: the
        full gradient of a mini-batch run) and the plateau measure beside their thresholds."""
        history, state = self.history, self.state
        if measure is None and status != "diverged":
            last = (history.grad_norm or [math.nan])[-1]
            if not self.mini_batch or self.stopping.distance is not None:
                measure = self._measure(last)
            elif state.start_grad is not None:  # (else there is no test to measure for)
                measure = self._measure(self._full_gradient())
        if status != "diverged" and first_order(measure):
            assert measure is not None
            status, test, reason = "converged", _test_of(measure), ""
        plateau = Measure(
            "loss improvement", recent_improvement(state.recent), self.stopping.tolerances.ftol
        )
        verdict = Verdict(status, test, reason, [m for m in (measure, plateau) if m is not None])
        if state.best_params is not None:  # with a validation split: end at the best epoch
            state.current = [p.clone() for p in self.values]  # the last, kept aside
            _restore(self.values, state.best_params)
        return Outcome(verdict, history, state)

    def _diverged(self, epoch: int, loss: float, test: str, *, roll_back: bool = True) -> Outcome:
        if roll_back:
            _restore(self.values, self._rollback_point())
        verdict = Verdict("diverged", test)
        return Outcome(verdict, self.history, self.state, diverged_epoch=epoch, diverged_loss=loss)

    def _rollback_point(self) -> list[torch.Tensor]:
        """The parameters when the epoch began: `last_good`, or the norms' flat copy."""
        if self.copied is None:
            return self.last_good
        entries = self.copied[: sum(self.measure_norms.sizes)]
        return list(_unflatten_dense_tensors(entries, self.values))  # type: ignore[no-untyped-call]

    def _full_gradient(self) -> float:
        data, shared = self.data, self.world.parallel and self.data.stream is not None
        return full_gradient_norm(
            self.model, self.loss_fn, data, self.params, self.l1, self.stopping.weight_decay,
            total=self.world.sum if shared else None,
        )  # fmt: skip

    def _evaluate(self) -> float:
        data = self.data
        if data.X_val is None or data.y_val is None:
            return math.nan
        with torch.no_grad():
            if data.val_stream is None:
                return float(self.loss_fn(self.model(data.X_val), data.y_val).item())
            total, rows = 0.0, len(data.val_stream)
            for X, y in data.blocks(validation=True):
                total += float(self.loss_fn(self.model(X), y)) * len(X)
            total, rows = self.world.sum(np.array([total, rows]))  # (every rank's share)
            return float(total / rows)


def _test_of(measure: Measure) -> str:
    return "distance" if measure.name.startswith("distance") else "gradient"


def _restore(targets: list[torch.Tensor], sources: list[torch.Tensor]) -> None:
    """Copy `sources` into `targets` in place (also used to save into preallocated buffers);
    both are detached, so no autograd context is needed."""
    if targets:
        torch._foreach_copy_(targets, sources)  # one call for all tensors
