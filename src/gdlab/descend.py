"""Gradient descent on a typed-in function of one or two variables, step by step.

Each step is the tutorials' update, with the numbers: a_(t+1) = a_t - lr * f'(a_t) for gd, or
the named torch optimizer's step. Values and gradients come from autograd; the derivative in
symbols comes from sympy, so the printed formula and the numbers check each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import sympy
import torch

from gdlab.errors import GdlabError
from gdlab.expression import SURFACES, Expression
from gdlab.optim.registry import make_optimizer

BLOW_UP = 1e12


@dataclass
class Path:
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
) -> Path:
    names = expression.variables
    params = [torch.tensor(start[name], dtype=torch.float64, requires_grad=True) for name in names]
    step = make_optimizer(optimizer, params, lr=lr, momentum=momentum, weight_decay=0.0)
    path = Path(optimizer, lr)
    for _ in range(steps + 1):
        value = expression(dict(zip(names, params, strict=True)))
        value = torch.as_tensor(value, dtype=torch.float64)
        point = tuple(float(p.detach()) for p in params)
        path.points.append(point)
        path.values.append(float(value.detach()))
        if not math.isfinite(path.values[-1]) or abs(path.values[-1]) > BLOW_UP:
            path.status = "diverged"
            path.message = diverged_message(expression, start, lr, len(path.points) - 1)
            break
        if len(path.points) == steps + 1:
            break
        step.zero_grad()
        if value.requires_grad:
            value.backward()  # type: ignore[no-untyped-call]
        path.gradients.append(tuple(float(p.grad) if p.grad is not None else 0.0 for p in params))
        step.step()
    return path


def diverged_message(expression: Expression, start: dict[str, float], lr: float, step: int) -> str:
    """Why: lr against 2/λmax of the Hessian at the start (exact for a quadratic)."""
    symbols = [sympy.Symbol(name, real=True) for name in expression.variables]
    hessian = sympy.hessian(expression.symbolic, symbols)
    at = {s: start[s.name] for s in symbols}
    matrix = np.array(hessian.subs(at).evalf(), dtype=float)
    largest = float(np.linalg.eigvalsh(matrix).max())
    text = f"diverged at step {step}: f grew past {BLOW_UP:.0e}."
    if largest > 0:
        text += (
            f" The curvature at the start is λmax = {largest:.4g}, so plain gradient descent is "
            f"stable only for lr < 2/λmax = {2 / largest:.4g}; lr = {lr:g} is "
            f"{'above' if lr >= 2 / largest else 'below'} it."
        )
    return text
