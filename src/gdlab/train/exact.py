"""Exact full-batch least squares from sufficient statistics: O(d²) per epoch whatever n is.

For a model linear in its parameters, θ = [w, b], and A = [Z, 1] (no column of ones without an
intercept), the mean squared error and its gradient depend on the data only through
G = AᵀA, h = Aᵀy and n:

    grad = (2/n) (G θ - h),      loss = loss* + (θ - θ*)ᵀ G (θ - θ*) / n

where θ* solves G θ* = h and loss* is the least loss. The loss is written around θ* so that
it has no cancellation near the optimum (the expanded form θᵀGθ - 2θᵀh + yᵀy loses every
digit there). One pass over the rows, block by block and in float64, builds the statistics
(a second gives loss* from the residuals); each epoch then sets the parameters' gradients and
lets the optimizer step, so every optimizer works unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from gdlab.data.arrays import CHUNK_ROWS, FloatArray, row_blocks
from gdlab.data.scaling import Scaler
from gdlab.errors import GdlabError

Blocks = Callable[[], Iterable[tuple[FloatArray, FloatArray]]]


@dataclass
class LeastSquaresStatistics:
    gram: torch.Tensor  # (p, p) = AᵀA, float64
    moment: torch.Tensor  # (p,) = Aᵀy
    n: int
    optimum: torch.Tensor  # θ*, (p,)
    least_loss: float  # mean squared residual at θ*
    intercept: bool

    @classmethod
    @np.errstate(over="ignore")  # an overflow is said once, by _check_finite
    def from_blocks(
        cls,
        blocks: Blocks,
        *,
        intercept: bool,
        scaler: Scaler | None = None,
        solve: bool = True,
        total: Callable[[FloatArray], FloatArray] | None = None,
        width: int | None = None,
        names: list[str] | None = None,
    ) -> LeastSquaresStatistics:
        """One pass over `blocks()`, pairs (features, target) with the target in training
        units and the features raw: the model sees scaler.transform(features). Each block is
        written once into a buffer [z, 1, y] whose Gram matrix (BLAS syrk via numpy) holds
        ZᵀZ, the column sums, Zᵀy, n and yᵀy together. loss* = (yᵀy - θ*ᵀh)/n unless that
        difference is too small to trust (a near-perfect fit), when a second pass sums the
        residuals. Without `solve` (the curvature needs G alone) θ* and loss* are NaN.
        With `total` (a sum over the ranks of a data-parallel run, each passing its share of
        the rows as `blocks`, `width` features wide) the sums are those of every rank's rows."""
        full: FloatArray | None = None
        buffer, n, columns = np.empty(0), 0, width or 0
        for raw, y in blocks():
            if not len(buffer):
                columns = raw.shape[1]
                buffer = np.empty((CHUNK_ROWS, columns + 2))
                buffer[:, columns] = 1.0
            for begin in range(0, len(raw), CHUNK_ROWS):
                rows = raw[begin : begin + CHUNK_ROWS]
                part = buffer[: len(rows)]
                features = part[:, :columns]
                if scaler is not None:
                    scaler.transform_into(rows, features)
                else:
                    features[...] = rows
                part[:, columns + 1] = y[begin : begin + CHUNK_ROWS]
                block = part.T @ part  # numpy sees AᵀA and calls BLAS syrk: half a GEMM
                full = block if full is None else full + block
                n += len(rows)

        def residuals(theta: FloatArray) -> float:
            squared = residual_squares(blocks, theta, intercept, scaler)
            return squared if total is None else float(total(np.array([squared]))[0])

        if total is not None:
            assert columns, "the width of a rank's share, which may hold no rows"
            full = total(full if full is not None else np.zeros((columns + 2, columns + 2)))
            n = round(float(full[columns, columns]))  # the ones column's square: the row count
        assert full is not None, "no rows"
        return cls.from_full(
            full, n, intercept=intercept, solve=solve, residuals=residuals, names=names
        )

    @classmethod
    def from_full(
        cls,
        full: FloatArray,
        n: int,
        *,
        intercept: bool,
        solve: bool,
        residuals: Callable[[FloatArray], float],
        names: list[str] | None = None,
    ) -> LeastSquaresStatistics:
        """From the Gram matrix of [z, 1, y] over n rows (features in training space, the
        target in training units); `residuals(θ*)` sums the squared residuals by a pass over
        the rows when yᵀy - θ*ᵀh is too small to trust."""
        width = len(full) - 2
        _check_finite(full, names)
        squares = float(full[width + 1, width + 1])
        inputs = list(range(width + 1)) if intercept else list(range(width))
        gram, moment = full[np.ix_(inputs, inputs)], full[inputs, width + 1]
        if not solve:
            nothing = torch.full((len(moment),), math.nan, dtype=torch.float64)
            return cls(torch.from_numpy(gram), torch.from_numpy(moment), n, nothing, math.nan,
                       intercept)  # fmt: skip
        optimum = np.asarray(np.linalg.lstsq(gram, moment, rcond=None)[0], dtype=np.float64)
        least = squares - float(optimum @ moment)
        if not least > 1e-4 * squares:  # cancellation would cost digits: sum the residuals
            least = residuals(optimum)
        return cls(
            torch.from_numpy(gram),
            torch.from_numpy(moment),
            n,
            torch.from_numpy(optimum),
            max(least, 0.0) / n,
            intercept,
        )

    @classmethod
    def from_rows(
        cls, X: torch.Tensor | FloatArray, y: torch.Tensor | FloatArray, *, intercept: bool
    ) -> LeastSquaresStatistics:
        """From whole arrays (n, d) and (n, 1), in float64."""
        features = torch.as_tensor(X).double().cpu().numpy()
        target = torch.as_tensor(y).double().cpu().numpy()[:, 0]

        def blocks() -> Iterable[tuple[FloatArray, FloatArray]]:
            return ((features[b], target[b]) for b in row_blocks(len(features)))

        return cls.from_blocks(blocks, intercept=intercept)

    def loss(self, theta: torch.Tensor) -> float:
        return float(self.losses(theta))

    def losses(self, theta: torch.Tensor) -> torch.Tensor:
        """The mean squared error at θ (p,), or at each row of θ (K, p): loss* + δᵀGδ/n."""
        offset = theta - self.optimum
        return self.least_loss + ((offset @ self.gram) * offset).sum(-1) / self.n

    def gradient(self, theta: torch.Tensor) -> torch.Tensor:
        """(2/n)(Gθ - h) at θ (p,), or at each row of θ (K, p) (G is symmetric)."""
        return (2.0 / self.n) * (theta @ self.gram - self.moment)


