"""The closed-form shortcut: plain gd at a constant, stable rate on a fresh least-squares run
computes every epoch at once (`gdlab.train.closed_form`) instead of looping, and leaves the
model, history and loop state the loop would have left."""

from __future__ import annotations

import numpy as np
from torch import nn

from gdlab.history import History
from gdlab.optim.kinds import kind_of
from gdlab.problem import Problem
from gdlab.recording import recorder
from gdlab.stops import stopping_for, tolerances
from gdlab.train import closed_form
from gdlab.train.exact import ExactGradient
from gdlab.train.state import LoopState, Outcome


def applies(problem: Problem, state: LoopState, history: History) -> bool:
    opts = problem.opts
    return (
        opts.fast_paths == "auto"
        and kind_of(opts.optimizer).plain
        and opts.schedule == "constant"
        and opts.weight_decay == 0
        and opts.l1 == 0
        and state.epoch == 0
        and state.position == 0
        and len(history) == 0
    )


def closed_form_outcome(
    problem: Problem, exact: ExactGradient, scale: float, net: nn.Module
) -> Outcome | None:
    """The whole run at once, or None when the rate is unstable (the loop meets the
    divergence, stops it and explains it)."""
    opts = problem.opts
    theta0 = exact.theta().numpy()
    modes = closed_form.Modes.of(exact.train, theta0, opts.rate)
    if not modes.stable:
        return None
    record = recorder(problem, net)
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
        tolerances=tolerances(opts),
        certify=stopping_for(problem, exact).distance is not None,
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
