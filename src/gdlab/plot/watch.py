"""Figures of a watched training run (`gdlab plot` on a `gdlab.watch` folder): the loss with
the diagnoses marked, the gradient norm by depth over time as a heatmap, the sharpness against
the optimizer's stability threshold, and each layer's update-to-weight ratio."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from gdlab.plot.training import _figure
from gdlab.watching.folder import finite

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from gdlab.watching.folder import WatchedRun

COLUMNS = 400  # heatmap columns: steps are binned beyond this many
POINTS = 2000  # points a line draws: evenly spaced steps beyond this many
LEGEND = 10  # layers named in a legend; more are coloured by depth with a colour bar


def binned_log(values: np.ndarray, columns: int = COLUMNS) -> tuple[np.ndarray, np.ndarray]:
    """Steps binned into at most `columns` bins: the bin edges (row indices) and, per layer and
    bin, the mean of log10 over the finite positive values (nan where a bin has none)."""
    n = len(values)
    edges = np.unique(np.linspace(0, n, min(n, columns) + 1).round().astype(int))
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log10(np.where(values > 0, values, np.nan))
    finite = np.isfinite(logs)
    sums = np.add.reduceat(np.where(finite, logs, 0.0), edges[:-1], axis=0)
    counts = np.add.reduceat(finite.astype(int), edges[:-1], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return edges, (sums / np.where(counts > 0, counts, np.nan)).T


def _spaced(n: int) -> slice:
    return slice(None, None, max(1, -(-n // POINTS)))


def loss_figure(run: WatchedRun) -> Figure:
    figure = _figure(7.0, 4.0)
    axes = figure.axes[0]
    drawn = _spaced(len(run.step))
    axes.plot(run.step[drawn], run.loss[drawn], linewidth=1)
    finite = run.loss[np.isfinite(run.loss)]
    if len(finite) and finite.min() > 0:
        axes.set_yscale("log")
    kinds: dict[int, list[str]] = {}
    for d in run.diagnoses:
        said = kinds.setdefault(int(d["step"]), [])
        said += [] if d["kind"] in said else [d["kind"]]
    for step, said in kinds.items():
        axes.axvline(step, color="tab:red", linestyle=":", linewidth=1)
        axes.annotate(", ".join(said), (step, 1.0), xycoords=("data", "axes fraction"),
                      rotation=90, va="top", ha="right", fontsize=7, color="tab:red")  # fmt: skip
    axes.set(xlabel="step", ylabel="loss", title="Loss by step (dotted: a diagnosis)")
    return figure


def depth_heatmap(run: WatchedRun) -> Figure:
    """log10 of each layer's gradient norm (rows, input side at the top) over the steps; a
    grey cell had no finite non-zero gradient (it vanished to 0, or was nan or inf)."""
    from matplotlib import colormaps

    edges, cells = binned_log(run.grad)
    figure = _figure(8.0, 1.8 + 0.25 * len(run.layers))
    axes = figure.axes[0]
    x = np.append(run.step[edges[:-1]], run.step[-1] + 1)
    y = np.arange(len(run.layers) + 1)
    cmap = colormaps["viridis"].with_extremes(bad="#bbbbbb")
    mesh = axes.pcolormesh(x, y, np.ma.masked_invalid(cells), cmap=cmap)
    axes.set_yticks(y[:-1] + 0.5, run.layers, fontsize=7 if len(run.layers) > 12 else 9)
    axes.invert_yaxis()
    axes.set(xlabel="step", ylabel="layer (input side at the top)",
             title="Gradient norm by depth over time (grey: zero or not finite)")  # fmt: skip
    figure.colorbar(mesh, ax=axes, label="log10 ‖∂L/∂θ‖ of the layer")
    return figure


def sharpness_figure(run: WatchedRun) -> Figure:
    """The sharpness on the probe batch and the optimizer's threshold (2/lr for SGD), per probe;
    above the line the step grows along the sharpest direction and the loss oscillates."""
    figure = _figure(7.0, 4.0)
    axes = figure.axes[0]
    probes = run.estimates
    steps = [p["step"] for p in probes]
    axes.plot(steps, [p["sharpness"] for p in probes], "o-", markersize=3,
              label=f"sharpness λmax ({probes[0]['method']})")  # fmt: skip
    limits = [p["threshold"] if finite(p.get("threshold")) else math.nan for p in probes]
    if any(math.isfinite(v) for v in limits):
        axes.plot(steps, limits, "--", color="tab:red", label=f"threshold {probes[0]['rule']}")
    else:
        axes.set_title(probes[0]["rule"], fontsize=8, loc="right")
    values = [p["sharpness"] for p in probes] + [v for v in limits if math.isfinite(v)]
    if min(values) > 0 and max(values) > 10 * min(values):
        axes.set_yscale("log")
    axes.set(xlabel="step", ylabel="curvature (1 / lr units)")
    axes.set_title("Sharpness against the stability threshold", loc="left")
    axes.legend(fontsize=8)
    return figure


def update_ratio_figure(run: WatchedRun) -> Figure:
    """‖Δθ‖/‖θ‖ per layer on the steps that measured it, with the range the watcher judges."""
    from matplotlib import colormaps

    from gdlab.watching.diagnoses import RATIO_HIGH, RATIO_LOW

    figure = _figure(7.5, 4.0)
    axes = figure.axes[0]
    measured = np.isfinite(run.ratio).any(1)
    step, ratio = run.step[measured], run.ratio[measured]
    drawn = _spaced(len(step))
    many = len(run.layers) > LEGEND
    colours = colormaps["viridis"](np.linspace(0, 1, max(len(run.layers), 1)))
    for i, layer in enumerate(run.layers):
        axes.plot(step[drawn], ratio[drawn, i], linewidth=1, label=None if many else layer,
                  color=colours[i] if many else None)  # fmt: skip
    for bound in (RATIO_LOW, RATIO_HIGH):
        axes.axhline(bound, color="#888", linestyle="--", linewidth=1)
    axes.axhspan(1e-4, 1e-2, color="tab:green", alpha=0.08, label="usual (about 1e-3)")
    axes.set(xlabel="step", ylabel="‖Δθ‖ / ‖θ‖ a step", yscale="log",
             title="Update-to-weight ratio by layer (dashed: the judged range)")  # fmt: skip
    if many:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        scale = ScalarMappable(Normalize(1, len(run.layers)), cmap="viridis")
        figure.colorbar(scale, ax=axes, label="layer depth (1 = input side)")
    axes.legend(fontsize=7, ncol=2)
    return figure
