"""Gradient descent on a typed-in function of one or two variables, step by step.

Each step is the tutorials' update, with the numbers: a_(t+1) = a_t - lr * f'(a_t) for gd, or
the named torch optimizer's step. Values and gradients come from autograd; the derivative in
symbols comes from sympy, so the printed formula and the numbers check each other.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch

from gdlab.errors import GdlabError
from gdlab.expression import SURFACES, Expression
from gdlab.optim.registry import make_optimizer

MINIMA: dict[str, list[tuple[float, ...]]] = {  # the named surfaces' (the saddle has none)
    "quadratic-bowl": [(0.0, 0.0)],
    "elongated-bowl": [(0.0, 0.0)],
    "rosenbrock": [(1.0, 1.0)],
    "himmelblau": [
        (3.0, 2.0),
        (-2.805118, 3.131312),
        (-3.779310, -3.283186),
        (3.584428, -1.848126),
    ],
    "saddle": [],
}
REACHED = 1e-4  # within this distance of a minimum counts as reaching it
BLOW_UP = 1e12  # diverged: f moved this many times its starting size (at least 1) away


@dataclass
class Descent:
    """One optimizer's descent: points[t] is the position before step t (after the last one)."""

    optimizer: str
    lr: float
    points: list[tuple[float, ...]] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    gradients: list[tuple[float, ...]] = field(default_factory=list)
    status: str = "finished"
    message: str = ""


def parse_start(text: str | None, expression: Expression, surface: str | None) -> dict[str, float]:
    """'a=0.5' or 'x=-1,y=2'; a named surface has its own default start."""
    if text is None:
        if surface in SURFACES:
            return dict(SURFACES[surface][1])
        return {name: 0.5 for name in expression.variables}
    start: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            start[name.strip()] = float(value)
        except ValueError:
            raise GdlabError(
                f"--start {text!r}: write NAME=VALUE pairs, e.g. a=0.5 or x=-1,y=2."
            ) from None
    missing = [name for name in expression.variables if name not in start]
    extra = [name for name in start if name not in expression.variables]
    if missing or extra or not all(map(math.isfinite, start.values())):
        raise GdlabError(
            f"--start {text!r}: give a finite value for each variable of the expression "
            f"({', '.join(expression.variables)})."
        )
    return start


def descend(
    expression: Expression,
    start: dict[str, float],
    *,
    optimizer: str = "gd",
    lr: float = 0.05,
    steps: int = 50,
    momentum: float = 0.9,
) -> Descent:
    names = expression.variables
    params = [torch.tensor(start[name], dtype=torch.float64, requires_grad=True) for name in names]
    step = make_optimizer(optimizer, params, lr=lr, momentum=momentum, weight_decay=0.0)
    path = Descent(optimizer, lr)
    for _ in range(steps + 1):
        value = expression(dict(zip(names, params, strict=True)))
        value = torch.as_tensor(value, dtype=torch.float64)
        point = tuple(float(p.detach()) for p in params)
        path.points.append(point)
        path.values.append(float(value.detach()))
        if not math.isfinite(path.values[-1]) or _blown_up(path.values):
            path.status = "diverged"
            path.message = diverged_message(expression, start, lr, path.values)
            break
        if len(path.points) == steps + 1:
            break
        step.zero_grad()
        if value.requires_grad:
            value.backward()  # type: ignore[no-untyped-call]
        path.gradients.append(tuple(float(p.grad) if p.grad is not None else 0.0 for p in params))
        step.step()
    return path


def _blown_up(values: list[float]) -> bool:
    """Relative, so that a large constant (a**2 + 10**20) is not a divergence."""
    return abs(values[-1] - values[0]) > BLOW_UP * max(1.0, abs(values[0]))


def diverged_message(
    expression: Expression, start: dict[str, float], lr: float, values: list[float]
) -> str:
    """Why: lr against 2/λmax of the Hessian at the start (exact for a quadratic). The Hessian
    is taken by autograd in float64, not evaluated symbolically: exp(exp(...)) at the start
    has more digits than exact arithmetic can hold, and float64 says inf at once."""
    names = expression.variables

    def value(point: torch.Tensor) -> torch.Tensor:
        result = expression({name: point[i] for i, name in enumerate(names)})
        return torch.as_tensor(result, dtype=torch.float64)

    at = torch.tensor([start[name] for name in names], dtype=torch.float64)
    matrix = torch.autograd.functional.hessian(value, at)  # type: ignore[no-untyped-call]
    finite = bool(torch.isfinite(matrix).all())
    largest = float(torch.linalg.eigvalsh((matrix + matrix.T) / 2).max()) if finite else math.nan
    step, last = len(values) - 1, values[-1]
    text = (
        f"diverged at step {step}: f moved {BLOW_UP:.0e} times its starting size away."
        if math.isfinite(last)
        else f"diverged at step {step}: f = {last} (beyond float64)."
    )
    if largest > 0:
        text += (
            f" The curvature at the start is λmax = {largest:.4g}, so plain gradient descent is "
            f"stable only for lr < 2/λmax = {2 / largest:.4g}; lr = {lr:g} is "
            f"{'above' if lr >= 2 / largest else 'below'} it."
        )
    return text


def reached(path: Descent, surface: str) -> str:
    """For a named surface: whether the path reached a minimum, and if not, why not."""
    if surface not in MINIMA or path.status == "diverged" or not path.points:
        return ""
    minima = MINIMA[surface]
    if not minima:
        return "this surface has no minimum: f falls without bound along y."
    end = path.points[-1]
    nearest = min(minima, key=lambda m: math.dist(m, end))
    where = ", ".join(f"{v:g}" for v in nearest)
    distance = math.dist(nearest, end)
    if distance <= REACHED:
        return f"reached the minimum at ({where}), f = 0, to {distance:.1g}."
    tail = path.values[-max(2, len(path.values) // 10) :]
    falling = all(b <= a for a, b in itertools.pairwise(tail))
    why = (
        f"f was still falling over the last {len(tail) - 1} steps (by {tail[0] - tail[-1]:.3g}): "
        f"the steps are too small for the distance left; use more steps or a larger rate"
        if falling
        else "f no longer falls steadily: the rate is too large for the curvature near the "
        "minimum; use a smaller rate"
    )
    return f"not at the minimum ({where}) yet: {distance:.3g} away; {why}."
