"""GIFs of a descent: the point moving across the surface, and the fitted line turning.

Frames are sampled from the history (at most `FRAMES`, always including the first and last
epoch); each builder returns the animation and the indices it shows, so tests can check that
frame k draws the history's row indices[k].
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gdlab.atomic import write_with
from gdlab.plot.training import _figure

if TYPE_CHECKING:
    from matplotlib.animation import FuncAnimation

    from gdlab.expression import Expression
    from gdlab.history import History
    from gdlab.tools.descend import Descent as DescentPath
    from gdlab.tools.surface import Surface

FRAMES = 40
FPS = 10
DPI = 100  # 1200 x 500 pixels for compare: the legend and ticks stay readable


def frame_indices(length: int, frames: int = FRAMES) -> list[int]:
    """Up to `frames` indices from 0 to length-1, denser at the start (where things move)."""
    if length <= frames:
        return list(range(length))
    sampled = np.unique(np.round(np.geomspace(1, length, frames)).astype(int) - 1)
    return sorted({0, length - 1, *sampled.tolist()})


def save_gif(animation: FuncAnimation, path: Path) -> None:
    from matplotlib.animation import PillowWriter

    write_with(path, lambda name: animation.save(name, writer=PillowWriter(fps=FPS), dpi=DPI))


def _animation(figure: Any, update: Any, frames: int) -> FuncAnimation:
    from matplotlib.animation import FuncAnimation

    figure.draw_without_rendering()  # lay the figure out once, not on every frame
    figure.set_layout_engine("none")
    return FuncAnimation(figure, update, frames=frames, blit=False)


def descent_animation(
    expression: Expression, paths: list[DescentPath]
) -> tuple[FuncAnimation, list[int]]:
    """The points of `gdlab descend` moving along the curve or across the contours."""
    from gdlab.plot.descent import descent_figure

    figure = descent_figure(expression, paths)
    axes = figure.axes[0]
    indices = frame_indices(max(len(path.points) for path in paths))
    two = len(expression.variables) == 2
    markers = [axes.plot([], [], "o", markersize=9, markeredgecolor="k")[0] for _ in paths]

    def update(frame: int) -> list[Any]:
        step = indices[frame]
        for marker, path in zip(markers, paths, strict=True):
            t = min(step, len(path.points) - 1)
            y = path.points[t][1] if two else path.values[t]
            marker.set_data([path.points[t][0]], [y])
        axes.set_title(f"step {step}")
        return markers

    return _animation(figure, update, len(indices)), indices


def surface_animation(
    surface: Surface,
    histories: dict[str, History],
    start: dict[str, float] | None = None,
    steps: dict[str, list[dict[str, float]]] | None = None,
) -> tuple[FuncAnimation, list[int]]:
    """Each run's current point moving along its path on the loss contours."""
    from gdlab.plot.training import compare_figure

    figure = compare_figure(surface, histories, start, steps)
    axes = figure.axes[0]
    length = max(len(h) for h in histories.values())
    indices = frame_indices(length)
    colours = {line.get_label(): line.get_color() for line in axes.lines}
    markers = [axes.plot([], [], "o", markersize=9, markeredgecolor="k",
                         color=colours.get(label))[0] for label in histories]  # fmt: skip

    def update(frame: int) -> list[Any]:
        epoch = indices[frame]
        for marker, history in zip(markers, histories.values(), strict=True):
            t = min(epoch, len(history) - 1)
            a, b = (history.params[name][t] for name in surface.names)
            marker.set_data([a], [b])
        axes.set_title(f"epoch {epoch + 1}")
        return markers

    return _animation(figure, update, len(indices)), indices


def line_animation(
    x: np.ndarray, y: np.ndarray, history: History, weight: str, bias: str
) -> tuple[FuncAnimation, list[int]]:
    """One-feature regression: the fitted line turning through the data points."""
    figure = _figure(6.0, 4.5)
    axes = figure.axes[0]
    axes.scatter(x, y, s=12, color="0.4", label="data")
    grid = np.linspace(x.min(), x.max(), 2)
    (line,) = axes.plot(grid, grid * 0, color="tab:red", label="fit")
    weights, biases = history.params[weight], history.params.get(bias, [0.0] * len(history))
    indices = frame_indices(len(history))
    axes.set(
        xlabel=weight.removeprefix("coef[").removesuffix("]"), ylabel="target", title="epoch"
    )  # fmt: skip  (a title, so the layout leaves room for it)
    axes.legend(loc="upper left")

    def update(frame: int) -> list[Any]:
        t = indices[frame]
        line.set_ydata(weights[t] * grid + biases[t])
        axes.set_title(f"epoch {history.epoch[t]}: y = {weights[t]:.4g} x + {biases[t]:.4g}")
        return [line]

    return _animation(figure, update, len(indices)), indices
