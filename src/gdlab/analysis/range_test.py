"""The learning-rate range test (Smith 2017; fastai's and Lightning's lr_find), made stable.

The rate grows exponentially from `start` to `end`, one optimiser step per rate; the loss is
smoothed by a debiased exponential moving average, and the test stops once the smoothed loss
exceeds `stop_factor` times the best seen. Two suggestions are read off the curve: Smith's
"a tenth of the rate at the minimum" and fastai's "valley" (two thirds of the way down the
longest falling stretch). Full-batch steps make the
test deterministic for a given initialisation; `gdlab.lr` repeats it over several seeds and
reports the spread.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RangeTest:
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]

    @property
    def minimum(self) -> float:
        """Smith's rule (fastai's `lr_min`): a tenth of the rate with the lowest loss."""
        return minimum_over_ten(self.lrs, self.smoothed)

    @property
    def valley(self) -> float:
        """fastai's default rule."""
        return valley(self.lrs, self.smoothed)

    def to_dict(self) -> dict[str, object]:
        return {
            "lrs": self.lrs,
            "losses": self.losses,
            "smoothed": self.smoothed,
            "minimum_over_ten": self.minimum,
            "valley": self.valley,
        }


def range_test(
    model: nn.Module,
    loss_fn: LossFunction,
    optimizer: torch.optim.Optimizer,
    batches: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    *,
    start: float = 1e-6,
    end: float = 10.0,
    steps: int = 100,
    smoothing: float = 0.98,
    stop_factor: float = 4.0,
) -> RangeTest:
    """Train `model` in place through the sweep; `batches(i)` gives the data of step i."""
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    average, best = 0.0, math.inf
    for i in range(steps):
        lr = start * (end / start) ** (i / (steps - 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        X, y = batches(i)
        loss = loss_fn(model(X), y)
        value = float(loss.item())
        if not math.isfinite(value):
            break
        average = smoothing * average + (1 - smoothing) * value
        current = average / (1 - smoothing ** (i + 1))
        lrs.append(lr)
        losses.append(value)
        smoothed.append(current)
        if current > stop_factor * best:
            break
        best = min(best, current)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    return RangeTest(lrs, losses, smoothed)


def minimum_over_ten(lrs: list[float], losses: list[float]) -> float:
    """Smith's rule, fastai's `lr_min`: a tenth of the rate at which the loss was lowest."""
    if not losses:
        return math.nan
    return lrs[int(np.argmin(losses))] / 10


def valley(lrs: list[float], losses: list[float]) -> float:
    """fastai's rule: the longest strictly falling subsequence, two thirds of the way down it."""
    n = len(losses)
    if n < 3:
        return lrs[0] if lrs else math.nan
    values = np.asarray(losses)
    runs = np.ones(n, dtype=int)
    start, stop = 0, 0
    for i in range(1, n):
        earlier = np.flatnonzero(values[:i] > values[i])
        if len(earlier):
            runs[i] = 1 + int(runs[earlier].max())
        if runs[i] > runs[stop]:
            stop, start = i, i - int(runs[i])
    third = (stop - start) / 3
    return lrs[min(n - 1, max(0, start + int(third) + int(third / 2)))]
