"""Plain gradient descent on least squares without iterating: any epoch in closed form.

With H = 2G/n the Hessian of the mean squared error (G = AᵀA) and θ* a minimiser, one step of
gradient descent at a constant rate maps θ - θ* to (I - lr·H)(θ - θ*), so after k steps

    θ_k = θ* + V diag(ρ^k) Vᵀ (θ_0 - θ*),      ρ = 1 - lr·λ,   H = V diag(λ) Vᵀ.

The loss, its gradient and the validation loss are then sums of exponentials in k, so a whole
history is a few array operations and `--epochs 1000000000` costs what 1000 does. The run
converges at the first epoch whose distance to θ* is within tolerance (the stop test of
`gdlab.train.rules`, found by bisection); with validation, the loop's early stopping (ftol,
patience) is replayed on the validation losses epoch by epoch, with jumps over runs of improving
epochs, up to EXACT_SCAN epochs; past that it is checked between log-spaced samples. Only
stable rates use this path (|ρ| ≤ 1 for every mode): a diverging run goes through the loop,
which stops it and explains why.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gdlab.data.arrays import FloatArray
from gdlab.history import History
from gdlab.train.exact import LeastSquaresStatistics
from gdlab.train.rules import RISE_WINDOW, Measure, Tolerances, Verdict, recent_improvement

EXACT_SCAN = 1 << 18  # epochs over which the stopping rule is replayed exactly
EVERY_EPOCH = 10_000  # histories up to this long keep every epoch; longer ones are sampled
SAMPLES_PER_DECADE = 200
CHUNK = 1 << 14

Epochs = npt.NDArray[np.int64]


@dataclass
class Modes:
    """Eigen-coordinates of a least-squares problem started at θ_0 with rate lr."""

    vectors: FloatArray  # V, (p, p)
    values: FloatArray  # λ of H = 2G/n
    start: FloatArray  # c = Vᵀ(θ_0 - θ*)
    ratio: FloatArray  # ρ = 1 - lr·λ
    optimum: FloatArray

    @classmethod
    def of(cls, stats: LeastSquaresStatistics, theta0: FloatArray, lr: float) -> Modes:
        values, vectors = np.linalg.eigh(2.0 * stats.gram.numpy() / stats.n)
        values = np.clip(values, 0.0, None)  # G is positive semi-definite: negatives are rounding
        optimum = stats.optimum.numpy()
        return cls(vectors, values, vectors.T @ (theta0 - optimum), 1.0 - lr * values, optimum)

    def at_rate(self, lr: float) -> Modes:
        """The same problem and start at another rate (no new eigendecomposition)."""
        return dataclasses.replace(self, ratio=1.0 - lr * self.values)

    @property
    def stable(self) -> bool:
        return bool(np.all(np.abs(self.ratio) <= 1.0))

    def offsets(self, epochs: Epochs) -> FloatArray:
        """(len(epochs), p): Vᵀ(θ_k - θ*) for each k, computed as ρ^k ∘ c."""
        powers = np.power(self.ratio[None, :], epochs[:, None].astype(np.float64))
        return powers * self.start[None, :]

    def thetas(self, epochs: Epochs) -> FloatArray:
        return self.optimum[None, :] + self.offsets(epochs) @ self.vectors.T

    def train_loss(self, stats: LeastSquaresStatistics, epochs: Epochs) -> FloatArray:
        """Loss at θ_k: loss* + Σ λ_i/2 (ρ_i^k c_i)², no cancellation near the optimum."""
        return stats.least_loss + 0.5 * (self.offsets(epochs) ** 2) @ self.values

    def gradients(self, epochs: Epochs) -> FloatArray:
        """(len(epochs), p): the gradient H(θ_k - θ*) in the parameters' own coordinates."""
        return (self.offsets(epochs) * self.values[None, :]) @ self.vectors.T


def validation_loss(stats: LeastSquaresStatistics, thetas: FloatArray) -> FloatArray:
    offset = thetas - stats.optimum.numpy()[None, :]
    excess: FloatArray = np.einsum("kp,pq,kq->k", offset, stats.gram.numpy(), offset)
    return stats.least_loss + excess / stats.n


