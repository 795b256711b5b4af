"""Where a step's gradient comes from: one protocol, three sources.

A gradient source fills the .grad of each trainable parameter for a batch of rows (None: all
of them) and returns the batch's mean loss as the loss function measures it, without any
penalty; the loop then adds the L1 subgradient, whatever the source.

- `AutogradGradient`: forward and backward through the model; any model, any loss.
- `ExactGradient` (`train/exact.py`): full-batch least squares from XᵀX in O(d²) per step.
- `AnalyticGradient` (`train/analytic.py`): mini-batch gradients of linear and logistic models
  by formula, without building a graph.

Which source a run uses is decided in one place, `gdlab.training.Training.gradient_source`.
After the source and the penalty, the loop calls `reduce` on the gradients: the identity in
one process, and the place where a data-parallel run sums them across ranks before the step.
The exact and analytic sources write .grad without a backward pass, so a hook on backward (as
DistributedDataParallel's) would never see them; `reduce` sees every source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

# (the parameters, the batch's mean loss on this rank, its rows here) -> the same over all
# ranks; it leaves the all-ranks mean gradient in the parameters' .grad
Reduce = Callable[[list[torch.Tensor], float, int], tuple[float, int]]


class GradientSource(Protocol):
    def step_gradient(self, rows: Any) -> float:
        """Fill .grad for the batch `rows` (None: every row); the batch's mean loss. `rows`
        are row numbers (a tensor), or a streamed file's batch (`train/streamed.py`)."""
        ...


def no_reduction(params: list[torch.Tensor], value: float, seen: int) -> tuple[float, int]:
    """One process: the gradients are already the whole batch's."""
    return value, seen


class AutogradGradient:
    """Forward and backward through `model` on the rows of (X, y)."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        X: torch.Tensor,
        y: torch.Tensor,
    ) -> None:
        self.model, self.loss_fn, self.X, self.y = model, loss_fn, X, y
        # model.zero_grad() walks the module tree each step: a tiny model's epoch notices
        self.params = list(model.parameters())

    def step_gradient(self, rows: torch.Tensor | None) -> float:
        X = self.X if rows is None else self.X.index_select(0, rows)
        y = self.y if rows is None else self.y.index_select(0, rows)
        loss = self.loss_fn(self.model(X), y)
        for p in self.params:
            p.grad = None
        loss.backward()  # type: ignore[no-untyped-call]
        return loss.item()
