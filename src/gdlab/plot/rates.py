"""Figures about learning rates: the range test with its limits, and sweeps."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from gdlab.optim.kinds import kind_of
from gdlab.plot.training import _figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from gdlab.tools.rates import RateAdvice
    from gdlab.tools.sweep import SweepRun


def mark_limits(axes: Axes, limits: dict[str, float], recommended: float | None) -> None:
    """Dashed lines at predicted stability limits, a solid one at the recommended rate."""
    for (label, value), color in zip(limits.items(), ("tab:red", "tab:purple"), strict=False):
        if math.isfinite(value) and value > 0:
            axes.axvline(value, color=color, linestyle="--", label=f"{label} = {value:.3g}")
    if recommended is not None and math.isfinite(recommended):
        axes.axvline(recommended, color="tab:green", label=f"recommended {recommended:.3g}")


SEED_COLOURS = ("#1f3b73", "#3f6fb5", "#86a9dc", "#b8cbe8")  # blues: apart from the marks


def range_test_figure(advice: RateAdvice) -> Figure:
    """Smoothed loss against the learning rate for each seed, with the predicted limits, the
    range test's own suggestion and the recommendation, and a note on where the curves'
    minimum lies against the stability limit."""
    import numpy as np

    figure = _figure(7.5, 5.0)
    axes = figure.axes[0]
    lowest = []
    for k, test in enumerate(advice.range_tests):
        colour = SEED_COLOURS[k % len(SEED_COLOURS)]
        axes.plot(test.lrs, test.smoothed, color=colour, label=f"range test, seed {k + 1}")
        smoothed = np.asarray(test.smoothed, dtype=float)
        if np.isfinite(smoothed).any():
            lowest.append(float(np.asarray(test.lrs)[int(np.nanargmin(smoothed))]))
    limits = {"2/λmax": advice.max_stable_lr}
    if kind_of(advice.optimizer).momentum:
        limits[f"2(1+{advice.momentum:g})/λmax"] = advice.max_stable_lr_momentum
    mark_limits(axes, limits, advice.recommended_lr)
    suggestion = advice.range_suggestion
    if suggestion is not None and math.isfinite(suggestion):
        axes.axvline(suggestion, color="tab:orange", linestyle=":", linewidth=2,
                     label=f"range test's suggestion {suggestion:.3g}")  # fmt: skip
    axes.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="smoothed loss",
             title=f"Learning-rate range test ({advice.optimizer})")  # fmt: skip
    note = _where_the_minimum_lies(lowest, advice.max_stable_lr, advice.optimizer)
    if note:
        box = {"facecolor": "white", "alpha": 0.85, "edgecolor": "0.8"}
        axes.text(0.02, 0.02, note, transform=axes.transAxes, fontsize=7.5, va="bottom", bbox=box)
    axes.legend(fontsize=7.5, loc="upper left")
    return figure


def _where_the_minimum_lies(lowest: list[float], limit: float, optimizer: str) -> str:
    """Why the curves' lowest point is where it is, relative to the stability limit."""
    if not lowest or not (math.isfinite(limit) and limit > 0) or not kind_of(optimizer).has_limit:
        return ""
    median = sorted(lowest)[len(lowest) // 2]
    ratio = median / limit
    if ratio > 1:
        return (
            f"The curves are lowest at about {median:.3g}, {ratio:.2g}x 2/λmax: the test raises\n"
            f"the rate every step, and a rate above the limit takes a few steps to blow up,\n"
            f"so the minimum lies past the limit. Train below it; the suggestion is a tenth."
        )
    return (
        f"The curves are lowest at about {median:.3g}, {ratio:.2g}x 2/λmax: the loss stops\n"
        f"falling before the stability limit (the curvature is not the only bound here)."
    )


def sweep_curves(runs: list[SweepRun]) -> Figure:
    """The tutorials' picture: a rate too small, one just right, one too large, side by side."""
    picks = _representatives(runs)
    figure = _figure(4.0 * max(1, len(picks)), 4.0, columns=max(1, len(picks)))
    for axes, (title, run) in zip(figure.axes, picks.items(), strict=False):
        axes.plot(range(1, len(run.losses) + 1), run.losses, color=_COLORS[run.label])
        axes.set(title=f"{title}: {run.optimizer} lr={run.lr:.3g}", xlabel="epoch",
                 yscale="log")  # fmt: skip
        axes.text(0.02, 0.02, run.label, transform=axes.transAxes, fontsize=9)
    figure.axes[0].set_ylabel("training loss")
    return figure


def sweep_final(runs: list[SweepRun], limits: dict[str, float]) -> Figure:
    """Final loss against the rate for each optimizer, with the predicted stability limits."""
    figure = _figure(7.0, 4.5)
    axes = figure.axes[0]
    finals = [run.losses[-1] for run in runs if run.label != "diverged" and run.losses]
    top = 3 * max((loss for loss in finals if math.isfinite(loss)), default=1.0)
    for name in dict.fromkeys(run.optimizer for run in runs):
        own = [run for run in runs if run.optimizer == name]
        finite = [(run.lr, run.losses[-1]) for run in own if run.label != "diverged"]
        line = axes.plot(*zip(*finite, strict=True), "o-", label=name) if finite else None
        diverged = [run.lr for run in own if run.label == "diverged"]
        if diverged:
            color = line[0].get_color() if line else None
            axes.plot(diverged, [top] * len(diverged), "x", color=color, markersize=9)
    mark_limits(axes, limits, None)
    axes.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="final training loss",
             title="Final loss by learning rate (x: diverged)")  # fmt: skip
    axes.legend(fontsize=8)
    return figure


_COLORS = {"too-small": "tab:blue", "good": "tab:green", "oscillating": "tab:orange",
           "diverged": "tab:red"}  # fmt: skip


def _representatives(runs: list[SweepRun]) -> dict[str, SweepRun]:
    picks: dict[str, SweepRun] = {}
    small = [run for run in runs if run.label == "too-small"]
    good = [run for run in runs if run.label == "good"]
    large = [run for run in runs if run.label in ("oscillating", "diverged")]
    if small:
        picks["too small"] = min(small, key=lambda run: run.lr)
    if good:
        picks["just right"] = min(good, key=lambda run: run.losses[-1])
    if large:
        picks["too large"] = min(large, key=lambda run: run.lr)
    return picks or {"run": runs[0]}
