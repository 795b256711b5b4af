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


def penalised(model: nn.Module) -> list[torch.Tensor]:
    """The parameters L1 acts on: weight matrices; biases are not penalised."""
    return [p for name, p in model.named_parameters() if not name.endswith("bias")]


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of |w| over the penalised parameters."""
    return torch.stack([p.abs().sum() for p in penalised(model)]).sum()


@torch.no_grad()
def add_l1_gradient(model: nn.Module, l1: float) -> None:
    """Add the gradient of l1 * l1_penalty(model) to .grad, as autograd would."""
    for p in penalised(model):
        if p.grad is not None:
            p.grad.add_(l1 * torch.sign(p))
