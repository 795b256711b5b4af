"""The tutorials' two pictures: the loss curve, and weight and bias against the loss."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gdlab.atomic import write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from gdlab.history import History
    from gdlab.tools.surface import Surface


def _figure(
    width: float = 6.0, height: float = 4.0, columns: int = 1, *, sharey: bool | None = None
) -> Figure:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    figure.subplots(1, columns, sharey=columns > 1 if sharey is None else sharey)
    return figure


def save(figure: Figure, path: Path) -> None:
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # tick labels of 1e54 can leave no room; drawn anyway
        warnings.filterwarnings("ignore", "constrained_layout not applied")
        figure.savefig(buffer, format="png", dpi=110)
    write_bytes(path, buffer.getvalue())


def loss_curve(history: History, *, title: str = "Training loss") -> Figure:
    """Train (and validation) loss against epochs, log scale."""
    figure = _figure()
    axes = figure.axes[0]
    axes.plot(history.epoch, history.train_loss, label="train")
    if any(value == value for value in history.val_loss):  # any non-NaN
        axes.plot(history.epoch, history.val_loss, label="validation")
    axes.set(xlabel="epoch", ylabel="loss", title=title, yscale="log")
    axes.legend()
    return figure


def weight_bias_vs_loss(history: History, weight: str, bias: str) -> Figure:
    """The tutorial's side-by-side plots of each parameter's value against the loss."""
    figure = _figure(9.0, 4.0, columns=2)
    for axes, name in zip(figure.axes, (weight, bias), strict=True):
        axes.plot(history.params[name], history.train_loss, "r.-", markersize=3)
        axes.plot(history.params[name][-1:], history.train_loss[-1:], "k*", markersize=10)
        axes.set(xlabel=name, yscale="log", title=f"{name} against loss")
    figure.axes[0].set_ylabel("loss")
    return figure


def parameter_curves(history: History) -> Figure:
    """Every recorded parameter against epochs."""
    figure = _figure(7.0, 4.5)
    axes = figure.axes[0]
    for name, values in history.params.items():
        axes.plot(history.epoch, values, label=name)
    axes.set(xlabel="epoch", ylabel="value", title="Parameters by epoch")
    if history.params:
        axes.legend(fontsize=7, ncol=2)
    return figure


def gradient_norms(history: History) -> Figure:
    """Each layer's gradient norm against epochs, log scale (what counts as vanishing or
    exploding is relative, across depth: see `depth_figure` and `analysis.gradients`)."""
    figure = _figure(7.0, 4.5)
    axes = figure.axes[0]
    layers = history.grad_norms or {"all parameters": history.grad_norm}
    for name, values in layers.items():
        axes.plot(history.epoch, values, label=name)
    axes.set(xlabel="epoch", ylabel="gradient norm ‖∂L/∂θ‖", yscale="log",
             title="Gradient norm by layer")  # fmt: skip
    axes.legend(fontsize=7)
    return figure


def weight_layers(history: History) -> list[str]:
    """The recorded weight tensors in depth order (input to output)."""
    return [name for name in history.grad_norms if name.endswith("weight")]


def depth_figure(history: History) -> Figure:
    """The tutorials' vanishing and exploding gradients: each weight layer's gradient norm
    against its depth, at the first epoch and as training goes (left), and how far each layer
    moves in an epoch relative to its size, ‖ΔW‖/‖W‖ (right)."""
    weights = weight_layers(history)
    figure = _figure(12.0, 4.5, columns=2, sharey=False)
    left, right = figure.axes
    depth = list(range(1, len(weights) + 1))
    n = len(history)
    for k in sorted({0, n // 10, n // 2, n - 1}):
        left.plot(depth, [history.grad_norms[name][k] for name in weights], "o-",
                  label=f"epoch {history.epoch[k]}")  # fmt: skip
    left.set(xlabel="weight layer (1 = input side)", ylabel="gradient norm ‖∂L/∂W‖",
             yscale="log", xticks=depth, title="Gradient norm by depth")  # fmt: skip
    left.legend(fontsize=8)
    for name in weights:
        ratios = history.update_ratios.get(name)
        if ratios:
            right.plot(history.epoch, ratios, label=name)
    right.set(xlabel="epoch", ylabel="‖ΔW‖ / ‖W‖ in the epoch", yscale="log",
              title="How far each layer moves")  # fmt: skip
    right.legend(fontsize=7, ncol=2)
    return figure


def sharpness_figure(history: History) -> Figure:
    """The loss Hessian's λmax where it was tracked, against 2/lr: full-batch training of a
    network often raises λmax until it meets 2/lr and then hovers there (the edge of
    stability), where a quadratic's analysis would call the rate unstable."""
    import math

    figure = _figure(7.0, 4.5)
    axes = figure.axes[0]
    points = [(e, v) for e, v in zip(history.epoch, history.lambda_max, strict=True)
              if math.isfinite(v)]  # fmt: skip
    axes.plot(*zip(*points, strict=True), "o-", markersize=3, label="λmax of the loss Hessian")
    axes.plot(history.epoch, [2.0 / lr for lr in history.lr], "--", color="tab:red",
              label="2 / lr (stability limit of a quadratic)")  # fmt: skip
    axes.set(xlabel="epoch", ylabel="curvature", title="Edge of stability: λmax against 2/lr")
    axes.legend(fontsize=8)
    return figure


