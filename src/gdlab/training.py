"""`gdlab.fit`: from arrays and option names to a trained model, in the data's own units.

`Training` is a prepared problem (`gdlab.problem.Problem`) and the run on it: the rate and the
epoch budget when they are 'auto', the gradient source (autograd, exact XᵀX or the analytic
mini-batch formulas), the loop or the closed form, and the verdict with its explanation.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gdlab import shortcut
from gdlab.analysis.gradients import ROWS as GRADIENT_ROWS
from gdlab.analysis.gradients import diagnose, initial_layer_gradients
from gdlab.analysis.outcome import explain_outcome
from gdlab.analysis.separation import separates
from gdlab.analysis.sharpness import ROWS as SHARPNESS_ROWS
from gdlab.analysis.sharpness import SharpnessTracker, tracking_interval
from gdlab.config import make_options
from gdlab.data.arrays import CHUNK_ROWS, fingerprint
from gdlab.data.open import open_data
from gdlab.data.stream import TableFile
from gdlab.errors import GdlabError
from gdlab.history import History
from gdlab.hooks import both, each_step, replayed
from gdlab.interrupts import Interrupts
from gdlab.losses import make_loss
from gdlab.optim.kinds import kind_of
from gdlab.optim.registry import optimizer_for
from gdlab.optim.schedules import make_schedule
from gdlab.problem import Problem, given_data
from gdlab.recording import recorder, result_of
from gdlab.result import FitResult
from gdlab.stops import epoch_budget, stable_limit, stopping_for
from gdlab.train import parallel
from gdlab.train.analytic import LOSSES as ANALYTIC_LOSSES
from gdlab.train.analytic import AnalyticGradient
from gdlab.train.exact import ExactGradient
from gdlab.train.loop import Loop
from gdlab.train.rules import (
    Verdict,
)
from gdlab.train.state import LoopState, LossFunction, Outcome, Split
from gdlab.train.streamed import beside_the_reader

CLOSED_FORM = "closed-form"
logger = logging.getLogger("gdlab")


def fit(
    X: Any,
    y: Any,
    *,
    model: str | nn.Module = "linear",
    loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    feature_names: list[str] | None = None,
    on_epoch: Callable[[History], None] | None = None,
    on_step: Callable[[dict[str, float]], None] | None = None,
    resume: FitResult | None = None,
    classes: list[int] | None = None,
    stop: Callable[[], bool] | None = None,
    checkpoint: Callable[[FitResult], object] | None = None,
    checkpoint_every: int = 0,
    stream: bool | None = None,
    **options: Any,
) -> FitResult:
    """Fit a model by gradient descent; options are those of `gdlab fit` (see `gdlab.FitOptions`).

    X and y are arrays, or X is a CSV or Parquet file and y its target column (`feature_names`
    then chooses the feature columns): the file is read in memory when it fits the memory
    budget and streamed otherwise, or as `stream` says (`gdlab.data.stream`).

    `model` is a name (linear, logistic, softmax, poly:K, mlp:H1,H2) or any `torch.nn.Module`
    taking (n, d) inputs; with a module, `loss` may be any callable (outputs, targets) -> loss.

    `resume` continues an earlier result (its model, optimizer, RNG and loop state, scalers and
    classes) up to `epochs`; on the same data this equals one uninterrupted run bit for bit.
    `classes` lists every class label when y may lack some (training on batches of rows).
    `stop` is polled after every step; by default Ctrl-C and SIGTERM stop the run cleanly with
    status "interrupted". `checkpoint` receives a resumable result every `checkpoint_every`
    epochs. `on_step` receives the recorded parameters (as in `history.params`: models of at
    most 20 parameters) after every update: a mini-batch run's path, step by step.

    Example:
        >>> result = fit([[1.0], [2.0], [3.0], [4.0]], [2.0, 4.0, 6.0, 8.0], lr=0.1, epochs=500)
        >>> round(float(result.coef_[0, 0]), 3)
        2.0
    """
    custom = isinstance(model, nn.Module)
    custom_loss = None if loss is None or isinstance(loss, str) else loss
    opts = make_options(
        model="linear" if custom else model, loss=loss if isinstance(loss, str) else None, **options
    )
    if isinstance(X, (str, os.PathLike)):
        if not isinstance(y, str):
            raise GdlabError("fit(PATH, TARGET): with a file, y names the target column.")
        X = open_data(Path(X), y, feature_names, stream=stream, budget=opts.memory_budget)
        if not isinstance(X, TableFile):
            X, y, feature_names = X
    matrix, target, names = given_data(X, y, feature_names)
    if resume is not None and resume.custom_model != custom:
        raise GdlabError("resume: give the same kind of model (named or nn.Module) as before.")
    training = Training(
        opts,
        matrix,
        target,
        names,
        custom_model=model if isinstance(model, nn.Module) else None,
        previous=resume,
        classes=classes,
    )
    with beside_the_reader(training.table is not None):
        if stop is not None:
            return training.run(
                custom_loss, on_epoch, stop, checkpoint, checkpoint_every, on_step=on_step
            )
        with Interrupts() as interrupts:
            return training.run(custom_loss, on_epoch, interrupts.requested, checkpoint,
                                checkpoint_every, on_step=on_step)  # fmt: skip


class Training(Problem):
    """A prepared problem and the run that trains on it."""

    def run(
        self,
        custom_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
        on_epoch: Callable[[History], None] | None,
        stop: Callable[[], bool],
        checkpoint: Callable[[FitResult], object] | None = None,
        checkpoint_every: int = 0,
        *,
        on_step: Callable[[dict[str, float]], None] | None = None,
    ) -> FitResult:
        world = parallel.current()
        world.agree(self.digest())
        if world.leader:  # one estimate of the rate and budget, broadcast to every rank
            if isinstance(self.opts.lr, str):
                self._choose_rate()
            if isinstance(self.opts.epochs, str):
                self.opts = dataclasses.replace(self.opts, epochs=epoch_budget(self))
        self.opts, self.lr_choice = world.broadcast((self.opts, self.lr_choice))
        opts, device = self.opts, self._device()
        loss_fn = custom_loss if custom_loss is not None else make_loss(opts.resolved_loss)
        net, optimizer, generator, state, history = self._start(device)
        scale = self.loss_scale()
        path, exact, analytic, split = self.gradient_sources(net, loss_fn, device)
        sharded = (
            world.parallel and exact is None and (opts.batch_size is None or bool(split.stream))
        )
        reduction = parallel.Reduction(world, stop, replicated=exact is not None)
        parallel_loop: dict[str, Any] = {}  # (one process: the loop's own defaults)
        if world.parallel:
            stop = reduction.stop  # every rank stops at the same step
            parallel_loop = {"reduction": reduction, "world": world}
        result = functools.partial(
            result_of, self, net, optimizer, generator, keep_fingerprint=checkpoint is not None
        )

        def save_point(state: LoopState, history: History) -> None:
            if checkpoint is not None:
                checkpoint(result(path, Verdict("running"), state, history, ""))

        record, outcome = recorder(self, net), None
        tracker = self._tracker(net, loss_fn, split)
        if tracker is not None:
            on_epoch = both(tracker, on_epoch)
        deep = self.spec.kind == "mlp" and len(self.spec.hidden) >= 2  # depth is the question
        fresh = deep and not len(history)
        initial = initial_layer_gradients(net, loss_fn, *split.head(GRADIENT_ROWS)) if fresh else {}
        if exact is not None and shortcut.applies(self, state, history):
            outcome = shortcut.closed_form_outcome(self, exact, scale, net)
        if outcome is not None:
            path = CLOSED_FORM
            outcome.history = replayed(outcome.history, on_epoch, on_step)
        else:
            began = time.perf_counter()
            outcome = Loop(
                net,
                loss_fn,
                optimizer,
                make_schedule(opts.schedule, opts.rate, opts.budget),
                split,
                stopping_for(self, exact, net, self._separated(net, split, sharded)),
                batch_size=opts.batch_size,
                generator=generator,
                l1=opts.l1,
                loss_scale=scale,
                record=record,
                on_epoch=on_epoch,
                on_step=each_step(on_step, record),
                state=state,
                history=history,
                stop=stop,
                checkpoint=save_point,
                checkpoint_every=checkpoint_every,
                exact=exact,
                analytic=analytic,
                track_updates=deep,
                **parallel_loop,
            ).run()
        message = self._explain_end(outcome, scale, initial)
        ranks = None
        if world.parallel and path != CLOSED_FORM:
            ranks, warning = parallel.scaling(
                world, time.perf_counter() - began, replicated=exact is not None
            )
            if warning:
                self._warn(warning)
        return dataclasses.replace(
            result(path, outcome.verdict, outcome.state, outcome.history, message),
            loss=self._final_loss(net, loss_fn, split, exact, sharded) * scale,
            sharpness=tracker.note(len(split.X)) if tracker is not None else "",
            ranks=ranks,
        )

    def _tracker(
        self, net: nn.Module, loss_fn: LossFunction, split: Split
    ) -> SharpnessTracker | None:
        """λmax during training (`analysis.sharpness`), where the option asks for it."""
        opts = self.opts
        network = self.custom_model is not None or self.spec.kind == "mlp"
        every = tracking_interval(opts.track_sharpness, network=network, budget=opts.budget)
        if not every:
            return None
        bounded = opts.track_sharpness == "auto"  # at most a share of the run's time
        return SharpnessTracker(net, loss_fn, *split.head(SHARPNESS_ROWS), every, bounded=bounded)

    def _explain_end(
        self, outcome: Outcome, scale: float, initial: dict[str, tuple[float, float]]
    ) -> str:
        """Why the run ended (warned for the statuses that need a change), and what the
        depth diagnosis found in a deep network's layers at the start."""
        opts = self.opts
        message = self.explain(outcome, scale)
        if outcome.status in ("max_epochs", "stalled", "separable"):
            self._warn(f"{outcome.status}: {message}")
        depth = diagnose(initial, lr=opts.rate, activation=opts.activation, init=opts.init,
                         update_ratios=outcome.history.update_ratios)  # fmt: skip
        if depth:
            self._warn(depth)
        return message

    def _start(
        self, device: torch.device
    ) -> tuple[nn.Module, torch.optim.Optimizer, torch.Generator, LoopState, History]:
        """The model, optimizer, random stream, loop state and history to continue: the
        previous run's when resuming, else fresh ones from the seed."""
        previous, opts = self.previous, self.opts
        if previous is not None and previous.optimizer and previous.generator:
            net, optimizer, generator = previous.model, previous.optimizer, previous.generator
            net.to(device=device, dtype=getattr(torch, opts.dtype))
            optimizer.load_state_dict(optimizer.state_dict())  # moves its state to the device
            return (
                net,
                optimizer,
                generator,
                previous.loop_state or LoopState(),
                previous.history.copy(),
            )
        net = self._build_model(device)
        optimizer = optimizer_for(opts, net.parameters())
        return net, optimizer, torch.Generator().manual_seed(opts.seed), LoopState(), History()

    def digest(self) -> dict[str, Any]:
        """What every rank of a data-parallel run must share: options, columns, row counts
        and a sample of the values (`train/parallel.py`, World.agree)."""
        sample = self.table.source if self.table is not None else fingerprint(
            self.X[:: max(1, len(self.X) // 1000)], self.y_given[:: max(1, len(self.X) // 1000)]
        )  # fmt: skip
        return {"options": self.opts.to_dict(), "columns": self.names, "data": sample,
                "rows": (len(self.train_rows), len(self.val_rows))}  # fmt: skip

    @staticmethod
    def _separated(net: nn.Module, split: Split, sharded: bool) -> Callable[[], bool]:
        """Whether the classifier separates the training rows: every rank's share, when the
        rows are shared out."""
        if not sharded:
            return functools.partial(separates, net, split)
        world = parallel.current()
        return lambda: world.sum(np.array([float(not separates(net, split))]))[0] == 0

    @torch.no_grad()
    def _final_loss(
        self,
        net: nn.Module,
        loss_fn: LossFunction,
        split: Split,
        exact: ExactGradient | None,
        sharded: bool = False,
    ) -> float:
        """The training loss of the model the run keeps (history rows hold each epoch's loss
        before its step): from XᵀX on the exact path, else one pass over the rows in blocks
        (over every rank's share, when `sharded`)."""
        if exact is not None:
            return exact.train.loss(exact.theta())
        n, total = len(split.stream) if split.stream else len(split.X), 0.0
        for X, y in split.blocks(CHUNK_ROWS):
            total += float(loss_fn(net(X), y)) * len(X)
        if sharded:
            total, n = parallel.current().sum(np.array([total, n]))
        return total / n if n else math.nan

    def explain(self, outcome: Outcome, scale: float) -> str:
        """One paragraph on why the run ended as it did (`analysis.outcome`)."""
        return explain_outcome(
            outcome,
            self.opts,
            scale=scale,
            curvature=self.curvature,
            raw_condition=self.raw_condition,
            limit=stable_limit(self),
            separable=bool(self.separable),
            undetermined=self.undetermined,
        )

    def gradient_sources(
        self, net: nn.Module, loss_fn: LossFunction, device: torch.device
    ) -> tuple[str, ExactGradient | None, AnalyticGradient | None, Split]:
        """Where this run's gradients come from (`train/sources.py`), every rule in one place:
        exact (XᵀX) for full-batch MSE on gdlab's model linear in its parameters when its
        statistics were built (d up to EXACT_MAX_WIDTH, `fast_paths` not off); analytic for
        mini-batches of a one-output linear or logistic model with MSE or BCE; autograd for
        everything else. The exact source needs the rows' shapes only, not the rows."""
        linear, batch, loss = self.fast_linear(net), self.opts.batch_size, self.opts.resolved_loss
        exact = None
        if linear is not None and self.statistics is not None and batch is None:
            rows = self.val_rows
            validation = self.least_squares(rows, shared=True) if len(rows) else None
            exact = ExactGradient(linear, self.statistics, validation)
        split = self._split(loss_fn, device, shapes_only=exact is not None)
        world = parallel.current()
        if world.parallel and exact is None:
            self._share_rows(split, world, batch)
        analytic = None
        mini_batch = batch is not None and batch < len(split.X)
        if linear is not None and mini_batch and loss in ANALYTIC_LOSSES and not split.stream:
            assert batch is not None
            analytic = AnalyticGradient.of(linear, split.X, split.y, loss, batch)
        path = "exact" if exact else "analytic" if analytic else "autograd"
        return path, exact, analytic, split

    @staticmethod
    def _share_rows(split: Split, world: parallel.World, batch: int | None) -> None:
        """Each rank's rows of a data-parallel run (`train/parallel.py`). In memory, full
        batch: its contiguous share (a mini-batch run keeps every row: its ranks slice each
        global batch). Streamed, each reads its row groups: the loop counts this rank's rows
        for a full batch, and for mini-batches the longest rank's batches times the global
        batch, so that every rank steps as often and reads all its rows each epoch."""
        if split.stream is None:
            if batch is None:
                share = world.share(len(split.X))
                split.X, split.y = split.X[share], split.y[share]
            return
        rows = len(split.stream)
        if batch is not None:
            steps = max(world.gather(-(-rows // batch)))
            rows = steps * batch * world.size
        split.X = torch.empty(rows, split.X.shape[1], device="meta")
        split.y = torch.empty(rows, 1, device="meta")

    def _choose_rate(self) -> None:
        """lr='auto': the curvature's rate for least squares, else the range test's (capped)."""
        if self.custom_model is not None:
            raise GdlabError("lr 'auto' needs a named model; give a number for a custom module.")
        from gdlab.tools.rates import advise_problem

        began = time.perf_counter()
        # Least squares with gd or momentum: the curvature alone decides (tools/recommend.py),
        # so the range test, seconds on larger data, is not run.
        decided = (
            self.curvature is not None
            and self.curvature.lambda_max > 0
            and kind_of(self.opts.optimizer).has_limit
        )
        advice = advise_problem(self, unscaled=False, seeds=0 if decided else 3)
        self.opts = dataclasses.replace(self.opts, lr=advice.recommended_lr)
        self.lr_choice = (
            f"lr auto: {advice.recommended_lr:.3g}, {advice.reason} [curvature: {advice.method}; "
            f"the choice took {time.perf_counter() - began:.2g} s]"
        )
        logger.info(self.lr_choice)
