"""Optimizer names resolved to torch optimizers: `gd` is gdlab's own, the rest torch.optim's."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from gdlab import compile_guards
from gdlab.config import FitOptions
from gdlab.optim.gd import GradientDescent

Factory = Callable[[Iterable[torch.Tensor], float, float, float], torch.optim.Optimizer]

OPTIMIZERS: dict[str, Factory] = {
    "gd": lambda params, lr, momentum, wd: GradientDescent(params, lr=lr, weight_decay=wd),
    "sgd": lambda params, lr, momentum, wd: torch.optim.SGD(params, lr=lr, weight_decay=wd),
    "momentum": lambda params, lr, momentum, wd: torch.optim.SGD(
        params, lr=lr, momentum=momentum, weight_decay=wd
    ),
    "nesterov": lambda params, lr, momentum, wd: torch.optim.SGD(
        params, lr=lr, momentum=momentum, nesterov=True, weight_decay=wd
    ),
    "adagrad": lambda params, lr, momentum, wd: torch.optim.Adagrad(params, lr=lr, weight_decay=wd),
    "rmsprop": lambda params, lr, momentum, wd: torch.optim.RMSprop(params, lr=lr, weight_decay=wd),
    "adam": lambda params, lr, momentum, wd: torch.optim.Adam(params, lr=lr, weight_decay=wd),
    "adamw": lambda params, lr, momentum, wd: torch.optim.AdamW(params, lr=lr, weight_decay=wd),
}


def make_optimizer(
    name: str, params: Iterable[torch.Tensor], *, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    compile_guards.apply()  # the command line: no torch._dynamo import (see compile_guards)
    return OPTIMIZERS[name](params, lr, momentum, weight_decay)


def optimizer_for(options: FitOptions, params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
    """The optimizer that `options` name, over `params`."""
    return make_optimizer(
        options.optimizer,
        params,
        lr=options.rate,
        momentum=options.momentum,
        weight_decay=options.weight_decay,
    )
