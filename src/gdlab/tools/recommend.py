"""The rate gdlab recommends, and the epochs it predicts, from the curvature and the range
test: each choice with the sentence that says why (see `tools/rates.py` for the limits)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from gdlab.analysis.curvature import Curvature
from gdlab.config import FitOptions
from gdlab.models import ModelSpec
from gdlab.optim.kinds import kind_of
from gdlab.train.rules import limit_formula, quadratic_limit

if TYPE_CHECKING:
    from gdlab.tools.rates import RateAdvice

SAFETY = 0.95  # recommendations stay this far inside a stability limit
Choice = tuple[float, str]


def recommend(advice: RateAdvice, opts: FitOptions, least_squares: bool) -> Choice:
    """The recommended rate and the reason: the range test for adaptive optimizers, the exact
    limits for least squares, the initial point's limit and the range test otherwise."""
    c, suggestion = advice.curvature, advice.range_suggestion
    if not kind_of(opts.optimizer).has_limit:
        if suggestion is None:
            return (
                1e-3,
                f"the range test found no falling stretch; 1e-3 is {opts.optimizer}'s usual",
            )
        return suggestion, (
            f"{opts.optimizer} adapts its step per parameter, so no curvature limit applies: "
            f"the range test (a tenth of the rate at its lowest loss) over "
            f"{len(advice.range_tests)} seeds (spread {advice.range_spread:.2g}x)"
        )
    if not c.lambda_max > 0:  # piecewise-linear losses (mae) have no curvature to bound a rate
        rate = suggestion if suggestion is not None else 1e-2
        return rate, "the loss has no curvature at the start (λmax = 0): the range test's rate"
    beta = advice.momentum if kind_of(opts.optimizer).momentum else 0.0
    limit = quadratic_limit(opts.optimizer, beta, c.lambda_max)
    formula = limit_formula(opts.optimizer, beta)
    if least_squares:
        return _least_squares(advice, opts, beta, limit, formula)
    return _initial_point(advice, opts, limit, formula)


def _least_squares(
    advice: RateAdvice, opts: FitOptions, beta: float, limit: float, formula: str
) -> Choice:
    """Least squares: the limits hold everywhere, so the fastest stable rate is known."""
    c = advice.curvature
    if beta > 0:
        kind = "Nesterov" if opts.optimizer == "nesterov" else "heavy-ball"
        return 0.5 * limit, (
            f"half the {kind} limit {formula} = {limit:.3g} (λmax = {c.lambda_max:.3g})"
        )
    if opts.batch_size is not None:
        return 1.0 / c.lambda_max, (
            f"half the full-batch limit 2/λmax = {limit:.3g}: mini-batch gradients are noisy"
        )
    optimal = advice.optimal_lr
    if optimal is not None and optimal < SAFETY * limit:
        return optimal, (
            f"2/(λmax+λmin) = {optimal:.3g}, the fastest constant rate for least squares "
            f"(λmax = {c.lambda_max:.3g}, λmin = {c.lambda_min:.3g})"
        )
    return SAFETY * limit, (
        f"{SAFETY:g} x the stability limit {formula} = {limit:.3g}: the fastest rate "
        f"2/(λmax+λmin) lies within {1 - SAFETY:.0%} of the limit (condition number "
        f"{c.condition_number:.3g})"
    )


def _initial_point(advice: RateAdvice, opts: FitOptions, limit: float, formula: str) -> Choice:
    """Other models: the limit holds at the initial point only; the range test decides within
    it."""
    suggestion, half = advice.range_suggestion, 0.5 * limit
    network = ModelSpec.parse(opts.model).kind == "mlp"
    if network and (suggestion is None or suggestion >= half):
        # A network's curvature grows as it trains (progressive sharpening): past half the
        # initial limit, full-batch runs climb to the edge of stability and oscillate.
        found = "" if suggestion is None else f"the range test suggests {suggestion:.3g}; "
        return half, (
            f"{found}half the stability limit {formula} = {limit:.3g} at the initial point: a "
            f"network's curvature grows as it trains"
        )
    if network and suggestion is not None:
        return suggestion, (
            f"the range test over {len(advice.range_tests)} seeds (spread "
            f"{advice.range_spread:.2g}x), below half the initial limit {formula} = {limit:.3g}"
        )
    if suggestion is None or suggestion < half:
        found = "" if suggestion is None else f"the range test suggests {suggestion:.3g}; "
        return half, (
            f"{found}half the stability limit {formula} = {limit:.3g} at the initial point "
            f"(the curvature changes as the model trains)"
        )
    if suggestion > SAFETY * limit:
        return SAFETY * limit, (
            f"the range test suggests {suggestion:.3g}, above the stability limit {formula} = "
            f"{limit:.3g} at the initial point; {SAFETY:g} x the limit"
        )
    return suggestion, (
        f"the range test over {len(advice.range_tests)} seeds (spread "
        f"{advice.range_spread:.2g}x), inside the stability limit {formula} = {limit:.3g}"
    )


def predicted_epochs(
    curvature: Curvature, lr: float, optimizer: str, beta: float, tol: float
) -> int | None:
    """Epochs until the excess loss has shrunk by `tol`, on the quadratic model of the loss.

    The excess loss along each eigenvector shrinks by ρ(λ)² per epoch, with ρ the spectral
    radius of that mode's update; the slowest mode in [λmin, λmax] decides.
    """
    if curvature.lambda_min <= 0 or tol <= 0 or not math.isfinite(curvature.lambda_max):
        return None
    lambdas = np.geomspace(curvature.lambda_min, curvature.lambda_max, 400)
    worst = max(_mode_rate(lr * value, optimizer, beta) for value in lambdas)
    if worst >= 1:
        return None
    if worst == 0:
        return 1
    return max(1, math.ceil(math.log(tol) / (2 * math.log(worst))))


def _mode_rate(step: float, optimizer: str, beta: float) -> float:
    """Spectral radius of one mode's update, with step = lr x λ."""
    if not kind_of(optimizer).momentum:
        return abs(1 - step)
    if optimizer == "momentum":  # torch: v = βv + g; p -= lr v
        matrix = np.array([[1 - step, -beta], [step, beta]])
    else:  # torch's Nesterov: v = βv + g; p -= lr (g + βv)
        matrix = np.array([[1 - step * (1 + beta), -(beta**2)], [step, beta]])
    return float(np.abs(np.linalg.eigvals(matrix)).max())
