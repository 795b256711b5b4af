"""gdlab's own gradient descent: the update rule of the tutorials, with no torch.optim inside."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


def gd_update(
    params: list[torch.Tensor], grads: list[torch.Tensor], *, lr: float, weight_decay: float
) -> None:
    """One step of plain gradient descent, in place.

    p <- p - lr * (dL/dp + weight_decay * p)

    `add_(grad, alpha=-lr)` is `p - lr * grad` computed as torch.optim.SGD computes it, so the two
    produce bit-identical trajectories.
    """
    for param, grad in zip(params, grads, strict=True):
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        param.add_(grad, alpha=-lr)


class GradientDescent(torch.optim.Optimizer):
    """Holds the parameters and the learning rate; the arithmetic is `gd_update`.

    Subclassing `torch.optim.Optimizer` gives `state_dict`, `param_groups` and schedules for free.

    Example:
        >>> w = torch.tensor([1.0], requires_grad=True)
        >>> opt = GradientDescent([w], lr=0.1)
        >>> (3 + 3 * w).pow(2).sum().backward()  # dL/dw = 18 (w + 1) = 36
        >>> opt.step(); round(w.item(), 6)
        -2.6
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float, weight_decay: float = 0.0):
        if not lr > 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if weight_decay < 0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.update()
        return loss

    @torch.no_grad()
    def update(self) -> None:
        """The step's arithmetic alone: what `step()` does, without torch's per-step profiler
        wrapper and hooks (about 20 µs a call, which matters for mini-batches of a few rows)."""
        for group in self.param_groups:
            with_grad = [p for p in group["params"] if p.grad is not None]
            gd_update(
                with_grad,
                [p.grad for p in with_grad],
                lr=group["lr"],
                weight_decay=group["weight_decay"],
            )
