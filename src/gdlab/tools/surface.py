"""The loss over a plane of two parameters, on a run's own data, the others held at their final
values: the surface the run's path crossed.

Linear models (linear, poly, logistic, softmax) are evaluated in the data's units with the
coefficients the history records, so the surface and the path share coordinates and the
surface's values are the history's losses. Models recorded by raw parameters (small MLPs) are
evaluated through the model itself on the training rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gdlab.data.arrays import FloatArray
from gdlab.errors import GdlabError
from gdlab.problem import Problem
from gdlab.result import FitResult

MAX_ROWS = 20_000  # rows used for the surface; more only sharpen a picture


@dataclass(frozen=True)
class Surface:
    names: tuple[str, str]
    a: FloatArray  # grid values of the first parameter (columns)
    b: FloatArray  # grid values of the second (rows)
    loss: FloatArray  # (len(b), len(a))


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
    problem: Problem, result: FitResult, pair: tuple[str, str], *, points: int = 60
) -> Surface:
    history = result.history
    check_pair(result, pair)
    axes = [_axis(history.params[name], points) for name in pair]
    final = {name: values[-1] for name, values in history.params.items()}
    rows = problem.train_rows[:MAX_ROWS]
    if any(name.startswith(("coef[", "intercept")) for name in final):
        loss = _linear_surface(problem, result, final, pair, axes, rows)
    else:
        loss = _module_surface(problem, result, final, pair, axes, rows)
    return Surface(pair, axes[0], axes[1], loss)


def _axis(values: list[float], points: int) -> FloatArray:
    low, high = min(values), max(values)
    pad = max(high - low, 1e-3 * max(1.0, abs(high))) * 0.5
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
    Z, _ = problem.source.take(rows)
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
    base = Z @ coef.T + intercept  # (n, outputs)
    (oa, ca), (ob, cb) = locate(pair[0]), locate(pair[1])
    da = axes[0] - final[pair[0]]
    db = axes[1] - final[pair[1]]
    col_a = np.ones(len(Z)) if ca is None else Z[:, ca]
    col_b = np.ones(len(Z)) if cb is None else Z[:, cb]
    logits = np.repeat(base[None, None], len(db), 0).repeat(len(da), 1)  # (b, a, n, outputs)
    logits[..., oa] += da[None, :, None] * col_a[None, None, :]
    logits[..., ob] += db[:, None, None] * col_b[None, None, :]
    target = problem.y[rows]
    loss = result.options.resolved_loss
    if loss == "mse":
        return np.asarray(((logits[..., 0] - target) ** 2).mean(-1))
    if loss == "mae":
        return np.asarray(np.abs(logits[..., 0] - target).mean(-1))
    if loss == "bce":
        z = logits[..., 0]
        return np.asarray((np.logaddexp(0, z) - target * z).mean(-1))
    if loss == "cross-entropy":
        picked = np.take_along_axis(logits, target.astype(int)[None, None, :, None], -1)[..., 0]
        return np.asarray((np.logaddexp.reduce(logits, axis=-1) - picked).mean(-1))
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
