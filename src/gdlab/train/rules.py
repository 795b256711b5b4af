"""When a run stops and what its status means: small pure functions of numbers.

The loop, the closed form and the sweep call these and nothing else, so they cannot disagree.
Every test is measured on the problem as it is trained (standardized, where scales are natural),
each against its own threshold, as SciPy's gtol/xtol/ftol and R's glm.control are:

- converged: a first-order test holds. Either the distance to the exact optimum, where it is
  known (least squares from XᵀX), ‖θ − θ*‖ ≤ xtol · max(‖θ*‖, 1); or the gradient,
  ‖g‖ ≤ max(gtol · ‖g₀‖, floor), with floor what the dtype can resolve.
- diverged: the loss is not finite; or it is above DIVERGENCE_FACTOR × its start; or the lowest
  loss of the last RISE_WINDOW epochs is above RISE_FACTOR × the best; or, for plain gradient
  descent on least squares with lr > 2/λmax, it rises at all (the λmax mode grows every step).
- stalled: the watched loss improved by less than ftol × |best| for `patience` epochs, without
  falling in every one of them, while no first-order test holds (an oscillation, a plateau,
  mini-batch noise, the dtype's precision). A loss that falls every epoch, however slowly, is
  still descending: it runs on to a first-order test or the budget.
- early_stopped: the same on the validation loss: the model of its best epoch is kept.
- separable: a classifier puts every training row on its side while its loss still falls: no
  minimum exists (the loss falls forever and the weights grow), so the run stops there.
- max_epochs: the budget ran out first.

A rising or oscillating loss is never `converged`: convergence is only ever a first-order test.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gdlab.optim.kinds import kind_of

if TYPE_CHECKING:
    import torch

DIVERGENCE_FACTOR = 1000.0  # a loss this many times its start has diverged at once
RISE_FACTOR = 10.0  # ... and one whose whole last RISE_WINDOW epochs sit this far above its best
RISE_WINDOW = 20
FLOOR_FACTOR = 10.0  # the gradient floor: FLOOR_FACTOR × machine epsilon × the start's scale
EPSILON = {"float32": 1.1920929e-07, "float64": 2.220446049250313e-16}
DETERMINED = 1e-6  # least squares whose θ* the data fix to fewer digits (κ·ε above) claim none


@dataclass(frozen=True)
class Tolerances:
    gtol: float  # gradient norm relative to its start
    xtol: float  # distance to θ* relative to ‖θ*‖ (least squares)
    ftol: float  # improvement of the watched loss relative to its best
    patience: int  # epochs without such an improvement before the run stalls
    dtype: str = "float64"

    @property
    def epsilon(self) -> float:
        return EPSILON.get(self.dtype, EPSILON["float64"])

    def gradient_threshold(self, start_norm: float) -> float:
        """gtol × ‖g₀‖, but never below what the dtype can resolve around ‖g₀‖; 0 (the test
        is off) when gtol is 0."""
        if self.gtol == 0:
            return 0.0
        scale = max(start_norm, 1.0) if math.isfinite(start_norm) else 1.0
        return max(self.gtol * start_norm, FLOOR_FACTOR * self.epsilon * scale)

    def distance_threshold(self, optimum_norm: float, condition: float = 1.0) -> float:
        """xtol × max(‖θ*‖, 1), never below the parameters' own rounding nor below how well
        the data determine θ* (κ·ε of float64, the statistics' precision); 0 (off) when xtol
        is 0."""
        if self.xtol == 0:
            return 0.0
        floor = max(FLOOR_FACTOR * self.epsilon, condition * EPSILON["float64"])
        return max(self.xtol, floor) * max(optimum_norm, 1.0)


@dataclass(frozen=True)
class Measure:
    """One stop test's measure beside its threshold; `holds` when measure <= threshold."""

    name: str
    value: float
    threshold: float

    @property
    def holds(self) -> bool:
        return self.threshold > 0 and math.isfinite(self.value) and self.value <= self.threshold

    def to_dict(self) -> dict[str, object]:
        return {
            "value": _finite(self.value),
            "threshold": _finite(self.threshold),
            "holds": self.holds,
        }

    def __str__(self) -> str:
        if math.isnan(self.value):  # (the loss improvement of a run's first epoch)
            return f"{self.name}: not measured yet (test: <= {self.threshold:.3g})"
        sign = "<=" if self.holds else ">"
        return f"{self.name} {self.value:.3g} {sign} {self.threshold:.3g}"


@dataclass
class Verdict:
    """How a run ended: the status, the test that decided it, and every measure."""

    status: str
    test: str = ""  # distance | gradient | plateau | not_finite | rising | growth | unstable_rate
    reason: str = ""  # for stalled: oscillating | plateau | precision | mini_batch_noise
    measures: list[Measure] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "status": self.status,
            "test": self.test,
            "reason": self.reason,
            "measures": {m.name: m.to_dict() for m in self.measures},
        }


def quadratic_limit(optimizer: str, momentum: float, lambda_max: float) -> float:
    """The largest rate at which `optimizer` converges on a quadratic with top eigenvalue
    λmax, from any start: 2/λmax for gd, 2(1+β)/λmax for heavy-ball momentum and
    2(1+β)/((1+2β)λmax) for Nesterov's (torch.optim.SGD's forms); 0 for the adaptive ones,
    whose steps have no such guarantee at a constant rate."""
    if not lambda_max > 0:
        return 0.0
    return kind_of(optimizer).limit_numerator(momentum) / lambda_max


