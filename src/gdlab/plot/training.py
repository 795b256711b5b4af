"""The tutorials' two pictures: the loss curve, and weight and bias against the loss."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from gdlab.atomic import write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from gdlab.history import History


def _figure(width: float = 6.0, height: float = 4.0, columns: int = 1) -> Figure:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    figure.subplots(1, columns, sharey=columns > 1)
    return figure


def save(figure: Figure, path: Path) -> None:
    buffer = io.BytesIO()
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
