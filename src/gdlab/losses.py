"""Losses by name. Classification losses take logits, so the models never apply a sigmoid."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

LOSSES: dict[str, Callable[[], nn.Module]] = {
    "mse": nn.MSELoss,
    "mae": nn.L1Loss,
    "huber": nn.HuberLoss,
    "bce": nn.BCEWithLogitsLoss,
    "cross-entropy": nn.CrossEntropyLoss,
}


def make_loss(name: str) -> nn.Module:
    return LOSSES[name]()


def wants_class_indices(loss: Callable[..., torch.Tensor]) -> bool:
    """Cross-entropy and NLL take targets as class indices (n,); the others as floats (n, 1)."""
    return isinstance(loss, (nn.CrossEntropyLoss, nn.NLLLoss))


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of |w| over weight matrices; biases are not penalised."""
    terms = [p.abs().sum() for name, p in model.named_parameters() if not name.endswith("bias")]
    return torch.stack(terms).sum()
