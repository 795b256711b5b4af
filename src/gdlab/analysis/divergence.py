"""One-line explanations of a diverged run, with the numbers that show the cause."""

from __future__ import annotations

import math

from gdlab.analysis.curvature import Curvature
from gdlab.optim.kinds import kind_of
from gdlab.train.rules import (
    DIVERGENCE_FACTOR,
    RISE_FACTOR,
    RISE_WINDOW,
    limit_formula,
    quadratic_limit,
)


def explain_divergence(
    *,
    epoch: int,
    loss: float,
    start_loss: float | None,
    lr: float,
    optimizer: str,
    momentum: float,
    curvature: Curvature | None,
    raw_condition: float | None,
    standardized: bool,
    test: str = "growth",
    limit: float | None = None,
) -> str:
    """Say when the run diverged, which test of `gdlab.train.rules` saw it, and the likely
    cause, e.g. lr against 2/λmax."""
    if test == "unstable_rate" and limit is not None:
        rose = f"the loss rose at epoch {epoch}" if math.isfinite(loss) else "the budget ended"
        if kind_of(optimizer).momentum:
            what = (
                f"lr={lr:g} is above {limit_formula(optimizer, momentum)} = {limit:.4g}, so "
                f"the {optimizer} iteration's mode along λmax grows every epoch and {rose}"
            )
        else:
            growth = abs(1 - lr * 2 / limit)
            what = (
                f"lr={lr:g} is above 2/λmax = {limit:.4g}, so the mode along λmax grows by "
                f"|1 - lr·λmax| = {growth:.4g} every epoch and {rose}"
            )
    elif test == "rising":
        what = (
            f"the loss ({loss:.3g}) has stayed above {RISE_FACTOR:g} times its best for "
            f"{RISE_WINDOW} epochs"
        )
    elif math.isfinite(loss) and start_loss:
        what = (
            f"the loss grew to {loss:.3g}, over {DIVERGENCE_FACTOR:g} times its start "
            f"{start_loss:.3g}"
        )
    else:
        what = "the loss became infinite or NaN"
    parts = [f"Diverged at epoch {epoch}: {what}."]
    if curvature is not None and kind_of(optimizer).has_limit:
        beta = momentum if kind_of(optimizer).momentum else 0.0
        limit = quadratic_limit(optimizer, beta, curvature.lambda_max)
        formula = limit_formula(optimizer, beta)
        verdict = "above" if lr >= limit else "below"
        parts.append(
            f"lr={lr:g} is {verdict} the largest stable rate {formula} = {limit:.3g} "
            f"(λmax = {curvature.lambda_max:.3g} of the loss Hessian);"
            f" try `lr={_round_down(0.5 * limit)}`."
        )
    else:
        parts.append(f"lr={lr:g} is probably too large; try `lr={_round_down(lr / 10)}`.")
    if not standardized and raw_condition is not None and raw_condition > 100:
        parts.append(
            f"The features are not standardized (condition number {raw_condition:.3g}); "
            f"drop `standardize=False`."
        )
    parts.append("The last finite parameters were kept.")
    return " ".join(parts)


def _round_down(value: float) -> str:
    """A rate a person would type: one significant digit, never above `value`."""
    exponent = math.floor(math.log10(value))
    return f"{math.floor(value / 10**exponent) * 10**exponent:.1g}"
