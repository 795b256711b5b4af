"""Curvature of least squares: the Hessian of MSE for a model linear in its parameters.

For L(w, b) = mean((X w + b - y)^2) the Hessian is H = 2 AᵀA / n with A = [X, 1] (no column of
ones without an intercept). It does not depend on w: gradient descent with rate lr is stable iff
lr < 2 / λmax(H), and converges in about κ = λmax / λmin epochs per factor e of error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gdlab.data.arrays import FloatArray

ILL_CONDITIONED = 1e5  # κ above this: plain gradient descent needs millions of epochs


@dataclass(frozen=True)
class Curvature:
    lambda_max: float
    lambda_min: float

    @property
    def condition_number(self) -> float:
        return self.lambda_max / self.lambda_min if self.lambda_min > 0 else float("inf")

    @property
    def max_stable_lr(self) -> float:
        """Largest stable rate of plain gradient descent, 2 / λmax."""
        return 2.0 / self.lambda_max

    def max_stable_lr_momentum(self, beta: float) -> float:
        """Heavy-ball momentum β is stable up to 2 (1 + β) / λmax."""
        return 2.0 * (1.0 + beta) / self.lambda_max


def least_squares_hessian(X: FloatArray, *, intercept: bool) -> FloatArray:
    """2 AᵀA / n, computed in float64."""
    A = np.column_stack([X, np.ones(len(X))]) if intercept else X
    with np.errstate(over="ignore"):  # raw data beyond 1e154: inf, handled by the caller
        return 2.0 * (A.T @ A) / len(A)


def least_squares_curvature(X: FloatArray, *, intercept: bool) -> Curvature:
    return hessian_curvature(least_squares_hessian(X, intercept=intercept))


def hessian_curvature(hessian: FloatArray) -> Curvature:
    """λmax and λmin of a symmetric positive semi-definite Hessian such as 2AᵀA/n, over the
    parameters that move: one whose row is exactly zero (a constant feature once
    standardized, its column of A all zeros) has a gradient of exactly zero at every point,
    so it never moves, and its zero eigenvalue is not the problem's conditioning."""
    if not np.isfinite(hessian).all():  # values near 1e154 or more: their squares overflow
        return Curvature(float("inf"), 0.0)
    moving = np.diag(hessian) != 0  # (positive semi-definite: a zero diagonal, a zero row)
    if moving.any():
        hessian = hessian[np.ix_(moving, moving)]
    eigenvalues = np.linalg.eigvalsh(hessian)
    return Curvature(float(eigenvalues[-1]), max(float(eigenvalues[0]), 0.0))
