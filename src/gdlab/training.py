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
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from gdlab.analysis.outcome import explain_outcome
from gdlab.config import AUTO_EPOCHS, make_options
from gdlab.data.arrays import (
    CHUNK_ROWS,
    as_matrix,
    as_vector,
)
from gdlab.errors import GdlabError
from gdlab.history import History
from gdlab.interrupts import Interrupts
from gdlab.losses import make_loss
from gdlab.optim.kinds import kind_of
from gdlab.optim.registry import optimizer_for
from gdlab.optim.schedules import make_schedule
from gdlab.problem import Problem
from gdlab.result import FitResult
from gdlab.train import closed_form
from gdlab.train.analytic import LOSSES as ANALYTIC_LOSSES
from gdlab.train.analytic import AnalyticGradient
from gdlab.train.exact import ExactGradient
from gdlab.train.loop import Loop
from gdlab.train.rules import (
    DETERMINED,
    EPSILON,
    Tolerances,
    Verdict,
    epochs_for_quadratic,
    quadratic_limit,
)
from gdlab.train.state import LoopState, LossFunction, Outcome, Split, Stopping

MAX_AUTO_EPOCHS = 10_000_000
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
    resume: FitResult | None = None,
    classes: list[int] | None = None,
    stop: Callable[[], bool] | None = None,
    checkpoint: Callable[[FitResult], object] | None = None,
    checkpoint_every: int = 0,
    **options: Any,
) -> FitResult:
    """Fit a model by gradient descent; options are those of `gdlab fit` (see `gdlab.FitOptions`).

    `model` is a name (linear, logistic, softmax, poly:K, mlp:H1,H2) or any `torch.nn.Module`
    taking (n, d) inputs; with a module, `loss` may be any callable (outputs, targets) -> loss.

    `resume` continues an earlier result (its model, optimizer, RNG and loop state, scalers and
    classes) up to `epochs`; on the same data this equals one uninterrupted run bit for bit.
    `classes` lists every class label when y may lack some (training on batches of rows).
    `stop` is polled after every step; by default Ctrl-C and SIGTERM stop the run cleanly with
    status "interrupted". `checkpoint` receives a resumable result every `checkpoint_every`
    epochs.

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
    matrix, names = as_matrix(X)
    names = list(feature_names) if feature_names is not None else names
    target = as_vector(y, len(matrix))
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
    if stop is not None:
        return training.run(custom_loss, on_epoch, stop, checkpoint, checkpoint_every)
    with Interrupts() as interrupts:
        return training.run(
            custom_loss, on_epoch, interrupts.requested, checkpoint, checkpoint_every
        )


@torch.no_grad()
def _separates(net: nn.Module, split: Split) -> bool:
    """Whether a classifier puts every training row strictly on its own side: a positive
    margin for one logit (labels 0/1), the true class's logit above all others for softmax."""
    for begin in range(0, len(split.X), CHUNK_ROWS):
        scores = net(split.X[begin : begin + CHUNK_ROWS])
        labels = split.y[begin : begin + CHUNK_ROWS]
        if scores.shape[1] == 1:
            margins = (2 * labels.reshape(-1) - 1) * scores[:, 0]
        else:
            true = scores.gather(1, labels.reshape(-1, 1).long())
            others = scores.scatter(1, labels.reshape(-1, 1).long(), -math.inf)
            margins = (true - others.max(dim=1, keepdim=True).values).reshape(-1)
        if not bool((margins > 0).all()):
            return False
    return True


