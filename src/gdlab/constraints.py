"""Constraints: what an option accepts, as a checker and the words its messages use."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Constraint:
    """What one option accepts: a checker and the words used to describe it in messages."""

    describe: str
    check: Callable[[Any], bool]


def is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def real_in(
    low: float, high: float, *, low_open: bool = False, high_open: bool = True
) -> Constraint:
    """A finite float in an interval; `inf` as a bound means unbounded."""

    def check(value: Any) -> bool:
        if not is_real(value):
            return False
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        return bool(above and below)

    brackets = ("(" if low_open else "[", ")" if high_open else "]")
    return Constraint(f"a float in the range {brackets[0]}{low:g}, {high:g}{brackets[1]}", check)


def int_at_least(low: int) -> Constraint:
    return Constraint(f"an integer >= {low}", lambda v: is_int(v) and v >= low)


def int_between(low: int, high: int) -> Constraint:
    return Constraint(f"an integer from {low} to {high}", lambda v: is_int(v) and low <= v <= high)


def one_of(choices: Sequence[str]) -> Constraint:
    return Constraint("one of " + ", ".join(choices), lambda v: v in choices)


def matches(pattern: re.Pattern[str], forms: str) -> Constraint:
    return Constraint(forms, lambda v: isinstance(v, str) and pattern.match(v) is not None)


def option(default: T, constraint: Constraint, help: str) -> T:
    """A FitOptions field: its default, what it accepts and its help text, declared once (the
    CLI's flags, the estimators' checks and the messages all read them from here)."""
    return dataclasses.field(default=default, metadata={"constraint": constraint, "help": help})
