"""Polynomial expansion and standardization, and the way back to the data's original units."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gdlab.data.arrays import FloatArray, row_blocks


def expand_powers(X: FloatArray, degree: int) -> FloatArray:
    """Columns x, x^2, ..., x^degree for every feature (no interaction terms)."""
    if degree == 1:
        return X
    return np.column_stack([X[:, j] ** k for j in range(X.shape[1]) for k in range(1, degree + 1)])


def constant_columns(values: FloatArray) -> npt.NDArray[np.bool_]:
    """Which columns hold one value in every row (checked block by block)."""
    same = np.ones(values.shape[1], dtype=bool)
    for block in row_blocks(len(values)):
        same &= (values[block] == values[:1]).all(axis=0)
    return same


def power_names(names: list[str], degree: int) -> list[str]:
    if degree == 1:
        return list(names)
    return [name if k == 1 else f"{name}^{k}" for name in names for k in range(1, degree + 1)]


@dataclass
class Scaler:
    """Affine map to the space the model trains in: z = (x - shift) / scale, per column.

    Without an intercept the columns are only scaled (shift 0): centering would add an implicit
    intercept to a model that must pass through the origin. A constant column is zero once
    centered; its scale is set to infinity so that it stays zero on new data too and its
    coefficient in original units is exactly 0.
    """

    shift: FloatArray
    scale: FloatArray

    @classmethod
    def fit(
        cls, values: FloatArray, *, center: bool, enabled: bool, target: bool = False
    ) -> Scaler:
        """Fit to `values` (rows, columns); a constant target keeps scale 1 (nothing vanishes)."""
        width = values.shape[1]
        if not enabled:
            return cls(np.zeros(width), np.ones(width))
        # Moments of values / peak, times peak: no overflow for values up to float64's limit.
        # Each pass goes block by block, so large data is never copied whole.
        blocks, n = row_blocks(len(values)), len(values)
        peak = np.zeros(width)
        for block in blocks:
            np.maximum(peak, np.abs(values[block]).max(axis=0), out=peak)
        peak = np.where(peak > 0, peak, 1.0)
        mean = sum((values[block] / peak).sum(axis=0) for block in blocks) / n
        middle = mean if center else np.zeros(width)
        squares = sum((((values[block] / peak) - middle) ** 2).sum(axis=0) for block in blocks)
        spread = np.sqrt(squares / n) * peak
        shift = mean * peak if center else np.zeros(width)
        vanish = np.inf if center and not target else 1.0
        scale = np.where(constant_columns(values), vanish, np.where(spread > 0, spread, 1.0))
        return cls(shift, scale)

    def transform(self, values: FloatArray) -> FloatArray:
        return (values - self.shift) / self.scale

    def to_dict(self) -> dict[str, Any]:
        return {"shift": self.shift.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Scaler:
        return cls(np.asarray(state["shift"]), np.asarray(state["scale"]))


def original_units(
    weights: FloatArray, bias: FloatArray, x_scaler: Scaler, y_scaler: Scaler
) -> tuple[FloatArray, FloatArray]:
    """Coefficients (outputs, d) and intercepts (outputs,) of the model in the data's own units.

    The trained model is (y - my)/sy = W (x - mx)/sx + b, so y = (sy W / sx) x + my + sy b
    - (sy W / sx) mx.
    """
    coef = weights * (y_scaler.scale[:, None] / x_scaler.scale[None, :])
    intercept = y_scaler.shift + y_scaler.scale * bias - coef @ x_scaler.shift
    return coef, intercept
