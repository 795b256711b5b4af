"""The loss Hessian's largest eigenvalue tracked during training: the edge of stability.

On a quadratic, gradient descent is stable while lr < 2/λmax, and λmax never changes. A
network's curvature does: in full-batch training it typically grows until λmax reaches 2/lr
and then hovers there while the loss still falls, non-monotonically (the "edge of stability").
An estimate at the initial point cannot show that, so every `every` epochs the tracker
estimates λmax at the current parameters by power iteration on Hessian-vector products
(`analysis.hessian`), warm-started from the previous estimate's vector, on up to ROWS rows.
Its cost is bounded: STEPS products an estimate, and with the automatic spacing at most SHARE
of the run's time (an estimate that would exceed it waits, and the spacing doubles); the
time spent is reported after the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from gdlab.analysis.hessian import flat_loss, hessian_vector_product, power_iteration
from gdlab.history import History

ESTIMATES = 50  # estimates in a run when the tracker chooses its own spacing
STEPS = 20  # Hessian-vector products per estimate
ROWS = 4096  # rows the loss is evaluated on (the first ones of the training set)
SHARE = 0.1  # with the automatic spacing, the most of the run's time estimates may take


class SharpnessTracker:
    """Called after each epoch (as `on_epoch`): sets `history.lambda_max` every `every`
    epochs."""

    def __init__(
        self,
        net: nn.Module,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        X: torch.Tensor,
        y: torch.Tensor,
        every: int,
        *,
        bounded: bool = False,
    ) -> None:
        self.net, self.loss_fn, self.X, self.y = net, loss_fn, X[:ROWS], y[:ROWS]
        self.every, self.estimates, self.seconds = every, 0, 0.0
        self.bounded, self.started = bounded, time.perf_counter()
        self.vector: torch.Tensor | None = None

    def __call__(self, history: History) -> None:
        if history.epoch[-1] % self.every:
            return
        began = time.perf_counter()
        training = began - self.started - self.seconds
        if self.bounded and self.seconds + self._next_cost(history, training) > SHARE * training:
            self.every *= 2  # over its share of the run: estimate half as often
            return
        history.lambda_max[-1] = self.estimate()
        self.seconds += time.perf_counter() - began
        self.estimates += 1

    def _next_cost(self, history: History, training: float) -> float:
        """Seconds the next estimate will take: as the last ones did, or before the first,
        about 3·STEPS epochs' worth (a Hessian-vector product costs about two gradients)."""
        if self.estimates:
            return self.seconds / self.estimates
        return 3 * STEPS * training / max(1, len(history))

    def estimate(self) -> float:
        """The Rayleigh quotient of the power-iteration vector after STEPS products."""
        loss, at = flat_loss(self.net, self.loss_fn, self.X, self.y)
        product = hessian_vector_product(loss, at)
        if self.vector is None or self.vector.shape != at.shape:
            self.vector = torch.randn(at.shape, dtype=at.dtype,
                                      generator=torch.Generator().manual_seed(0))  # fmt: skip
        value, self.vector = power_iteration(product, self.vector, STEPS)
        return value

    def note(self, rows: int) -> str:
        if not self.estimates:
            return ""
        return (
            f"λmax tracked at {self.estimates} epochs (at last every {self.every}; power "
            f"iteration, {STEPS} Hessian-vector products each on {min(rows, ROWS)} rows): "
            f"{self.seconds:.2g} s"
        )


def tracking_interval(setting: int | str, *, network: bool, budget: int) -> int:
    """Epochs between estimates: the option's number, or with 'auto' ESTIMATES a run for
    networks (whose curvature changes) and none for linear models; 0 is none."""
    if setting == "off":
        return 0
    if setting == "auto":
        return max(1, budget // ESTIMATES) if network else 0
    return int(setting)