@dataclass
class Rule:
    """The loop's stopping rule (tol relative to the best, patience epochs), replayable."""

    tol: float
    patience: int
    best: float = math.inf
    best_epoch: int = 0
    waited: int = 0

    def replay(self, watched: FloatArray, first_epoch: int) -> int | None:
        """Feed watched[i] (the value after epoch first_epoch + i). Returns the number of epochs
        run when the loop would stop before one of these epochs, else None (all consumed)."""
        count = len(watched)
        # Where the value fails to improve on the one just before: the ends of improving runs.
        gain = watched[1:] < watched[:-1] - self.tol * np.abs(watched[:-1])
        run_ends = np.flatnonzero(~gain) + 1
        i = 0
        while i < count:
            if self.waited >= self.patience:
                return first_epoch + i - 1
            threshold = self.best - self.tol * abs(self.best)
            if self.best == math.inf or watched[i] < threshold:
                end = run_ends[np.searchsorted(run_ends, i, side="right") :]
                j = int(end[0]) if end.size else count
                self.best, self.waited = float(watched[j - 1]), 0
                self.best_epoch = first_epoch + j - 1
                i = j
                continue
            window = watched[i : i + self.patience - self.waited]
            hits = np.flatnonzero(window < threshold)
            if hits.size:
                i += int(hits[0])
                continue
            self.waited += len(window)
            i += len(window)
        return None


@dataclass
class ClosedFormRun:
    verdict: Verdict  # converged, early_stopped or max_epochs, with its measures
    epochs_run: int
    theta: FloatArray  # the parameters the run ends with (the best epoch's with validation)
    last_theta: FloatArray  # after the last epoch run
    history: History
    rule: Rule  # the validation rule's state, for a resumed run
    recent: list[float]  # the last training losses, as the loop keeps them


def affine_columns(
    assign: Callable[[FloatArray], None],
    record: Callable[[], dict[str, float]],
    theta: FloatArray,
    precision: type[np.floating[Any]] = np.float64,
) -> Callable[[FloatArray], dict[str, list[float]]]:
    """Turn `record` (the model's parameters in original units, an affine function of θ) into
    columns for many θ at once: measured at θ = 0 and each unit vector, checked at `theta`.
    Each θ is first rounded to `precision`, the model's own, as the model would hold it."""

    def at(point: FloatArray) -> dict[str, float]:
        assign(point)
        return record()

    zero = at(np.zeros(len(theta)))
    names, base = list(zero), np.array(list(zero.values()))
    matrix = np.column_stack(
        [np.array(list(at(unit).values())) - base for unit in np.eye(len(theta))]
    )
    if not np.allclose(base + matrix @ theta, list(at(theta).values()), rtol=1e-9, atol=1e-12):
        raise AssertionError("record() is not affine in the parameters")

    def columns(thetas: FloatArray) -> dict[str, list[float]]:
        values = base[None, :] + thetas.astype(precision).astype(np.float64) @ matrix.T
        return {name: values[:, k].tolist() for k, name in enumerate(names)}

    return columns


def run(
    stats: LeastSquaresStatistics,
    validation: LeastSquaresStatistics | None,
    theta0: FloatArray,
    *,
    lr: float,
    epochs: int,
    tolerances: Tolerances,
    loss_scale: float,
    certify: bool = True,
    record: Callable[[FloatArray], dict[str, list[float]]] | None,
    layers: dict[str, slice],
) -> ClosedFormRun:
    """Plain gradient descent for `epochs` epochs (or until a stop test), all at once.

    The run converges at the first epoch whose distance to θ* is within the threshold (found by
    bisection: the distance never grows at a stable rate); with validation the loop's early
    stopping is replayed on the validation losses up to there. History rows follow the loop's
    conventions: row e holds the loss and gradient norm at the start of epoch e (before its
    step) and the parameters and validation loss after it.
    """
    modes = Modes.of(stats, theta0, lr)
    positive = modes.values[modes.values > 0]
    condition = float(positive.max() / positive.min()) if positive.size else 1.0
    threshold = tolerances.distance_threshold(float(np.linalg.norm(modes.optimum)), condition)
    converged_at = _first_epoch_within(modes, threshold, epochs) if certify else None
    budget = epochs if converged_at is None else converged_at
    rule = Rule(tolerances.ftol, tolerances.patience)
    stopped_at = None if validation is None else _early_stop(modes, validation, rule, budget)
    status = "early_stopped" if stopped_at is not None else "max_epochs"
    if converged_at is not None and (stopped_at is None or converged_at <= stopped_at):
        status, stopped_at = "converged", converged_at
    stopped_at = stopped_at or epochs
    history = _history(modes, stats, validation, stopped_at, lr, loss_scale, record, layers)
    last = modes.thetas(np.array([stopped_at]))[0]
    best = modes.thetas(np.array([rule.best_epoch]))[0] if validation is not None else last
    window = np.arange(max(1, stopped_at - RISE_WINDOW + 1), stopped_at + 1)
    recent = modes.train_loss(stats, window - 1).tolist()
    distance = float(np.linalg.norm(modes.offsets(np.array([stopped_at]))[0]))
    measures = [
        *([Measure("distance to optimum", distance, threshold)] if certify else []),
        Measure("loss improvement", recent_improvement(recent), tolerances.ftol),
    ]
    test = {"converged": "distance", "early_stopped": "plateau"}.get(status, "")
    verdict = Verdict(status, test, "validation" if status == "early_stopped" else "", measures)
    return ClosedFormRun(verdict, stopped_at, best, last, history, rule, recent)


