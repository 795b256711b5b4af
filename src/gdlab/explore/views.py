"""What the page shows of a stepped run, as JSON-ready data, each from the engine's own pieces:
the history, the last update written out, the stable and the best constant rate
(`stops.stable_limit`, `tools.rates`), the loss surface under the path (`tools.surface`), and
the model over the data (the result's own `predict`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from gdlab.errors import GdlabError

if TYPE_CHECKING:
    from gdlab.result import FitResult
    from gdlab.training import Training

SHOWN_UPDATES = 6  # parameters whose update is written out with its numbers
SHOWN_ROWS = 500  # data points drawn under the fitted line or boundary (evenly spaced)
GRID = 60  # points a side of a fitted line or a decision boundary's grid


def history(result: FitResult | None, since: int) -> dict[str, Any]:
    if result is None:
        return {"epoch": [], "train_loss": [], "val_loss": [], "grad_norm": [], "params": {},
                "grad_norms": {}}  # fmt: skip
    h = result.history
    return {
        "epoch": h.epoch[since:],
        "train_loss": numbers(h.train_loss[since:]),
        "val_loss": numbers(h.val_loss[since:]),
        "grad_norm": numbers(h.grad_norm[since:]),
        "params": {name: numbers(values[since:]) for name, values in h.params.items()},
        "grad_norms": {name: numbers(values[since:]) for name, values in h.grad_norms.items()},
    }


def update(
    result: FitResult, before: dict[str, float], after: dict[str, float], *, one: bool
) -> list[str]:
    """The last step of each parameter, from `before` to `after`, with its numbers: where it is
    `one` update of plain gradient descent on unscaled data, w = w - lr * dL/dw with dL/dw (of
    that update's batch) read off the step; otherwise the step itself (an epoch of many
    mini-batch updates, momentum, adaptive rates and standardized training do not step along
    -lr * dL/dw of the recorded coefficients)."""
    h, opts = result.history, result.options
    lr = h.lr[-1] if len(h) else opts.rate
    plain = one and opts.optimizer in ("gd", "sgd") and not opts.standardize
    lines = []
    for name in [name for name in after if name in before][:SHOWN_UPDATES]:
        a, b = before[name], after[name]
        if plain:
            gradient = (a - b) / lr
            lines.append(f"{name} = {a:.6g} - {lr:g} * {gradient:.6g} = {b:.6g}"
                         f"   (dL/d{name} = {gradient:.6g})")  # fmt: skip
        else:
            lines.append(f"{name} = {a:.6g} {b - a:+.6g} = {b:.6g}")
    return lines


def rates(training: Training) -> dict[str, Any]:
    """The optimizer's largest stable rate and the rate gdlab recommends, with its reason (what
    `--lr auto` would choose, without the range test): on least squares from the exact
    curvature, which holds everywhere; on other models from the Hessian at the initial point
    (`tools.rates`: Lanczos on a sample of rows), which training then changes. Adaptive
    optimizers (adam, ...) have no such limit."""
    from gdlab.optim.kinds import kind_of
    from gdlab.tools.rates import advise_problem
    from gdlab.train.rules import quadratic_limit

    opts = training.opts
    if not kind_of(opts.optimizer).has_limit:
        return {"limit": None, "best": None, "why": ""}
    advice = advise_problem(training, unscaled=False, seeds=0)
    lambda_max = advice.curvature.lambda_max
    if not lambda_max > 0:  # piecewise-linear losses (mae): no curvature to bound a rate
        return {
            "limit": None,
            "best": None,
            "why": "the loss has no curvature at the start (λmax = 0): no limit follows",
        }
    beta = opts.momentum if kind_of(opts.optimizer).momentum else 0.0
    limit = quadratic_limit(opts.optimizer, beta, lambda_max)
    return {"limit": number(limit), "best": number(advice.recommended_lr), "why": advice.reason}


def surface(
    training: Training,
    result: FitResult | None,
    pair: tuple[str, str] | None,
    covering: list[FitResult],
) -> dict[str, Any]:
    """The loss over two parameters (the others at their last values) on a grid covering the
    path from the start, and the paths of `covering` runs drawn with it."""
    from gdlab.tools.surface import default_pair, loss_surface

    if result is None or not result.history.params:
        raise GdlabError("the surface needs a path: step at least one epoch (models of at most "
                         "20 parameters record one).")  # fmt: skip
    pair = pair or default_pair(result)
    covered = {name: [v for other in covering for v in other.history.params.get(name, [])]
               for name in pair}  # fmt: skip
    drawn = loss_surface(training, result, pair, covering=covered)
    start = training.initial_parameters()
    return {
        "names": list(pair),
        "a": numbers(drawn.a.tolist()),
        "b": numbers(drawn.b.tolist()),
        "loss": [numbers(row) for row in drawn.loss.tolist()],
        "lowest": list(drawn.lowest),
        "start": [start[pair[0]], start[pair[1]]],
        "final_loss": number(drawn.final_loss),
        "sampled": drawn.sampled,
        "slice": len(result.history.params) > 2,
    }


def picture(result: FitResult | None, X: np.ndarray, y: np.ndarray,
            features: list[str]) -> dict[str, Any] | None:  # fmt: skip
    """The model over its data: the fitted curve over one feature, the decision boundary
    (probability 0.5, or the predicted class) over two features of a classifier, else the
    predictions against the target; on at most SHOWN_ROWS evenly spaced rows."""
    if result is None:
        return None
    rows = slice(None, None, max(1, -(-len(X) // SHOWN_ROWS)))
    shown_X, shown_y = X[rows], y[rows]
    if len(features) == 1:
        grid = np.linspace(X[:, 0].min(), X[:, 0].max(), GRID)
        return {"kind": "line", "feature": features[0], "x": numbers(shown_X[:, 0].tolist()),
                "y": numbers(shown_y.tolist()), "grid": numbers(grid.tolist()),
                "fit": numbers(result.predict(grid[:, None]).tolist())}  # fmt: skip
    if len(features) == 2 and result.classes_ is not None:
        a = np.linspace(X[:, 0].min(), X[:, 0].max(), GRID)
        b = np.linspace(X[:, 1].min(), X[:, 1].max(), GRID)
        points = np.column_stack([np.tile(a, GRID), np.repeat(b, GRID)])
        two = len(result.classes_) == 2
        z = result.predict_proba(points)[:, 1] if two else result.predict(points)
        return {"kind": "boundary", "features": features, "x": numbers(shown_X[:, 0].tolist()),
                "x2": numbers(shown_X[:, 1].tolist()), "y": numbers(shown_y.tolist()),
                "a": numbers(a.tolist()), "b": numbers(b.tolist()),
                "z": [numbers(row) for row in z.reshape(GRID, GRID).tolist()],
                "level": 0.5 if two else None}  # fmt: skip
    return {"kind": "predicted", "y": numbers(shown_y.tolist()),
            "fit": numbers(result.predict(shown_X).tolist())}  # fmt: skip


MAX_DESCENT_STEPS = 10_000
DESCENT_OPTIMIZERS = 4  # optimizers compared on one typed-in function at most
CONTOUR = 80  # grid points a side of a typed-in function's contour


def descent(body: dict[str, Any]) -> dict[str, Any]:
    """`gdlab descend` for the page: a typed-in function (the whitelisted parser of
    `gdlab.expression`) or a named surface, its derivatives written out, each optimizer's
    path from one start with every step's gradient, why it stopped, and the function over a
    grid covering the paths (two variables) or along the path's span (one)."""
    from gdlab.expression import parse, written
    from gdlab.tools.descend import MINIMA, descend, parse_start, reached
    from gdlab.tools.sweep import parse_optimizers

    text, start, lr = body.get("expression"), body.get("start"), body.get("lr", 0.05)
    steps, optimizers = body.get("steps", 50), body.get("optimizers", "gd")
    if not isinstance(text, str) or not text.strip():
        raise GdlabError('`expression`: type a function, e.g. "(3+3*a)**2", or a surface name.')
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not (math.isfinite(lr)
                                                                         and lr > 0):  # fmt: skip
        raise GdlabError(f"`lr` must be a positive number. Got {lr!r}.")
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_DESCENT_STEPS:
        raise GdlabError(f"`steps` must be an integer in 1..{MAX_DESCENT_STEPS}. Got {steps!r}.")
    if not isinstance(start, (str, type(None))) or not isinstance(optimizers, str):
        raise GdlabError("`start` is text such as a=0.5 or x=-1,y=2; `optimizers` is gd,adam.")
    names = parse_optimizers(optimizers)[:DESCENT_OPTIMIZERS]
    expression = parse(text)
    begin = parse_start(start, expression, text)
    paths = [descend(expression, begin, optimizer=name, lr=float(lr), steps=steps)
             for name in names]  # fmt: skip
    variables = expression.variables
    return {
        "variables": list(variables),
        "f": written(expression.symbolic),
        "derivatives": {v: written(expression.derivative(v)) for v in variables},
        "minimum": MINIMA.get(text),
        "paths": [
            {
                "optimizer": path.optimizer,
                "lr": path.lr,
                "status": path.status,
                "message": path.message,
                "reached": reached(path, text),
                "points": [numbers(list(point)) for point in path.points],
                "values": numbers(path.values),
                "gradients": [numbers(list(g)) for g in path.gradients],
            }
            for path in paths
        ],
        "grid": _function_grid(expression, paths),
    }


