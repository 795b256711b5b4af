"""Gradient norms the loop records and tests: over all parameters, per layer, with the L2
penalty, and over the full batch for mini-batch runs."""

from __future__ import annotations

import math

import torch
from torch import nn

from gdlab.losses import add_l1_gradient
from gdlab.train.state import LossFunction, Split

FULL_GRADIENT_ROWS = 1 << 16  # rows per chunk when a mini-batch run measures the full gradient


def all_finite(params: list[torch.Tensor]) -> bool:
    """Whether every parameter is finite: one reduction over all of them, not one per tensor."""
    with torch.no_grad():
        return bool(torch.cat([p.reshape(-1) for p in params]).isfinite().all())


def grad_norms(
    params: list[torch.Tensor], start: list[torch.Tensor] | None = None
) -> tuple[float, list[float], list[float]]:
    """The gradient's norm over all parameters and per parameter tensor (layer), and with
    `start` (the parameters when the epoch began) each tensor's update ratio ‖Δθ‖/‖θ‖ over the
    epoch: fused calls (the ones torch.nn.utils.clip_grad_norm_ uses) and one copy to the
    host, whatever the number of layers."""
    grads = [p.grad for p in params]
    if not grads or any(g is None for g in grads):
        return math.nan, [], []
    with torch.no_grad():
        tensors = grads if start is None else [*grads, *torch._foreach_sub(params, start), *start]
        values = torch.stack(torch._foreach_norm(tensors)).tolist()  # type: ignore[arg-type]
    k = len(params)
    norms = values[:k]
    ratios = [] if start is None else [
        step / size if size > 0 else math.inf if step > 0 else 0.0
        for step, size in zip(values[k : 2 * k], values[2 * k :], strict=True)
    ]  # fmt: skip
    return math.sqrt(sum(v * v for v in norms)), norms, ratios


def penalized_norm(params: list[torch.Tensor], weight_decay: float) -> float:
    """‖g + weight_decay·θ‖: the gradient of the L2-penalized loss every coupled optimizer
    follows, which is zero at its optimum."""
    grads = [p.grad for p in params]
    if any(g is None for g in grads):
        return math.nan
    with torch.no_grad():
        total = torch._foreach_add(grads, params, alpha=weight_decay)  # type: ignore[arg-type]
        return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(total))))


def full_gradient_norm(
    model: nn.Module,
    loss_fn: LossFunction,
    data: Split,
    params: list[torch.Tensor],
    l1: float,
    weight_decay: float,
) -> float:
    """The norm of the full-batch gradient at the current parameters, in chunks of rows, for
    mini-batch runs whose recorded gradient is one batch's. `.grad` is left as it was."""
    saved = [None if p.grad is None else p.grad.clone() for p in params]
    n = data.X.shape[0]
    for p in params:
        p.grad = None
    for begin in range(0, n, FULL_GRADIENT_ROWS):
        X = data.X[begin : begin + FULL_GRADIENT_ROWS]
        y = data.y[begin : begin + FULL_GRADIENT_ROWS]
        (loss_fn(model(X), y) * (len(X) / n)).backward()  # type: ignore[no-untyped-call]
    if l1:
        add_l1_gradient(model, l1)
    norm = penalized_norm(params, weight_decay)
    for p, grad in zip(params, saved, strict=True):
        p.grad = grad
    return norm