def limit_formula(optimizer: str, momentum: float) -> str:
    """How `quadratic_limit` is written for `optimizer`, for messages."""
    return kind_of(optimizer).limit_formula(momentum)


def first_order_applies(optimizer: str, l1: float, weight_decay: float) -> bool:
    """Whether a first-order test can hold at all: AdamW's decay is not the gradient of any
    penalty, and L1 has no gradient at 0, so runs with them stall or run out of epochs."""
    return l1 == 0 and (kind_of(optimizer).penalty_decay or weight_decay == 0)


def first_order(measure: Measure | None) -> bool:
    """The convergence test: a first-order measure at or below its threshold."""
    return measure is not None and measure.holds


def divergence(
    loss: float, start: float | None, best: float, recent: Sequence[float]
) -> str | None:
    """Which divergence test the epoch's `loss` trips (`recent`: the last losses, newest last),
    or None. A loss that oscillates but comes back down is not diverging."""
    if not math.isfinite(loss):
        return "not_finite"
    if start is not None and start > 0 and loss > DIVERGENCE_FACTOR * start:
        return "growth"
    if len(recent) >= RISE_WINDOW and best > 0 and min(recent[-RISE_WINDOW:]) > RISE_FACTOR * best:
        return "rising"
    return None


def rises(previous: float | None, loss: float) -> bool:
    """Plain gd on a quadratic at a rate above 2/λmax: any rise is the growing mode."""
    return previous is not None and loss > previous


def improved(value: float, best: float, ftol: float) -> bool:
    """Whether `value` improves on `best` by more than ftol × |best| (the plateau test)."""
    return best == math.inf or value < best - ftol * abs(best)


def falling(recent: Sequence[float]) -> bool:
    """Whether every recent epoch lowered the loss: a slow, steady fall is a crawl (more epochs
    or a larger rate will finish it), not a stall."""
    return len(recent) > 1 and all(b < a for a, b in itertools.pairwise(recent))


def recent_improvement(recent: Sequence[float]) -> float:
    """The recent losses' gain on the best before them, relative to it (the plateau measure)."""
    if len(recent) < 2 or not all(map(math.isfinite, recent)):
        return math.nan
    before = min(recent[:-1])
    return max(0.0, (before - min(recent)) / abs(before)) if before else 0.0


def stall_reason(recent: Sequence[float], *, epsilon: float, mini_batch: bool) -> tuple[str, str]:
    """Why the loss stopped improving without a first-order test holding, and what to change.
    `recent` are the last epochs' losses, newest last."""
    rises = sum(b > a for a, b in itertools.pairwise(recent))
    level = max(abs(v) for v in recent) if recent else 0.0
    spread = (max(recent) - min(recent)) if recent else 0.0
    if recent and spread <= 8 * epsilon * level:
        dtype = "float32" if epsilon > 1e-10 else "float64"
        return "precision", (
            f"the loss no longer changes in the digits {dtype} holds (spread {spread:.2g} over "
            f"{len(recent)} epochs): use float64"
            + (" or" if dtype == "float32" else ",")
            + " a larger rate"
        )
    if mini_batch:
        return "mini_batch_noise", (
            "mini-batch noise: the loss stopped improving while the full gradient is not small; "
            "use a decaying schedule, a smaller rate or larger batches"
        )
    if len(recent) > 2 and rises >= max(2, (len(recent) - 1) // 4):
        return "oscillating", (
            f"the loss rose in {rises} of the last {len(recent) - 1} epochs: it oscillates; use a "
            f"smaller rate (or less momentum)"
        )
    return "plateau", (
        "the loss improves too slowly for the patience given (a plateau): raise the patience "
        "or the rate, or loosen ftol"
    )


def epochs_for_quadratic(
    lr: float, lambda_min: float, lambda_max: float, reduction: float
) -> float:
    """Epochs for plain gd at `lr` to shrink the distance to θ* by `reduction` on a quadratic
    whose Hessian spans [λmin, λmax]: the slowest mode contracts by max|1 − lr·λ| per epoch.
    inf when a mode does not contract."""
    if reduction >= 1:
        return 0.0
    if reduction <= 0:
        return math.inf
    slow = -math.log1p(-lr * lambda_min) if 0 < lr * lambda_min < 1 else math.inf
    fast = abs(1 - lr * lambda_max)
    rate = min(slow, -math.log(fast) if 0 < fast < 1 else (math.inf if fast == 0 else 0.0))
    if lambda_min <= 0 or rate <= 0:
        return math.inf
    return float(math.ceil(-math.log(reduction) / rate))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def epoch_order(n: int, batch_size: int, generator: torch.Generator) -> torch.Tensor | None:
    """The order in which an epoch visits the n rows in batches of `batch_size`: None (all
    rows at once, in place) for full batch, else a fresh permutation from `generator`. The
    loop and the sweep both draw it here, so equal seeds give equal batches."""
    if batch_size >= n:
        return None
    import torch  # here, so that the rules stay importable without torch

    return torch.randperm(n, generator=generator)
