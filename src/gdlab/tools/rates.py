"""Learning-rate advice before training: stability limits from the curvature, a range test.

For a quadratic loss with Hessian eigenvalues in [λmin, λmax], gradient descent with rate lr
multiplies the error along each eigenvector by (1 - lr λ): it is stable iff lr < 2/λmax, and the
constant rate 2/(λmax+λmin) contracts fastest. Heavy-ball momentum β is stable up to
2(1+β)/λmax. These limits are exact for least squares (whose Hessian is 2AᵀA/n everywhere) and
describe the initial point of any other model. The range test (`analysis.range_test`) covers
adaptive optimizers, for which no such limit exists.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from gdlab.analysis.curvature import Curvature, least_squares_curvature
from gdlab.analysis.hessian import hessian_spectrum
from gdlab.analysis.range_test import RangeTest, range_test
from gdlab.config import make_options
from gdlab.optim.kinds import kind_of
from gdlab.optim.registry import optimizer_for
from gdlab.problem import Problem, given_data
from gdlab.tools.recommend import predicted_epochs, recommend
from gdlab.train.rules import quadratic_limit

# Rows a network's curvature and full-batch range test are estimated on: evenly spaced, so
# the estimate is deterministic; λmax of a mean loss over 4096 rows is within a few percent of
# the full one, and the choice takes seconds instead of minutes on 10^5 rows.
ESTIMATE_ROWS = 4096


def _estimate_rows(X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str]:
    n = X.shape[0]
    if n <= ESTIMATE_ROWS:
        return X, y, ""
    rows = torch.linspace(0, n - 1, ESTIMATE_ROWS, device=X.device).round().long()
    return X[rows], y[rows], f", on {ESTIMATE_ROWS} evenly spaced rows of {n}"


@dataclass
class RateAdvice:
    """Everything `gdlab lr` reports; `to_dict` is its JSON."""

    optimizer: str
    momentum: float
    method: str
    n_parameters: int
    curvature: Curvature
    raw_curvature: Curvature | None
    recommended_lr: float
    reason: str
    predicted_epochs: int | None
    range_tests: list[RangeTest] = field(default_factory=list)

    @property
    def max_stable_lr(self) -> float:
        return self.curvature.max_stable_lr

    @property
    def max_stable_lr_momentum(self) -> float:
        return self.curvature.max_stable_lr_momentum(self.momentum)

    @property
    def optimal_lr(self) -> float | None:
        """2/(λmax+λmin), the fastest constant rate on a quadratic (needs λmin > 0)."""
        c = self.curvature
        return 2.0 / (c.lambda_max + c.lambda_min) if c.lambda_min > 0 else None

    @property
    def range_suggestion(self) -> float | None:
        values = self._suggestions()
        return statistics.median(values) if values else None

    @property
    def range_spread(self) -> float | None:
        """Largest over smallest suggestion across seeds (1 means the same every time)."""
        values = self._suggestions()
        return max(values) / min(values) if values else None

    def _suggestions(self) -> list[float]:
        values = [test.minimum for test in self.range_tests]
        return [value for value in values if math.isfinite(value)]

    def to_dict(self) -> dict[str, Any]:
        c, raw = self.curvature, self.raw_curvature
        return {
            "recommended_lr": self.recommended_lr,
            "reason": self.reason,
            "optimizer": self.optimizer,
            "momentum": self.momentum,
            "method": self.method,
            "n_parameters": self.n_parameters,
            "lambda_max": c.lambda_max,
            "lambda_min": c.lambda_min,
            "max_stable_lr": self.max_stable_lr,
            "max_stable_lr_momentum": self.max_stable_lr_momentum,
            "optimal_lr": self.optimal_lr,
            "condition_number": _finite(c.condition_number),
            "raw_condition_number": _finite(raw.condition_number) if raw else None,
            "predicted_epochs": self.predicted_epochs,
            "range_test": {
                "rule": "a tenth of the rate at the lowest smoothed loss",
                "suggestion": self.range_suggestion,
                "spread": self.range_spread,
                "seeds": [t.to_dict() for t in self.range_tests],
            },
        }


def advise(
    X: Any,
    y: Any,
    *,
    seeds: int = 3,
    range_steps: int = 100,
    feature_names: list[str] | None = None,
    **options: Any,
) -> RateAdvice:
    """Curvature at the initial point, stability limits, a range test and a recommendation."""
    opts = make_options(**{**options, "lr": "auto"})  # the rate is what is being chosen
    problem = Problem(opts, *given_data(X, y, feature_names), custom_model=None)
    return advise_problem(problem, seeds=seeds, range_steps=range_steps)


def advise_problem(
    problem: Problem, *, seeds: int = 3, range_steps: int = 100, unscaled: bool = True
) -> RateAdvice:
    """The advice; `unscaled` also measures a network's curvature without standardization
    (what `gdlab lr` compares; a second Lanczos run that choosing a rate does not need)."""
    opts = problem.opts
    least_squares = problem.curvature is not None
    raw: Curvature | None
    if problem.curvature is not None:
        curvature = _with_decay(problem.curvature, opts.weight_decay)
        if problem.table is None:
            raw_features, _ = problem.source.take(problem.train_rows)
            unscaled_curvature = least_squares_curvature(raw_features, intercept=opts.intercept)
        else:  # a stream keeps no rows: the same eigenvalues from XᵀX in the data's units
            assert problem.raw_curvature is not None
            unscaled_curvature = problem.raw_curvature
        raw = _with_decay(unscaled_curvature, opts.weight_decay)
        method, n_parameters = "exact: eigenvalues of 2AᵀA/n", problem.width + opts.intercept
    else:
        curvature, raw, method, n_parameters = _network_curvature(problem, unscaled)
    beta = opts.momentum if kind_of(opts.optimizer).momentum else 0.0
    limit = quadratic_limit(opts.optimizer, beta, curvature.lambda_max) or 1.0
    end = max(10.0, 10 * limit)  # the sweep must reach past the predicted limit
    tests = [
        _range_test(problem, seed, range_steps, end) for seed in range(opts.seed, opts.seed + seeds)
    ]
    advice = RateAdvice(
        optimizer=opts.optimizer,
        momentum=opts.momentum,
        method=method,
        n_parameters=n_parameters,
        curvature=curvature,
        raw_curvature=raw,
        recommended_lr=math.nan,
        reason="",
        predicted_epochs=None,
        range_tests=tests,
    )
    advice.recommended_lr, advice.reason = recommend(advice, opts, least_squares)
    if opts.batch_size is None and kind_of(opts.optimizer).has_limit:
        advice.predicted_epochs = predicted_epochs(
            curvature, advice.recommended_lr, opts.optimizer, opts.momentum, opts.tol
        )
    return advice


def _network_curvature(
    problem: Problem, unscaled: bool
) -> tuple[Curvature, Curvature | None, str, int]:
    """Any other model: the Hessian's extreme eigenvalues at the initial point on a sample
    of rows (and, with `unscaled`, without standardization), the method and parameter count."""
    opts = problem.opts
    net, loss_fn, data = problem.initial_problem()
    began = time.perf_counter()
    X, y, sampled = _estimate_rows(data.X, data.y)
    spectrum = hessian_spectrum(net, loss_fn, X, y, weight_decay=opts.weight_decay)
    curvature, n_parameters = spectrum.curvature, spectrum.n_parameters
    method = (
        "exact Hessian (torch.func.hessian)"
        if spectrum.method == "exact"
        else "Lanczos on Hessian-vector products"
    ) + f"{sampled}, {time.perf_counter() - began:.2g} s"
    if spectrum.quality:
        method += f"; {spectrum.quality}"
    raw = None
    if problem.table is not None:  # streamed: the first rows are the sample; no second problem
        method += f"; on the first {len(X)} training rows of the stream"
    elif opts.standardize and unscaled:
        without = Problem(
            dataclasses.replace(opts, standardize=False),
            problem.X,
            problem.y,
            problem.names,
            custom_model=None,
        )
        net, loss_fn, data = without.initial_problem()
        X, y, _ = _estimate_rows(data.X, data.y)
        raw = hessian_spectrum(net, loss_fn, X, y, weight_decay=opts.weight_decay).curvature
    elif not opts.standardize:
        raw = curvature
    return curvature, raw, method, n_parameters


def _range_test(problem: Problem, seed: int, steps: int, end: float) -> RangeTest:
    opts = problem.opts
    net, loss_fn, data = problem.initial_problem(seed)
    optimizer = optimizer_for(dataclasses.replace(opts, lr=1.0), net.parameters())
    n = data.X.shape[0]
    generator = torch.Generator().manual_seed(seed)
    X, y, _ = _estimate_rows(data.X, data.y)

    def batches(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if opts.batch_size is None:
            return X, y
        rows = torch.randint(n, (opts.batch_size,), generator=generator).to(data.X.device)
        return data.X[rows], data.y[rows]

    return range_test(net, loss_fn, optimizer, batches, steps=steps, end=end)


def _with_decay(curvature: Curvature, weight_decay: float) -> Curvature:
    return Curvature(curvature.lambda_max + weight_decay, curvature.lambda_min + weight_decay)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