class Training(Problem):
    """A prepared problem and the run that trains on it."""

    def run(
        self,
        custom_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
        on_epoch: Callable[[History], None] | None,
        stop: Callable[[], bool],
        checkpoint: Callable[[FitResult], object] | None = None,
        checkpoint_every: int = 0,
    ) -> FitResult:
        if isinstance(self.opts.lr, str):
            self._choose_rate()
        if isinstance(self.opts.epochs, str):
            self.opts = dataclasses.replace(self.opts, epochs=self._epoch_budget())
        opts, device, previous = self.opts, self._device(), self.previous
        loss_fn = custom_loss if custom_loss is not None else make_loss(opts.resolved_loss)
        if previous is not None and previous.optimizer and previous.generator:
            net, optimizer, generator = previous.model, previous.optimizer, previous.generator
            net.to(device=device, dtype=getattr(torch, opts.dtype))
            optimizer.load_state_dict(optimizer.state_dict())  # moves its state to the device
            state, history = previous.loop_state or LoopState(), previous.history.copy()
        else:
            net = self._build_model(device)
            optimizer = optimizer_for(opts, net.parameters())
            generator = torch.Generator().manual_seed(opts.seed)
            state, history = LoopState(), History()
        scale = self.loss_scale()
        path, exact, analytic, split = self.gradient_sources(net, loss_fn, device)

        def result(verdict: Verdict, state: LoopState, history: History, message: str) -> FitResult:
            coef, intercept = self._coefficients(net)
            return FitResult(
                model=net,
                history=history,
                status=verdict.status,
                verdict=verdict,
                options=opts,
                feature_names=self.names,
                coef_=coef,
                intercept_=intercept,
                classes_=self.classes,
                message=message,
                warnings=self.warnings,
                curvature=self.curvature,
                x_scaler=self.x_scaler,
                y_scaler=self.y_scaler,
                optimizer=optimizer,
                generator=generator,
                custom_model=self.custom_model is not None,
                loop_state=state,
                fingerprint=self.data_fingerprint if checkpoint is not None else None,
                lr_choice=self.lr_choice,
                path=path,
            )

        def save_point(state: LoopState, history: History) -> None:
            if checkpoint is not None:
                checkpoint(result(Verdict("running"), state, history, ""))

        outcome = self._closed_form(exact, state, history, scale, net) if exact else None
        if outcome is not None:
            path = CLOSED_FORM
            if on_epoch is not None:  # the progress bar and log lines see every recorded row
                outcome.history = outcome.history.replay(on_epoch)
        else:
            outcome = Loop(
                net,
                loss_fn,
                optimizer,
                make_schedule(opts.schedule, opts.rate, opts.budget),
                split,
                self.stopping(exact, net, functools.partial(_separates, net, split)),
                batch_size=opts.batch_size,
                generator=generator,
                l1=opts.l1,
                loss_scale=scale,
                record=self._recorder(net),
                on_epoch=on_epoch,
                state=state,
                history=history,
                stop=stop,
                checkpoint=save_point,
                checkpoint_every=checkpoint_every,
                exact=exact,
                analytic=analytic,
            ).run()
        message = self.explain(outcome, scale)
        final_loss = self._final_loss(net, loss_fn, split, exact) * scale
        if outcome.status in ("max_epochs", "stalled", "separable"):
            self._warn(f"{outcome.status}: {message}")
        return dataclasses.replace(
            result(outcome.verdict, outcome.state, outcome.history, message), loss=final_loss
        )

    @torch.no_grad()
    def _final_loss(
        self, net: nn.Module, loss_fn: LossFunction, split: Split, exact: ExactGradient | None
    ) -> float:
        """The training loss of the model the run keeps (history rows hold each epoch's loss
        before its step): from XᵀX on the exact path, else one pass over the rows in blocks."""
        if exact is not None:
            return exact.train.loss(exact.theta())
        n, total = len(split.X), 0.0
        for begin in range(0, n, CHUNK_ROWS):
            X, y = split.X[begin : begin + CHUNK_ROWS], split.y[begin : begin + CHUNK_ROWS]
            total += float(loss_fn(net(X), y)) * len(X)
        return total / n if n else math.nan

    def tolerances(self) -> Tolerances:
        opts = self.opts
        return Tolerances(opts.gtol, opts.xtol, opts.tol, opts.patience, opts.dtype)

    def stopping(
        self,
        exact: ExactGradient | None,
        net: nn.Module | None = None,
        separation: Callable[[], bool] | None = None,
    ) -> Stopping:
        """The stop tests and what this run knows about itself (see `gdlab.train.rules`)."""
        opts, kind = self.opts, kind_of(self.opts.optimizer)
        # AdamW's decay is not the gradient of any penalty, and L1 has no gradient at 0: no
        # first-order test can hold for them, so such runs stall or run out of epochs.
        first_order = opts.l1 == 0 and (kind.penalty_decay or opts.weight_decay == 0)
        stopping = Stopping(
            opts.budget,
            self.tolerances(),
            weight_decay=opts.weight_decay if kind.penalty_decay else 0.0,
            first_order=first_order,
            separated=separation
            if opts.is_classifier and opts.weight_decay == 0 and opts.l1 == 0
            else None,
        )
        curvature = self.curvature
        if curvature is None or opts.batch_size is not None or self.custom_model is not None:
            return stopping  # not full-batch least squares: the gradient test
        # gd below 2/λmax and heavy-ball or Nesterov momentum below their limits converge on a
        # quadratic from any start, so a slow or oscillating approach is not a stall there;
        # above them the mode along λmax grows, so the run can only diverge.
        steady = opts.schedule == "constant" and opts.l1 == 0
        limit = self._stable_limit() or 0.0
        stopping = dataclasses.replace(
            stopping,
            assured=steady and opts.rate < limit,
            unstable=steady and 0 < limit < opts.rate,
            rise_diverges=steady and kind.plain and 0 < limit < opts.rate,
        )
        # The data determine θ* only to about κ·ε: no test may claim more digits than that.
        if curvature.condition_number * EPSILON["float64"] > DETERMINED:
            self.undetermined = (
                f" The least-squares optimum is determined only to about "
                f"{curvature.condition_number * EPSILON['float64']:.1g} relative (condition "
                f"number {curvature.condition_number:.3g} × float64's ε), fewer than "
                f"{-math.log10(DETERMINED):.0f} digits, so no test can certify convergence: use "
                f"fewer or less correlated features."
            )
            return dataclasses.replace(stopping, first_order=False)
        if exact is None and isinstance(net, nn.Linear) and net.out_features == 1:
            assert self.statistics is not None  # full-batch least squares: θ* was solved
            exact = ExactGradient(net, self.statistics, None)  # to measure ‖θ - θ*‖ only
        if exact is None or not first_order:
            return stopping
        optimum = exact.optimum(stopping.weight_decay)
        return dataclasses.replace(
            stopping,
            distance=functools.partial(exact.distance, optimum),
            optimum_norm=float(torch.linalg.vector_norm(optimum)),
            condition=curvature.condition_number,
        )

    def _epoch_budget(self) -> int:
        """epochs='auto': for full-batch least squares, twice what plain gd at this rate needs
        to reach xtol from λmin (the closed form costs nothing per epoch; capped at 10^7),
        else AUTO_EPOCHS."""
        curvature, opts = self.curvature, self.opts
        if curvature is None or opts.batch_size is not None or curvature.lambda_min <= 0:
            return AUTO_EPOCHS
        needed = epochs_for_quadratic(
            opts.rate, curvature.lambda_min, curvature.lambda_max, max(opts.xtol, 1e-16)
        )
        return int(min(max(AUTO_EPOCHS, 2 * needed), MAX_AUTO_EPOCHS))

    def _stable_limit(self) -> float | None:
        """The optimizer's largest stable rate on the (L2-penalized) least-squares Hessian:
        2/λmax for gd, its momentum forms for momentum and nesterov, none for the others."""
        if self.curvature is None:
            return None
        opts = self.opts
        lambda_max = self.curvature.lambda_max + opts.weight_decay
        return quadratic_limit(opts.optimizer, opts.momentum, lambda_max) or None

    def explain(self, outcome: Outcome, scale: float) -> str:
        """One paragraph on why the run ended as it did (`analysis.outcome`)."""
        return explain_outcome(
            outcome,
            self.opts,
            scale=scale,
            curvature=self.curvature,
            raw_condition=self.raw_condition,
            limit=self._stable_limit(),
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
            validation = self.least_squares(self.val_rows) if len(self.val_rows) else None
            exact = ExactGradient(linear, self.statistics, validation)
        split = self._split(loss_fn, device, shapes_only=exact is not None)
        analytic = None
        mini_batch = batch is not None and batch < len(split.X)
        if linear is not None and mini_batch and loss in ANALYTIC_LOSSES:
            assert batch is not None
            analytic = AnalyticGradient.of(linear, split.X, split.y, loss, batch)
        path = "exact" if exact else "analytic" if analytic else "autograd"
        return path, exact, analytic, split

    def _closed_form(
        self, exact: ExactGradient, state: LoopState, history: History, scale: float, net: nn.Module
    ) -> Outcome | None:
        """Plain gd at a constant, stable rate on a fresh least-squares run: every epoch at once."""
        opts = self.opts
        plain = (
            opts.fast_paths == "auto"
            and kind_of(opts.optimizer).plain
            and opts.schedule == "constant"
            and opts.weight_decay == 0
            and opts.l1 == 0
            and state.epoch == 0
            and state.position == 0
            and len(history) == 0
        )
        if not plain:
            return None
        theta0 = exact.theta().numpy()
        modes = closed_form.Modes.of(exact.train, theta0, opts.rate)
        if not modes.stable:
            return None  # the loop meets the divergence, stops it and explains it
        record = self._recorder(net)
        precision = np.float32 if opts.dtype == "float32" else np.float64
        rows = (
            None
            if record is None
            else closed_form.affine_columns(exact.assign, record, theta0, precision)
        )
        run = closed_form.run(
            exact.train,
            exact.validation,
            theta0,
            lr=opts.rate,
            epochs=opts.budget,
            tolerances=self.tolerances(),
            certify=self.stopping(exact).distance is not None,
            loss_scale=scale,
            record=rows,
            layers=exact.layers(),
        )
        exact.assign(run.last_theta)
        last = [p.detach().clone() for p in net.parameters()]
        if record is not None:  # the last row as the model holds it, digit for digit
            for name, value in record().items():
                run.history.params[name][-1] = value
        exact.assign(run.theta)
        state = LoopState(
            epoch=run.epochs_run,
            start_loss=run.history.train_loss[0] / scale if scale else None,
            best=run.rule.best if exact.validation is not None else run.recent[-1],
            best_epoch=run.rule.best_epoch if exact.validation is not None else run.epochs_run,
            lowest=run.recent[-1],
            waited=run.rule.waited,
            start_grad=run.history.grad_norm[0],
            recent=run.recent,
        )
        if exact.validation is not None:
            state.best_params = [p.detach().clone() for p in net.parameters()]
            state.current = last
        return Outcome(run.verdict, run.history, state)

    def _choose_rate(self) -> None:
        """lr='auto': the curvature's rate for least squares, else the range test's (capped)."""
        if self.custom_model is not None:
            raise GdlabError("lr 'auto' needs a named model; give a number for a custom module.")
        from gdlab.tools.rates import advise_problem

        began = time.perf_counter()
        advice = advise_problem(self, unscaled=False)
        self.opts = dataclasses.replace(self.opts, lr=advice.recommended_lr)
        self.lr_choice = (
            f"lr auto: {advice.recommended_lr:.3g}, {advice.reason} [curvature: {advice.method}; "
            f"the choice took {time.perf_counter() - began:.2g} s]"
        )
        logger.info(self.lr_choice)
