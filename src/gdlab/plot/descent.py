"""The path of gradient descent on a function's curve (one variable) or contours (two)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from gdlab.plot.training import _figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from gdlab.expression import Expression
    from gdlab.tools.descend import Descent

GRID = 200


def evaluate(expression: Expression, grids: list[np.ndarray]) -> np.ndarray:
    values = {
        name: torch.as_tensor(grid, dtype=torch.float64)
        for name, grid in zip(expression.variables, grids, strict=True)
    }
    with torch.no_grad():
        result = torch.as_tensor(expression(values), dtype=torch.float64)
    return np.broadcast_to(result.numpy(), grids[0].shape).astype(float)


def span(values: list[float], margin: float = 0.25) -> tuple[float, float]:
    finite = [v for v in values if np.isfinite(v) and abs(v) < 1e6]
    low, high = (min(finite), max(finite)) if finite else (-1.0, 1.0)
    pad = max(high - low, 1.0) * margin
    return low - pad, high + pad


def descent_figure(
    expression: Expression, paths: list[Descent], minima: list[tuple[float, ...]] | None = None
) -> Figure:
    """The function (curve or contours) and each optimizer's path; `minima` (a named
    surface's) are starred where they fall inside the picture."""
    figure = _figure(7.0, 5.0)
    axes = figure.axes[0]
    if len(expression.variables) == 1:
        low, high = span([p[0] for path in paths for p in path.points])
        grid = np.linspace(low, high, GRID)
        axes.plot(grid, evaluate(expression, [grid]), color="0.3", label=f"f = {expression.text}")
        for path in paths:
            xs = [p[0] for p in path.points]
            axes.plot(xs, path.values, "o-", markersize=3, label=f"{path.optimizer} lr={path.lr:g}")
        axes.set(xlabel=expression.variables[0], ylabel="f")
    else:
        xs = [p[0] for path in paths for p in path.points]
        ys = [p[1] for path in paths for p in path.points]
        X, Y = np.meshgrid(np.linspace(*span(xs), GRID), np.linspace(*span(ys), GRID))
        Z = evaluate(expression, [X, Y])
        shifted = Z - Z.min() + 1e-3 * max(1.0, float(np.ptp(Z)))
        levels = np.geomspace(shifted.min(), shifted.max(), 25)
        axes.contour(X, Y, shifted, levels=levels, cmap="viridis", linewidths=0.8)
        for path in paths:
            axes.plot([p[0] for p in path.points], [p[1] for p in path.points], "o-",
                      markersize=2.5, label=f"{path.optimizer} lr={path.lr:g}")  # fmt: skip
        axes.set(xlabel=expression.variables[0], ylabel=expression.variables[1])
        inside = [
            m for m in minima or [] if X.min() <= m[0] <= X.max() and Y.min() <= m[1] <= Y.max()
        ]
        for k, (x, y) in enumerate(inside):
            axes.plot(x, y, "k*", markersize=13, label="minimum" if k == 0 else None)
    axes.set_title(f"Gradient descent on {expression.text}")
    axes.legend(fontsize=8)
    return figure
