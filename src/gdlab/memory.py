"""Memory a run will need, estimated from the options and the data's shape before anything is
allocated, and refused with the numbers when it does not fit the budget.

The budget is `memory_budget` bytes when given, else MEMORY_FRACTION of the memory the system
reports available (MemAvailable). The estimate counts what scales with the options: the
expanded feature matrix (poly:K), the training tensor, the model's parameters with their
gradients and optimizer state, the full-batch activations of an mlp, the XᵀX statistics
(d² floats) and, for a sweep, one copy of the model per rate. It is deliberately rough (within
a factor of two): its job is to refuse 100 GB before allocating it, not to account for bytes.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gdlab.errors import GdlabError
from gdlab.models import ModelSpec

if TYPE_CHECKING:
    from gdlab.problem import Problem

MEMORY_FRACTION = 0.8
FLOAT64 = 8


def available_bytes() -> int:
    """MemAvailable from /proc/meminfo; on systems without it, no limit is known (a huge
    number), and only an explicit budget applies."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


@dataclass(frozen=True)
class Estimate:
    parts: dict[str, float]  # bytes by what needs them

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def describe(self) -> str:
        largest = sorted(self.parts.items(), key=lambda item: -item[1])[:3]
        return ", ".join(f"{name} {_size(value)}" for name, value in largest if value > 0)


def model_parameters(spec: ModelSpec, inputs: int, outputs: int) -> float:
    """How many numbers the model holds (as a float: widths such as 10^8 overflow nothing)."""
    if spec.kind != "mlp":
        return float(inputs + 1) * outputs
    widths = [inputs, *spec.hidden, outputs]
    return float(sum((a + 1) * b for a, b in itertools.pairwise(widths)))


def estimate_fit(
    spec: ModelSpec,
    *,
    rows: int,
    features: int,
    outputs: int,
    dtype_bytes: int,
    batch_size: int | None,
    least_squares: bool,
    copies: int = 1,
) -> Estimate:
    """Bytes a fit (or a sweep of `copies` rates) needs beyond the data it was given."""
    width = features * spec.degree
    parameters = model_parameters(spec, width, outputs) * copies
    batch = rows if batch_size is None else batch_size
    activations = float(batch) * sum(spec.hidden) * copies * 2 if spec.kind == "mlp" else 0.0
    return Estimate(
        {
            "expanded features": float(rows) * width * FLOAT64 if spec.degree > 1 else 0.0,
            "training tensor": float(rows) * width * dtype_bytes,
            "parameters, gradients and optimizer state": parameters * 4 * dtype_bytes,
            "activations": activations * dtype_bytes,
            "XᵀX statistics": float(width + 2) ** 2 * FLOAT64 * 2 if least_squares else 0.0,
        }
    )


def check_fits(estimate: Estimate, budget: float | None, what: str) -> None:
    """Refuse `what` when its estimate is above the budget, with the numbers and the fix."""
    limit = budget if budget is not None else MEMORY_FRACTION * available_bytes()
    if estimate.total > limit:
        source = (
            "`memory_budget`"
            if budget is not None
            else (f"{MEMORY_FRACTION:.0%} of the {_size(available_bytes())} available")
        )
        raise GdlabError(
            f"{what} needs about {_size(estimate.total)} ({estimate.describe()}), above "
            f"{_size(limit)} ({source}); use a smaller model, fewer rates or features, or "
            f"mini-batches."
        )


def check_problem_fits(problem: Problem, shape: tuple[int, ...], copies: int) -> None:
    """Refuse, before allocating, a model or a sweep of `copies` that cannot fit the budget."""
    from gdlab.problem import EXACT_MAX_WIDTH

    opts, spec = problem.opts, problem.spec
    rows, features = shape
    classes = problem.classes
    outputs = len(classes) if classes and opts.resolved_loss == "cross-entropy" else 1
    estimate = estimate_fit(
        spec,
        rows=rows,
        features=features,
        outputs=outputs,
        dtype_bytes=4 if opts.dtype == "float32" else 8,
        batch_size=opts.batch_size,
        least_squares=spec.is_linear_in_parameters
        and opts.resolved_loss == "mse"
        and features * spec.degree + opts.intercept <= EXACT_MAX_WIDTH,
        copies=copies,
    )
    what = f"model {opts.model}" + (f" with {copies} rates" if copies > 1 else "")
    check_fits(estimate, opts.memory_budget, what)


def _size(value: float) -> str:
    if not math.isfinite(value):
        return "an unbounded amount"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if unit == "B" and value < 1024:
            return f"{value:.0f} B"
        if value < 1024 or unit == "PiB":
            return f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} PiB"
