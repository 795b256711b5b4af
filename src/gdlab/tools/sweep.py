"""Many learning rates (and optimizers) trained together: every batch is read once for all.

`sweep` prepares the problem once, trains K stacked copies per optimizer (`tools/stacked.py`:
the same gradient sources and stop tests as the training loop) and labels each run.

With a validation split each copy stops early as a separate run would: when its validation
loss has not improved by tol for patience epochs. The convergence tests (gtol, xtol) are
refused, and tol and patience without a validation split (the stall test): a sweep runs every
rate for the same epochs so that the curves compare.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from gdlab.config import OPTIMIZERS, OPTIONS_BY_NAME, FitOptions, make_options
from gdlab.errors import GdlabError
from gdlab.optim.kinds import kind_of
from gdlab.optim.schedules import make_schedule
from gdlab.problem import Problem, given_data
from gdlab.tools.stacked import StackedCopies, SweepRun, per_copy_loss
from gdlab.train.analytic import LOSSES as ANALYTIC_LOSSES
from gdlab.train.analytic import AnalyticGradient
from gdlab.train.closed_form import Modes
from gdlab.train.exact import LeastSquaresStatistics
from gdlab.train.rules import epoch_order
from gdlab.train.state import LossFunction, Split

__all__ = ["SweepRun", "label", "parse_optimizers", "parse_rates", "sweep"]

SWEEP_EPOCHS = 1000
MAX_RATES = 1000
GOOD_WITHIN = 0.05  # a run within 5% of the best final loss is "good"
OSCILLATING_SHARE = 0.1  # rising in more than 10% of the last half of epochs
STOP_OPTIONS = ("gtol", "xtol", "tol", "patience")  # refused: see the docstring
EARLY_STOPPING = ("tol", "patience")  # ... except these two, with a validation split


def _refuse_stop_options(options: dict[str, Any]) -> None:
    validation = bool(options.get("val_fraction"))
    for name in STOP_OPTIONS:
        if validation and name in EARLY_STOPPING:
            continue
        if name in options and options[name] != OPTIONS_BY_NAME[name].default:
            raise GdlabError(
                f"`{name}` is a stop test, and a sweep has none: it runs every rate for the "
                f"same epochs so that the curves compare (only divergence, or early stopping "
                f"on a `val_fraction` split, ends a run early). Leave `{name}` out, and fit "
                f"the rate you choose with it."
            )


def parse_rates(text: str) -> list[float]:
    """'1e-4:1:16' is 16 rates log-spaced from 1e-4 to 1; 'a,b,c' lists them."""
    try:
        if ":" in text:
            low, high, count = text.split(":")
            if not 1 <= int(count) <= MAX_RATES:
                rates = [math.nan] * 2  # refused below, with the count named
            else:
                rates = np.geomspace(float(low), float(high), int(count)).tolist()
        else:
            rates = [float(part) for part in text.split(",")]
    except ValueError:
        rates = []
    if ":" in text and len(rates) == 2 and math.isnan(rates[0]):
        raise GdlabError(f"--lr {text!r}: a sweep takes 1 to {MAX_RATES} rates.")
    if not rates or not all(math.isfinite(r) and r > 0 for r in rates):
        raise GdlabError(
            f"--lr {text!r}: give LOW:HIGH:COUNT (log-spaced, e.g. 1e-4:1:16) or a comma list of "
            f"positive rates."
        )
    return [float(rate) for rate in rates]


def parse_optimizers(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in OPTIMIZERS]
    if not names or unknown:
        raise GdlabError(
            f"--optimizer {text!r}: unknown {', '.join(unknown) or 'name'}; choose from "
            f"{', '.join(OPTIMIZERS)}."
        )
    return names


def sweep(
    X: Any,
    y: Any,
    *,
    lrs: list[float],
    optimizers: list[str],
    feature_names: list[str] | None = None,
    **options: Any,
) -> tuple[list[SweepRun], Problem]:
    """Train every (optimizer, lr) pair from the same initial point; label each run."""
    options.setdefault("epochs", SWEEP_EPOCHS)  # curves of a fixed length, compared
    _refuse_stop_options(options)
    opts = make_options(**{**options, "lr": 1.0})
    problem = Problem(opts, *given_data(X, y, feature_names), custom_model=None,
                      copies=len(lrs) * len(optimizers))  # fmt: skip
    net, loss_fn, data = problem.initial_problem()
    scale = problem.loss_scale()
    groups = [
        StackedCopies(net, dataclasses.replace(opts, optimizer=name), lrs) for name in optimizers
    ]
    factor = make_schedule(opts.schedule, 1.0, opts.budget)  # the schedule's rate at lr = 1
    n = len(problem.train_rows)
    size = n if opts.batch_size is None else opts.batch_size
    linear = problem.fast_linear(net) is not None
    stats = problem.statistics
    if linear and size >= n and stats is not None and math.isfinite(stats.least_loss):
        validating = len(problem.val_rows) > 0
        validation = problem.least_squares(problem.val_rows) if validating else None
        for group in groups:  # full-batch least squares: no pass over the rows at all
            _least_squares(group, stats, validation, opts, scale, factor)
    elif problem.table is not None:
        raise GdlabError(
            f"{problem.table.source}: a streamed sweep trains full-batch least squares only "
            f"(from XᵀX, no pass per epoch); for this model read the file in memory "
            f"(--no-stream), or run `gdlab fit --stream` once per rate."
        )
    else:
        _iterate(groups, problem, data, loss_fn, factor, linear)
    runs = [run for group in groups for run in group.runs]
    label(runs)
    return runs, problem


def _least_squares(
    group: StackedCopies,
    stats: LeastSquaresStatistics,
    validation: LeastSquaresStatistics | None,
    opts: FitOptions,
    scale: float,
    factor: Callable[[int], float],
) -> None:
    """Full-batch least squares from the sufficient statistics: plain gd or sgd at constant
    rates in closed form (each rate's whole loss curve at once), anything else stepping on
    (2/n)(Gθ - h) for all copies in one product. Losses are recorded before each step, as
    the loop does."""
    constant = (opts.schedule == "constant" and opts.weight_decay == 0 and opts.l1 == 0
                and validation is None)  # fmt: skip
    if kind_of(group.optimizer_name).plain and constant:
        modes = Modes.of(stats, group.theta()[0].numpy(), 1.0)  # one eigendecomposition
        epochs = np.arange(opts.budget)
        for k, run in enumerate(group.runs):
            with np.errstate(over="ignore", invalid="ignore"):
                curve = modes.at_rate(run.lr).train_loss(stats, epochs) * scale
            group.record_curve(k, curve)
        return
    for epoch in range(opts.budget):
        theta = group.theta()
        losses = stats.losses(theta)  # the exact source's formulas, K rows at once
        group.set_gradients(stats.gradient(theta))
        group.advance(factor(epoch))
        group.record(epoch, (losses * scale).tolist())
        if validation is not None:
            after = group.theta()
            group.watch(epoch, [validation.loss(row) for row in after], opts, scale)
        if not group.alive.any():
            return


def _iterate(
    groups: list[StackedCopies],
    problem: Problem,
    data: Split,
    loss_fn: LossFunction,
    factor: Callable[[int], float],
    linear: bool,
) -> None:
    """Every epoch's batches in the loop's order (`rules.epoch_order`), each read once for all
    copies: the analytic source for linear and logistic models, autograd over the stacked
    copies otherwise; divergence and early stopping per copy after each epoch."""
    opts, scale = problem.opts, problem.loss_scale()
    n = data.X.shape[0]
    size = n if opts.batch_size is None else opts.batch_size
    validating = len(problem.val_rows) > 0
    lrs = [run.lr for run in groups[0].runs]
    if validating:
        X_val, y_val = problem.tensors(problem.val_rows, loss_fn, data.X.device)
    analytic = linear and opts.resolved_loss in ANALYTIC_LOSSES
    if analytic:  # the loop's analytic source, K copies wide
        for group in groups:
            group.analytic = AnalyticGradient(group.params["weight"], group.params.get("bias"),
                                              data.X, data.y, opts.resolved_loss, size)  # fmt: skip
    generator = torch.Generator().manual_seed(opts.seed)
    batched_loss = per_copy_loss(loss_fn)
    for epoch in range(opts.budget):
        order = epoch_order(n, size, generator)
        totals = [torch.zeros(len(lrs), dtype=torch.float64) for _ in groups]
        for begin in range(0, n, size):
            rows = None if order is None else order[begin : begin + size].to(data.X.device)
            Xb = data.X if rows is None or analytic else data.X.index_select(0, rows)
            yb = data.y if rows is None or analytic else data.y.index_select(0, rows)
            for group, total in zip(groups, totals, strict=True):
                if group.analytic is not None:
                    losses = group.analytic.gradients(rows)
                    group.silence_dead()
                    group.advance(factor(epoch))
                else:
                    losses = batched_loss(group.outputs(Xb), yb)
                    group.step(losses, factor(epoch))
                total += losses.detach().double().cpu() * (n if rows is None else len(rows))
        for group, total in zip(groups, totals, strict=True):
            group.record(epoch, (total / n * scale).tolist())
            if validating:
                with torch.no_grad():
                    val = batched_loss(group.outputs(X_val), y_val).double().cpu().tolist()
                group.watch(epoch, val, opts, scale)
        if not any(group.alive.any() for group in groups):
            break


def label(runs: list[SweepRun]) -> None:
    """too-small, good, oscillating or diverged, each with the numbers that decided it.

    A run's level is its mean loss over the last tenth of the epochs (mini-batch losses are
    noisy). Good: within 5% of the best level. Otherwise oscillating when the loss rose in
    over 10% of the last half's epochs, and too-small when it is still falling steadily.
    """
    levels = {id(run): _level(run.losses) for run in runs if run.label != "diverged"}
    finite = [level for level in levels.values() if math.isfinite(level)]
    best = min(finite) if finite else math.nan
    for run in runs:
        if run.label in ("diverged", "early_stopped"):
            continue
        level = levels[id(run)]
        losses = np.asarray(run.losses)
        tail = losses[len(losses) // 2 :]
        rises = int(np.sum(np.diff(tail) > 0))
        if level <= best * (1 + GOOD_WITHIN):
            run.label = "good"
            run.reason = f"loss {level:.4g} is within {GOOD_WITHIN:.0%} of the best, {best:.4g}"
        elif rises > OSCILLATING_SHARE * max(1, len(tail) - 1):
            run.label = "oscillating"
            run.reason = (
                f"the loss rose in {rises} of the last {len(tail) - 1} epochs and stays at "
                f"{level / best:.3g}x the best"
            )
        else:
            run.label = "too-small"
            run.reason = (
                f"still falling at the end; loss {level:.4g} is {level / best:.3g}x the best"
            )


def _level(losses: list[float]) -> float:
    if not losses:
        return math.nan
    return float(np.mean(losses[-max(1, len(losses) // 10) :]))
