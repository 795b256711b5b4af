"""Gradient norms the loop records and tests: over all parameters, per layer, with the L2
penalty, and over the full batch for mini-batch runs."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch._utils import _flatten_dense_tensors

from gdlab.losses import add_l1_gradient
from gdlab.train.state import LossFunction, Split

FULL_GRADIENT_ROWS = 1 << 16  # rows per chunk when a mini-batch run measures the full gradient


def all_finite(params: list[torch.Tensor]) -> bool:
    """Whether every parameter is finite: one reduction over all of them, not one per tensor."""
    with torch.no_grad():
        return bool(torch.cat([p.reshape(-1) for p in params]).isfinite().all())


SMALL = 256  # parameters up to which an epoch's norms also copy every entry to the host


class Norms(NamedTuple):
    total: float  # ‖g‖ over all parameters
    layers: list[float]  # ‖g‖ per parameter tensor
    ratios: list[float]  # ‖Δθ‖/‖θ‖ per tensor over the epoch (when asked)
    finite: bool  # every parameter finite
    entries: list[float] | None  # every parameter entry (small models)
    # the same entries, on the device, at the start of one flat tensor (the gradients follow)
    copy: torch.Tensor | None = None


class EpochNorms:
    """What the loop measures of the parameters after each epoch, in one copy to the host:
    the gradient's norm over all of them and per tensor (layer), whether every parameter is
    finite, and with `start` (the parameters when the epoch began) each tensor's update ratio
    ‖Δθ‖/‖θ‖.

    An epoch of a small model lasts microseconds, in which each torch call counts: its
    gradients and parameters are flattened into one vector by one call (as
    DistributedDataParallel's buckets are) and measured on the host in float64; the entries
    are its record and its finiteness test, and their copy on the device the loop's rollback
    point for the next epoch. A larger model's norms come from fused calls
    (those of torch.nn.utils.clip_grad_norm_), its finiteness from its parameters' norms (a
    finite norm has finite entries)."""

    def __init__(self, params: list[torch.Tensor]) -> None:
        self.params, self.values = params, [p.detach() for p in params]
        self.sizes = [p.numel() for p in params]
        self.small = sum(self.sizes) <= SMALL

    def __call__(self, start: list[torch.Tensor] | None = None) -> Norms:
        grads = [p.grad for p in self.params]
        if not grads or any(g is None for g in grads):
            return Norms(math.nan, [], [], all_finite(self.values), None)
        present: list[torch.Tensor] = grads  # type: ignore[assignment]
        if self.small and start is None:
            return self._on_host(present)
        k, values = len(grads), self.values
        tensors = [*present, *values] if start is None else [
            *present, *torch._foreach_sub(values, start), *start]  # fmt: skip
        measured = torch.stack(torch._foreach_norm(tensors)).tolist()
        layers = measured[:k]
        ratios = [] if start is None else [
            step / size if size > 0 else math.inf if step > 0 else 0.0
            for step, size in zip(measured[k : 2 * k], measured[2 * k :], strict=True)
        ]  # fmt: skip
        # An infinite norm may have overflowed from finite entries: then look at them.
        finite = (start is None and all(map(math.isfinite, measured[k:]))) or all_finite(values)
        return Norms(math.hypot(*layers), layers, ratios, finite, None)

    def _on_host(self, grads: list[torch.Tensor]) -> Norms:
        flat = _flatten_dense_tensors([*self.values, *grads])  # type: ignore[no-untyped-call]
        measured = flat.tolist()
        n = end = len(measured) // 2
        layers = []
        for size in self.sizes:
            layers.append(math.hypot(*measured[end : end + size]))
            end += size
        entries = measured[:n]
        finite = all(map(math.isfinite, entries))
        return Norms(math.hypot(*layers), layers, [], finite, entries, flat)


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
    total: Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]] | None = None,
) -> float:
    """The norm of the full-batch gradient at the current parameters, in chunks of rows, for
    mini-batch runs whose recorded gradient is one batch's. `.grad` is left as it was. With
    `total` (a sum over the ranks, each holding its share of a stream's rows) the gradient is
    the mean over every rank's rows."""
    saved = [None if p.grad is None else p.grad.clone() for p in params]
    n = len(data.stream) if data.stream is not None else data.X.shape[0]
    for p in params:
        p.grad = torch.zeros_like(p)
    for X, y in data.blocks(FULL_GRADIENT_ROWS):
        (loss_fn(model(X), y) * (len(X) / n)).backward()  # type: ignore[no-untyped-call]
    if total is not None:  # Σ n_r g_r / Σ n_r
        flat = torch.cat([p.grad.reshape(-1).double() * n for p in params])  # type: ignore[union-attr]
        summed = total(np.append(flat.cpu().numpy(), n))
        mean = torch.from_numpy(summed[:-1] / summed[-1])
        begin = 0
        for p in params:
            p.grad = mean[begin : begin + p.numel()].view_as(p).to(p)
            begin += p.numel()
    if l1:
        add_l1_gradient(model, l1)
    norm = penalized_norm(params, weight_decay)
    for p, grad in zip(params, saved, strict=True):
        p.grad = grad
    return norm