def contour_levels(loss: Any) -> Any:
    """25 levels spaced geometrically above the minimum (the valley stays visible), or None
    when the grid is flat: equal values have no contour to draw."""
    import numpy as np

    shifted = loss - loss.min()
    top = float(shifted.max())
    if not top > 0 or not np.isfinite(top):
        return None
    return np.geomspace(max(top * 1e-6, 1e-300), top, 25) + loss.min()


def colorbar_ticks(levels: Any, count: int = 7) -> tuple[list[float], list[str]]:
    """About `count` of the levels as colorbar ticks, each written with as many significant
    digits as it takes for no two to read alike (geometric levels crowd near the minimum,
    where 3 digits print 1.00 four times)."""
    chosen = [float(v) for v in levels[:: max(1, len(levels) // count)]]
    for digits in range(3, 17):
        labels = [f"{v:.{digits}g}" for v in chosen]
        if len(set(labels)) == len(labels):
            break
    return chosen, labels


def _contours(figure: Figure, axes: Any, surface: Surface, cmap: str, bar: bool) -> None:
    """The surface's contours (geometric levels: the valley stays visible), its lowest grid
    point, and what rows it was evaluated on."""
    levels = contour_levels(surface.loss)
    if levels is None:  # a flat surface (e.g. dead ReLU units): nothing to draw but the path
        axes.text(0.5, 0.5, "the loss is flat over this grid", transform=axes.transAxes,
                  ha="center", color="grey")  # fmt: skip
        return
    contours = axes.contour(surface.a, surface.b, surface.loss, levels=levels, cmap=cmap)
    if bar:
        ticks, labels = colorbar_ticks(levels)
        colorbar = figure.colorbar(contours, ax=axes, label="training loss", ticks=ticks)
        colorbar.ax.set_yticklabels(labels)
    axes.plot(*surface.lowest, "x", color="tab:blue", markersize=9, mew=2,
              label="lowest on this plane")  # fmt: skip
    if surface.sampled:
        axes.annotate(f"loss on {surface.sampled}", (0.01, 0.01), xycoords="axes fraction",
                      fontsize=7, color="grey")  # fmt: skip


def surface_figure(
    surface: Surface, history: History, start: dict[str, float] | None = None
) -> Figure:
    """The loss over two parameters, with the run's path across it (from `start`, if given)."""

    figure = _figure(7.0, 5.0)
    axes = figure.axes[0]
    _contours(figure, axes, surface, "viridis", bar=True)
    a, b = (([start[name]] if start else []) + history.params[name] for name in surface.names)
    axes.plot(a, b, "r.-", markersize=3, linewidth=1, label="path")
    if start:
        axes.plot(a[:1], b[:1], "ko", markersize=6, label="start")
    axes.plot(a[-1:], b[-1:], "k*", markersize=12, label="final")
    axes.set(xlabel=surface.names[0], ylabel=surface.names[1],
             title="Loss on the run's data, other parameters at their final values")  # fmt: skip
    axes.title.set_fontsize(9)
    axes.legend(fontsize=8)
    return figure


def compare_figure(
    surface: Surface,
    runs: dict[str, History],
    start: dict[str, float] | None = None,
    steps: dict[str, list[dict[str, float]]] | None = None,
) -> Figure:
    """Several runs from the same start: paths on one contour (every update when `steps` has
    them, so a mini-batch run's zigzag shows; else every epoch), loss curves on one axis."""

    figure = _figure(12.0, 5.0, columns=2, sharey=False)
    contour_axes, loss_axes = figure.axes
    _contours(figure, contour_axes, surface, "viridis", bar=False)
    first = [[start[name]] if start else [] for name in surface.names]
    for label, history in runs.items():
        taken = (steps or {}).get(label)
        a, b = (
            first[k] + ([p[name] for p in taken] if taken else history.params[name])
            for k, name in enumerate(surface.names)
        )
        line = contour_axes.plot(a, b, "-", linewidth=1, alpha=0.9, label=label)[0]
        loss_axes.plot(history.epoch, history.train_loss, color=line.get_color(), label=label)
    if start:
        contour_axes.plot(*(start[name] for name in surface.names), "ko", label="start")
    contour_axes.set(xlabel=surface.names[0], ylabel=surface.names[1],
                     title="Paths, every update")  # fmt: skip
    loss_axes.set(xlabel="epoch", ylabel="training loss", yscale="log", title="Loss by epoch")
    contour_axes.legend(fontsize=8)
    return figure