class ExactGradient:
    """Sets an nn.Linear's gradients from the statistics and returns the loss before the step.
    Every step is full batch, so `step_gradient` ignores the rows the loop passes."""

    def __init__(self, model: nn.Linear, train: LeastSquaresStatistics,
                 validation: LeastSquaresStatistics | None) -> None:  # fmt: skip
        self.model, self.train, self.validation = model, train, validation

    def theta(self) -> torch.Tensor:
        """A float64 copy of θ = [w, b] (never a view of the parameters)."""
        weight = self.model.weight.detach()[0].double().cpu()
        if self.model.bias is None:
            return weight.clone()
        return torch.cat([weight, self.model.bias.detach().double().cpu()])

    @torch.no_grad()
    def assign(self, theta: np.ndarray | torch.Tensor) -> None:
        """Set the model's parameters to θ = [w, b]."""
        theta = torch.as_tensor(theta)
        weight = self.model.weight
        width = weight.shape[1]
        weight.copy_(theta[:width].view_as(weight))
        if self.model.bias is not None:
            self.model.bias.copy_(theta[width:].view_as(self.model.bias))

    def layers(self) -> dict[str, slice]:
        """Where each parameter tensor sits in θ."""
        width = self.model.weight.shape[1]
        parts = {"weight": slice(0, width)}
        return parts | ({"bias": slice(width, width + 1)} if self.model.bias is not None else {})

    def step_gradient(self, rows: torch.Tensor | None = None) -> float:
        theta = self.theta()
        gradient = self.train.gradient(theta)
        weight = self.model.weight
        width = weight.shape[1]
        weight.grad = gradient[:width].to(weight.dtype).to(weight.device).view_as(weight)
        if self.model.bias is not None:
            bias = self.model.bias
            bias.grad = gradient[width:].to(bias.dtype).to(bias.device).view_as(bias)
        return self.train.loss(theta)

    def validation_loss(self) -> float:
        return float("nan") if self.validation is None else self.validation.loss(self.theta())

    def optimum(self, weight_decay: float = 0.0) -> torch.Tensor:
        """θ* of the training loss, plus (weight_decay/2)‖θ‖² when given: the point where
        (2/n)(Gθ - h) + weight_decay·θ = 0, which every L2-coupled optimizer approaches."""
        if weight_decay == 0:
            return self.train.optimum
        stats = self.train
        hessian = (2.0 / stats.n) * stats.gram + weight_decay * torch.eye(
            len(stats.moment), dtype=torch.float64
        )
        optimum: torch.Tensor = torch.linalg.solve(hessian, (2.0 / stats.n) * stats.moment)
        return optimum

    def distance(self, optimum: torch.Tensor) -> float:
        """‖θ - θ*‖ in training space: the least-squares convergence measure."""
        return float(torch.linalg.vector_norm(self.theta() - optimum))


def residual_squares(
    blocks: Blocks,
    optimum: FloatArray,
    intercept: bool,
    scaler: Scaler | None,
) -> float:
    """Σ (y - ŷ)² at θ*, on the raw features: (x - shift)/scale · w = x · (w/scale) - c."""
    weights, bias = (optimum[:-1], float(optimum[-1])) if intercept else (optimum, 0.0)
    if scaler is not None:
        weights = weights / scaler.scale
        bias -= float(scaler.shift @ weights)
    squared = 0.0
    for raw, y in blocks():
        residual = y - raw @ weights - bias
        squared += float(residual @ residual)
    return squared


def _check_finite(full: FloatArray, names: list[str] | None) -> None:
    """A Gram matrix that overflowed (from finite data) stops the run, naming the column."""
    if np.isfinite(full).all():
        return
    width = len(full) - 2
    features = names if names is not None else [f"feature {i + 1}" for i in range(width)]
    labels = [*features, "the intercept's column", "the target"]
    k = int(np.flatnonzero(~np.isfinite(full).all(axis=0))[0])
    raise GdlabError(
        f"the squares of {labels[k]} overflow float64 (values beyond about 1e154 in training "
        f"space): keep the features standardized (drop --no-standardize), or rescale the "
        f"column before fitting."
    )
