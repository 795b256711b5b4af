"""What a run on a prepared problem knows about its end before it starts.

The stop tests it is held to (`Stopping`, the tests themselves in `gdlab.train.rules`), its
epoch budget when epochs='auto', and the optimizer's largest stable rate on least squares.
The loop, the closed form and a stepped run all take them from here.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import torch
from torch import nn

from gdlab.config import AUTO_EPOCHS, FitOptions
from gdlab.optim.kinds import kind_of
from gdlab.problem import Problem
from gdlab.train.exact import ExactGradient
from gdlab.train.rules import (
    DETERMINED,
    EPSILON,
    Tolerances,
    epochs_for_quadratic,
    first_order_applies,
    quadratic_limit,
)
from gdlab.train.state import Stopping

MAX_AUTO_EPOCHS = 10_000_000


def tolerances(opts: FitOptions) -> Tolerances:
    return Tolerances(opts.gtol, opts.xtol, opts.tol, opts.patience, opts.dtype)


def stable_limit(problem: Problem) -> float | None:
    """The optimizer's largest stable rate on the (L2-penalized) least-squares Hessian:
    2/λmax for gd, its momentum forms for momentum and nesterov, none for the others."""
    if problem.curvature is None:
        return None
    opts = problem.opts
    lambda_max = problem.curvature.lambda_max + opts.weight_decay
    return quadratic_limit(opts.optimizer, opts.momentum, lambda_max) or None


def epoch_budget(problem: Problem) -> int:
    """epochs='auto': for full-batch least squares, twice what plain gd at this rate needs
    to reach xtol from λmin (the closed form costs nothing per epoch; capped at 10^7),
    else AUTO_EPOCHS."""
    curvature, opts = problem.curvature, problem.opts
    if curvature is None or opts.batch_size is not None or curvature.lambda_min <= 0:
        return AUTO_EPOCHS
    needed = epochs_for_quadratic(
        opts.rate, curvature.lambda_min, curvature.lambda_max, max(opts.xtol, 1e-16)
    )
    return int(min(max(AUTO_EPOCHS, 2 * needed), MAX_AUTO_EPOCHS))


def stopping_for(
    problem: Problem,
    exact: ExactGradient | None,
    net: nn.Module | None = None,
    separation: Callable[[], bool] | None = None,
) -> Stopping:
    """The stop tests and what this run knows about itself (see `gdlab.train.rules`). Sets
    `problem.undetermined` when the data determine θ* too poorly for any test to certify it."""
    opts, kind = problem.opts, kind_of(problem.opts.optimizer)
    first_order = first_order_applies(opts.optimizer, opts.l1, opts.weight_decay)
    stopping = Stopping(
        opts.budget,
        tolerances(opts),
        weight_decay=opts.weight_decay if kind.penalty_decay else 0.0,
        first_order=first_order,
        separated=separation
        if opts.is_classifier and opts.weight_decay == 0 and opts.l1 == 0
        else None,
    )
    curvature = problem.curvature
    if curvature is None or opts.batch_size is not None or problem.custom_model is not None:
        return stopping  # not full-batch least squares: the gradient test
    # gd below 2/λmax and heavy-ball or Nesterov momentum below their limits converge on a
    # quadratic from any start, so a slow or oscillating approach is not a stall there;
    # above them the mode along λmax grows, so the run can only diverge.
    steady = opts.schedule == "constant" and opts.l1 == 0
    limit = stable_limit(problem) or 0.0
    stopping = dataclasses.replace(
        stopping,
        assured=steady and opts.rate < limit,
        unstable=steady and 0 < limit < opts.rate,
        rise_diverges=steady and kind.plain and 0 < limit < opts.rate,
    )
    # The data determine θ* only to about κ·ε: no test may claim more digits than that.
    if curvature.condition_number * EPSILON["float64"] > DETERMINED:
        problem.undetermined = (
            f" The least-squares optimum is determined only to about "
            f"{curvature.condition_number * EPSILON['float64']:.1g} relative (condition "
            f"number {curvature.condition_number:.3g} × float64's ε), fewer than "
            f"{-math.log10(DETERMINED):.0f} digits, so no test can certify convergence: use "
            f"fewer or less correlated features."
        )
        return dataclasses.replace(stopping, first_order=False)
    if exact is None and isinstance(net, nn.Linear) and net.out_features == 1:
        assert problem.statistics is not None  # full-batch least squares: θ* was solved
        exact = ExactGradient(net, problem.statistics, None)  # to measure ‖θ - θ*‖ only
    if exact is None or not first_order:
        return stopping
    optimum = exact.optimum(stopping.weight_decay)
    return dataclasses.replace(
        stopping,
        distance=functools.partial(exact.distance, optimum),
        optimum_norm=float(torch.linalg.vector_norm(optimum)),
        condition=curvature.condition_number,
    )
