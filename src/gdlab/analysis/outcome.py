"""Why a run ended as it did, in one paragraph with the numbers and what to change: the
message of every verdict but `converged` (see `gdlab.train.rules` for the tests themselves)."""

from __future__ import annotations

import math

from gdlab.analysis.curvature import Curvature
from gdlab.analysis.divergence import explain_divergence
from gdlab.config import FitOptions
from gdlab.optim.kinds import kind_of
from gdlab.train.rules import EPSILON, epochs_for_quadratic, first_order_applies, stall_reason
from gdlab.train.state import Outcome


def explain_outcome(
    outcome: Outcome,
    opts: FitOptions,
    *,
    scale: float,
    curvature: Curvature | None,
    raw_condition: float | None,
    limit: float | None,
    separable: bool,
    undetermined: str,
) -> str:
    """One paragraph on why the run ended as it did, with the numbers and what to change."""
    verdict, state = outcome.verdict, outcome.state
    if verdict.status == "diverged":
        start = state.start_loss
        return explain_divergence(
            epoch=outcome.diverged_epoch or state.epoch,
            loss=(outcome.diverged_loss if outcome.diverged_loss is not None else math.inf) * scale,
            start_loss=None if start is None else start * scale,
            lr=opts.rate,
            optimizer=opts.optimizer,
            momentum=opts.momentum,
            curvature=curvature,
            raw_condition=raw_condition,
            standardized=opts.standardize,
            test=verdict.test,
            limit=limit,
        )
    if verdict.status == "converged":
        return ""
    if verdict.status == "separable":
        return (
            f"the classes are separable: at epoch {state.epoch} the model puts every "
            f"training row on its side, so the loss falls forever and the weights grow "
            f"without a minimum. The model separates the training rows; for a finite "
            f"optimum add a penalty (weight_decay)."
        )
    if verdict.status == "early_stopped":
        return (
            f"Early stopping: the validation loss has not improved by tol={opts.tol:g} "
            f"for {opts.patience} epochs; the model of epoch {state.best_epoch} (its best) is "
            f"kept."
        )
    measured = outcome.verdict.measures and outcome.verdict.measures[0].name != "loss improvement"
    first_order_note = "" if measured else undetermined or _no_first_order_test(opts)
    if verdict.status == "stalled":
        _, advice = stall_reason(
            state.recent,
            epsilon=EPSILON.get(opts.dtype, EPSILON["float64"]),
            mini_batch=opts.batch_size is not None,
        )
        return f"{advice}.{first_order_note}"
    if verdict.status == "max_epochs":
        no_minimum = " The classes are separable, so no minimum exists." if separable else ""
        return (
            f"stopped at the epoch limit ({opts.budget}) before a stop test held.{no_minimum}"
            f"{first_order_note}{_epochs_needed(opts, curvature)}"
        )
    return ""


def _epochs_needed(opts: FitOptions, curvature: Curvature | None) -> str:
    """For plain full-batch gd on least squares: how many epochs the rate needs (from λmin),
    and the rate that needs fewest. (A mini-batch run has no distance test to count for.)"""
    plain = kind_of(opts.optimizer).plain and opts.batch_size is None
    if curvature is None or not plain or curvature.lambda_min <= 0 or not opts.xtol > 0:
        return " Raise the epochs, or the rate."  # (xtol = 0: the distance test is off)

    def needed(lr: float) -> float:  # from a relative distance of 1 down to xtol
        return epochs_for_quadratic(lr, curvature.lambda_min, curvature.lambda_max, opts.xtol)

    best = 2.0 / (curvature.lambda_max + curvature.lambda_min)
    return (
        f" At lr={opts.rate:.3g} reaching xtol needs about {needed(opts.rate):.3g} epochs "
        f"(λmin = {curvature.lambda_min:.3g}); lr={best:.3g} = 2/(λmax+λmin) needs about "
        f"{needed(best):.3g}."
    )


def _no_first_order_test(opts: FitOptions) -> str:
    """Why a run has no first-order measure beside its plateau measure."""
    if not first_order_applies(opts.optimizer, opts.l1, opts.weight_decay):
        return " No first-order test applies with an L1 penalty or AdamW's weight decay."
    if opts.gtol == 0:
        return " The gradient test is off (`gtol=0`): with `gtol` above 0 a run can converge."
    return ""
