"""The loss over a plane of two parameters, on a run's own data, the others held at their final
values: the surface the run's path crossed.

The grid covers the whole path, from the initial point to the last epoch, with a margin.
Linear models (linear, poly, logistic, softmax) are evaluated in the data's units with the
coefficients the history records, on every training row (in blocks; an evenly spaced sample of
LINEAR_ROWS above that, stated), so the surface and the path share coordinates and the value
at the final point is the run's reported training loss. Models recorded by raw parameters
(small MLPs) are evaluated through the model itself on up to MODULE_ROWS rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gdlab.data.arrays import FloatArray
from gdlab.errors import GdlabError
from gdlab.problem import Problem
from gdlab.result import FitResult

LINEAR_ROWS = 200_000  # rows a linear model's surface is evaluated on (all, up to this)
MODULE_ROWS = 20_000  # rows a network's surface is evaluated on: 3,600 forward passes
BLOCK_CELLS = 1 << 22  # grid points x rows evaluated at once (bounded memory)
MARGIN = 0.15  # of the path's extent, on each side


@dataclass(frozen=True)
class Surface:
    names: tuple[str, str]
    a: FloatArray  # grid values of the first parameter (columns)
    b: FloatArray  # grid values of the second (rows)
    loss: FloatArray  # (len(b), len(a))
    rows: int = 0  # training rows the loss was evaluated on ...
    of_rows: int = 0  # ... of this many
    final_loss: float = float("nan")  # the loss at the final point, by the same evaluation

    @property
    def lowest(self) -> tuple[float, float]:
        """The grid point of least loss."""
        j, i = np.unravel_index(int(np.nanargmin(self.loss)), self.loss.shape)
        return float(self.a[i]), float(self.b[j])

    @property
    def sampled(self) -> str:
        """'' on every training row, else how many were used."""
        if self.rows >= self.of_rows:
            return ""
        return f"{self.rows:,} of {self.of_rows:,} training rows (evenly spaced)"


def default_pair(result: FitResult) -> tuple[str, str]:
    """The first weight and the bias, as the tutorial plots them."""
    names = list(result.history.params)
    weights = [
        n for n in names if n.startswith("coef[") or ".weight[" in n or n.startswith("weight[")
    ]
    biases = [n for n in names if n.startswith("intercept") or "bias[" in n]
    if not weights or not biases:
        if len(names) < 2:
            raise GdlabError(
                "this run recorded no per-epoch parameters (models above 20 parameters do not); "
                "there is no path to draw a surface for."
            )
        return names[0], names[1]
    return weights[0], biases[0]


def check_pair(result: FitResult, pair: tuple[str, str]) -> None:
    for name in pair:
        if name not in result.history.params:
            raise GdlabError(
                f"--params: {name!r} is not a recorded parameter; choose from "
                f"{', '.join(result.history.params)}."
            )


def loss_surface(
    problem: Problem,
    result: FitResult,
    pair: tuple[str, str],
    *,
    points: int = 60,
    covering: dict[str, list[float]] | None = None,
) -> Surface:
    """The loss over a grid spanning the start, the run's path and any `covering` values (the
    updates of several runs that `gdlab compare` draws)."""
    history = result.history
    check_pair(result, pair)
    start = problem.initial_parameters()
    extra = covering or {}
    spans = {name: [start.get(name, history.params[name][0]), *history.params[name],
                    *extra.get(name, [])] for name in pair}  # fmt: skip
    axes = [_axis(spans[name], points) for name in pair]
    final = {name: values[-1] for name, values in history.params.items()}
    linear = any(name.startswith(("coef[", "intercept")) for name in final)
    everyone = problem.train_rows
    limit = LINEAR_ROWS if linear else MODULE_ROWS
    rows = everyone if len(everyone) <= limit else everyone[:: -(-len(everyone) // limit)]
    evaluate = _linear_surface if linear else _module_surface
    # One evaluation, on the grid with the final point appended to each axis: its last row
    # and column hold the loss at the final point, what the run reported.
    extended = [np.append(axis, final[name]) for axis, name in zip(axes, pair, strict=True)]
    loss = evaluate(problem, result, final, pair, extended, rows)
    final_loss = float(loss[-1, -1])
    return Surface(pair, axes[0], axes[1], loss[:-1, :-1], len(rows), len(everyone), final_loss)


def _axis(values: list[float], points: int) -> FloatArray:
    low, high = min(values), max(values)
    pad = max((high - low) * MARGIN, 1e-3 * max(1.0, abs(high)))
    return np.linspace(low - pad, high + pad, points)


def _linear_surface(
    problem: Problem,
    result: FitResult,
    final: dict[str, float],
    pair: tuple[str, str],
    axes: list[FloatArray],
    rows: np.ndarray,
) -> FloatArray:
    """Loss of logits Z coef + intercept in original units; two entries vary on the grid."""
    names = result.expanded_names
    outputs = int(next(iter(result.model.parameters())).shape[0])
    labels = [str(c) for c in result.classes_ or []] if outputs > 1 else []
    coef = np.zeros((outputs, len(names)))  # every entry is set from the history below
    intercept = np.zeros(outputs)

    def locate(name: str) -> tuple[int, int | None]:
        """(output, feature column or None for the intercept) of a recorded name."""
        inner = name[name.index("[") + 1 : -1] if "[" in name else ""
        output = 0
        if labels and ":" in inner:
            label, _, inner = inner.partition(":")
            output = labels.index(label)
        elif labels and name.startswith("intercept"):
            output = labels.index(inner)
        return output, None if name.startswith("intercept") else names.index(inner)

    for name, value in final.items():
        output, column = locate(name)
        if column is None:
            intercept[output] = value
        else:
            coef[output, column] = value
    (oa, ca), (ob, cb) = locate(pair[0]), locate(pair[1])
    da = axes[0] - final[pair[0]]
    db = axes[1] - final[pair[1]]
    if result.options.resolved_loss == "mse":
        return _quadratic_surface(problem, rows, coef[0], intercept[0], (ca, cb), (da, db))
    total = np.zeros((len(db), len(da)))
    block = max(1, BLOCK_CELLS // (len(da) * len(db) * outputs))
    for begin in range(0, len(rows), block):  # in blocks of rows: bounded memory on any data
        part = rows[begin : begin + block]
        Z, target = problem.source.take(part)
        base = Z @ coef.T + intercept  # (n, outputs)
        col_a = np.ones(len(Z)) if ca is None else Z[:, ca]
        col_b = np.ones(len(Z)) if cb is None else Z[:, cb]
        logits = np.repeat(base[None, None], len(db), 0).repeat(len(da), 1)  # (b, a, n, out)
        logits[..., oa] += da[None, :, None] * col_a[None, None, :]
        logits[..., ob] += db[:, None, None] * col_b[None, None, :]
        total += _row_losses(logits, target, result.options.resolved_loss).sum(-1)
    return total / len(rows)


def _quadratic_surface(
    problem: Problem,
    rows: np.ndarray,
    coef: FloatArray,
    intercept: float,
    columns: tuple[int | None, int | None],
    steps: tuple[FloatArray, FloatArray],
) -> FloatArray:
    """The mean squared error over the plane from six sums over the rows (it is quadratic in
    the two entries): mean((r + a·u + b·v)²) with r the residual at the final point and u, v
    the two entries' columns (ones for an intercept). One pass in blocks, O(n), any grid."""
    sums = np.zeros(6)  # r², r·u, r·v, u², v², u·v
    for begin in range(0, len(rows), 1 << 16):
        Z, target = problem.source.take(rows[begin : begin + (1 << 16)])
        r = Z @ coef + intercept - target
        u, v = (np.ones(len(Z)) if c is None else Z[:, c] for c in columns)
        sums += [r @ r, r @ u, r @ v, u @ u, v @ v, u @ v]
    m = sums / len(rows)
    a, b = steps[0][None, :], steps[1][:, None]
    return np.asarray(m[0] + 2 * a * m[1] + 2 * b * m[2] + a * a * m[3] + b * b * m[4]
                      + 2 * a * b * m[5])  # fmt: skip


