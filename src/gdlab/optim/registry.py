"""Optimizer names resolved to torch optimizers: `gd` is gdlab's own, the rest torch.optim's."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.optim import optimizer as base

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


def bare_step(optimizer: torch.optim.Optimizer) -> Callable[[], object]:
    """`optimizer.step` without torch's per-call wrapper while no step hook is registered.

    torch wraps every optimizer class's `step` in a profiler range that also runs the step
    hooks (`Optimizer.profile_hook_step`): about 20 µs a call, a tenth of a tiny model's epoch.
    The function it wraps is the step itself (its arithmetic, with the optimizer's own grad
    mode); the wrapper is called instead whenever the optimizer, or torch globally, has a
    step hook (registered before the run or during it), while torch's profiler records (so a
    profile still shows each step), and for an optimizer whose step is not torch's wrapped
    one."""
    if isinstance(optimizer, GradientDescent):
        return optimizer.update
    step = type(optimizer).step
    inner = getattr(step, "__wrapped__", None)
    if inner is None or not getattr(step, "hooked", False) or "step" in vars(optimizer):
        return optimizer.step

    def bare() -> object:
        if (
            optimizer._optimizer_step_pre_hooks
            or optimizer._optimizer_step_post_hooks
            or base._global_optimizer_pre_hooks
            or base._global_optimizer_post_hooks
            or torch.autograd._profiler_enabled()  # type: ignore[attr-defined]
        ):
            return optimizer.step()
        return inner(optimizer)

    return bare
