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


def range_test_figure(advice: RateAdvice) -> Figure:
    """Smoothed loss against the learning rate for each seed, with the predicted limits."""
    figure = _figure(7.0, 4.5)
    axes = figure.axes[0]
    for k, test in enumerate(advice.range_tests):
        axes.plot(test.lrs, test.smoothed, alpha=0.8, label=f"range test, seed {k + 1}")
    limits = {"2/λmax": advice.max_stable_lr}
    if kind_of(advice.optimizer).momentum:
        limits[f"2(1+{advice.momentum:g})/λmax"] = advice.max_stable_lr_momentum
    mark_limits(axes, limits, advice.recommended_lr)
    axes.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="smoothed loss",
             title=f"Learning-rate range test ({advice.optimizer})")  # fmt: skip
    axes.legend(fontsize=8)
    return figure


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