def _function_grid(expression: Any, paths: list[Any]) -> dict[str, Any] | None:
    """f on a grid covering every path with a margin (one or two variables; else None)."""
    import torch

    k = len(expression.variables)
    if k > 2:
        return None
    spans = []
    for axis in range(k):
        values = [p[axis] for path in paths for p in path.points if math.isfinite(p[axis])]
        low, high = min(values), max(values)
        margin = max(0.15 * (high - low), 0.5)
        spans.append(np.linspace(low - margin, high + margin, CONTOUR))
    mesh = np.meshgrid(*spans) if k == 2 else [spans[0]]
    inputs = {name: torch.tensor(axis, dtype=torch.float64)
              for name, axis in zip(expression.variables, mesh, strict=True)}  # fmt: skip
    with torch.no_grad(), np.errstate(all="ignore"):
        tensor = torch.as_tensor(expression(inputs), dtype=torch.float64)
        value = torch.broadcast_to(tensor, mesh[0].shape).numpy()
    axes = {"a": numbers(spans[0].tolist())} | ({"b": numbers(spans[1].tolist())} if k == 2 else {})
    shaped = [numbers(row) for row in value.tolist()] if k == 2 else numbers(value.tolist())
    return axes | {"f": shaped}


def number(value: float) -> float | None:
    """JSON has no NaN or infinity: those are null."""
    return value if math.isfinite(value) else None


def numbers(values: Any) -> Any:
    if isinstance(values, dict):
        return {key: numbers(value) for key, value in values.items()}
    if isinstance(values, list):
        return [number(float(v)) for v in values]
    return number(float(values))