def _early_stop(
    modes: Modes, validation: LeastSquaresStatistics, rule: Rule, budget: int
) -> int | None:
    """The epoch the loop's early stopping would stop at within `budget`, or None: replayed
    on every epoch's validation loss up to EXACT_SCAN, on log-spaced samples past it."""

    def watched(epoch_numbers: Epochs) -> FloatArray:
        return validation_loss(validation, modes.thetas(epoch_numbers))

    for begin in range(1, min(budget, EXACT_SCAN) + 1, CHUNK):
        numbers = np.arange(begin, min(begin + CHUNK, budget + 1, EXACT_SCAN + 1))
        stopped_at = rule.replay(watched(numbers), begin)
        if stopped_at is not None:
            return stopped_at
    stopped_at = _sampled_stop(watched, rule, budget) if budget > EXACT_SCAN else None
    if stopped_at is None and rule.waited >= rule.patience:
        return budget  # the patience ran out on the last epoch itself
    return stopped_at


def _history(
    modes: Modes,
    stats: LeastSquaresStatistics,
    validation: LeastSquaresStatistics | None,
    last: int,
    lr: float,
    loss_scale: float,
    record: Callable[[FloatArray], dict[str, list[float]]] | None,
    layers: dict[str, slice],
) -> History:
    """The rows the loop would have recorded up to epoch `last` (sampled past EVERY_EPOCH)."""
    recorded = _recorded_epochs(last)
    thetas = modes.thetas(recorded)
    val_losses = (
        np.full(len(recorded), math.nan)
        if validation is None
        else validation_loss(validation, thetas) * loss_scale
    )
    gradients = modes.gradients(recorded - 1)
    return History(
        epoch=recorded.tolist(),
        train_loss=(modes.train_loss(stats, recorded - 1) * loss_scale).tolist(),
        val_loss=val_losses.tolist(),
        lr=[lr] * len(recorded),
        grad_norm=np.linalg.norm(gradients, axis=1).tolist(),
        params=record(thetas) if record is not None else {},
        grad_norms={
            name: np.linalg.norm(gradients[:, part], axis=1).tolist()
            for name, part in layers.items()
        },
    )


def _first_epoch_within(modes: Modes, threshold: float, epochs: int) -> int | None:
    """The first epoch k in 1..epochs with ‖θ_k − θ*‖ <= threshold, by bisection (at a stable
    rate every mode's |ρ| <= 1, so the distance never grows), or None."""

    def within(k: int) -> bool:
        return bool(np.linalg.norm(modes.offsets(np.array([k]))[0]) <= threshold)

    if threshold <= 0 or not within(epochs):  # a threshold of 0 turns the test off
        return None
    low, high = 0, epochs  # within(high), and low is 0 or fails
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if within(middle) else (middle, high)
    return high


def _sampled_stop(watched: Callable[[Epochs], FloatArray], rule: Rule, epochs: int) -> int | None:
    """Past EXACT_SCAN the rule sees log-spaced samples: a sample improves on the best by more
    than tol, or counts as no improvement since the best; `patience` epochs of that stop the run."""
    samples = _log_grid(EXACT_SCAN, epochs)
    for epoch, value in zip(samples.tolist(), watched(samples).tolist(), strict=True):
        if value < rule.best - rule.tol * abs(rule.best):
            rule.best, rule.best_epoch, rule.waited = value, int(epoch), 0
            continue
        rule.waited = min(int(epoch) - rule.best_epoch, rule.patience)
        if rule.waited >= rule.patience:
            return min(rule.best_epoch + rule.patience, epochs)
    return None


def _log_grid(first: int, last: int) -> Epochs:
    decades = max(math.log10(last / first), 1e-9)
    grid = np.geomspace(first, last, max(2, int(decades * SAMPLES_PER_DECADE)))
    return np.unique(np.concatenate([np.round(grid).astype(np.int64), [last]]))


def _recorded_epochs(last: int) -> Epochs:
    """Every epoch up to EVERY_EPOCH; past that the first thousand and a log-spaced sample."""
    if last <= EVERY_EPOCH:
        return np.arange(1, last + 1)
    return np.unique(np.concatenate([np.arange(1, 1001), _log_grid(1000, last)]))
