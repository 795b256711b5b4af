"""Learning-rate schedules: plain functions of the epoch (0-based) returning the rate."""

from __future__ import annotations

import math
from collections.abc import Callable

Schedule = Callable[[int], float]


def constant(lr: float) -> Schedule:
    return lambda epoch: lr


def step(lr: float, every: int, factor: float) -> Schedule:
    """lr * factor ** (epoch // every)."""
    return lambda epoch: lr * factor ** (epoch // every)


def exponential(lr: float, gamma: float) -> Schedule:
    """lr * gamma ** epoch."""
    return lambda epoch: lr * gamma**epoch


def cosine(lr: float, epochs: int) -> Schedule:
    """lr * (1 + cos(pi * epoch / epochs)) / 2: from lr down to 0 at the last epoch."""
    return lambda epoch: lr * (1 + math.cos(math.pi * epoch / epochs)) / 2


def inverse_scaling(lr: float, power: float) -> Schedule:
    """lr / (epoch + 1) ** power, scikit-learn's 'invscaling' per epoch."""
    return lambda epoch: lr / (epoch + 1) ** power


def make_schedule(spec: str, lr: float, epochs: int) -> Schedule:
    """Resolve 'step:EVERY,FACTOR', 'exponential:GAMMA', ... (arguments optional)."""
    name, _, argument = spec.partition(":")
    values = [float(part) for part in argument.split(",")] if argument else []
    if name == "step":
        every = int(values[0]) if values else max(1, epochs // 4)
        return step(lr, every, values[1] if len(values) > 1 else 0.5)
    if name == "exponential":
        return exponential(lr, values[0] if values else 0.99)
    if name == "cosine":
        return cosine(lr, epochs)
    if name == "inverse-scaling":
        return inverse_scaling(lr, values[0] if values else 0.25)
    return constant(lr)
