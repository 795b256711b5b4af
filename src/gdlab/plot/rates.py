"""Figures about learning rates: the range test with its limits, and sweeps."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from gdlab.plot.training import _figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from gdlab.rates import RateAdvice


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
    if advice.optimizer in ("momentum", "nesterov"):
        limits[f"2(1+{advice.momentum:g})/λmax"] = advice.max_stable_lr_momentum
    mark_limits(axes, limits, advice.recommended_lr)
    axes.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="smoothed loss",
             title=f"Learning-rate range test ({advice.optimizer})")  # fmt: skip
    axes.legend(fontsize=8)
    return figure