def _row_losses(logits: FloatArray, target: FloatArray, loss: str) -> FloatArray:
    """Each row's loss at each grid point: (b, a, n)."""
    if loss == "mse":
        return np.asarray((logits[..., 0] - target) ** 2)
    if loss == "mae":
        return np.asarray(np.abs(logits[..., 0] - target))
    if loss == "bce":
        z = logits[..., 0]
        return np.asarray(np.logaddexp(0, z) - target * z)
    if loss == "cross-entropy":
        picked = np.take_along_axis(logits, target.astype(int)[None, None, :, None], -1)[..., 0]
        return np.asarray(np.logaddexp.reduce(logits, axis=-1) - picked)
    raise GdlabError(
        f"a loss surface for loss {loss} is not drawn; use mse, mae, bce or cross-entropy."
    )


def _module_surface(
    problem: Problem,
    result: FitResult,
    final: dict[str, float],
    pair: tuple[str, str],
    axes: list[FloatArray],
    rows: np.ndarray,
) -> FloatArray:
    """Set two entries of the model's parameters over the grid; loss on the training rows."""
    from gdlab.losses import make_loss

    model = result.model
    loss_fn = make_loss(result.options.resolved_loss)
    X, y = problem.tensors(rows, loss_fn, torch.device("cpu"))
    model = model.cpu()
    X = X.to(next(model.parameters()).dtype)
    if y.is_floating_point():
        y = y.to(X.dtype)
    parameters = dict(model.named_parameters())

    def entry(name: str) -> tuple[torch.Tensor, int]:
        tensor, _, index = name.rpartition("[")
        return parameters[tensor], int(index[:-1])

    scale = problem.loss_scale()
    (pa, ia), (pb, ib) = entry(pair[0]), entry(pair[1])
    surface = np.empty((len(axes[1]), len(axes[0])))
    with torch.no_grad():
        saved_a, saved_b = pa.view(-1)[ia].item(), pb.view(-1)[ib].item()
        pa.view(-1)[ia] = final[pair[0]]
        pb.view(-1)[ib] = final[pair[1]]
        for j, vb in enumerate(axes[1]):
            pb.view(-1)[ib] = float(vb)
            for i, va in enumerate(axes[0]):
                pa.view(-1)[ia] = float(va)
                surface[j, i] = float(loss_fn(model(X), y)) * scale
        pa.view(-1)[ia], pb.view(-1)[ib] = saved_a, saved_b
    return surface
