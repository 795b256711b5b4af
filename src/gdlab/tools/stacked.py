"""K copies of one model trained together at K rates: the engine under `gdlab sweep`.

The K runs of one optimizer are K copies of the parameters stacked along a new first axis.
Their gradients come from the training loop's own sources: the analytic source made K copies
wide for linear and logistic models (`train/analytic.py`), the least-squares statistics' loss
and gradient at K points for full-batch least squares (`train/exact.py`), and otherwise
autograd on the sum of the copies' losses, evaluated by `torch.func.vmap` over
`functional_call` (or batched matrix products for gdlab's own models), which gives each copy
its own gradient. One optimizer steps all copies with rate 1, and each copy's step is then
scaled by its own rate: for gd, sgd, momentum, nesterov, adam, adamw, rmsprop and adagrad the
step is proportional to the rate (their state does not depend on it), so this is the same
update as K separate runs, up to rounding. A schedule multiplies every copy's rate by the same
factor each epoch, and L1 adds l1·sign(w) to each copy's weight gradients, as the loop does.
The divergence and early-stopping tests are the loop's (`train/rules.py`), copy by copy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from gdlab.config import FitOptions
from gdlab.models import ACTIVATIONS
from gdlab.optim.gd import GradientDescent
from gdlab.optim.registry import optimizer_for
from gdlab.train.analytic import AnalyticGradient
from gdlab.train.rules import (
    DIVERGENCE_FACTOR,
    RISE_FACTOR,
    RISE_WINDOW,
    divergence,
    improved,
)


@dataclass
class SweepRun:
    optimizer: str
    lr: float
    losses: list[float]  # per epoch, in the target's units
    label: str = ""
    reason: str = ""
    val_losses: list[float] = field(default_factory=list)  # with a validation split

    @property
    def final(self) -> float:
        return self.losses[-1] if self.losses else math.nan


class StackedCopies:
    """The K stacked copies trained with one optimizer."""

    def __init__(self, net: torch.nn.Module, opts: FitOptions, lrs: list[float]) -> None:
        self.net = net
        k = len(lrs)
        self.params = {
            key: value.detach().unsqueeze(0).repeat(k, *([1] * value.dim())).requires_grad_(True)
            for key, value in net.named_parameters()
        }
        self.optimizer = optimizer_for(opts, list(self.params.values()))  # rate 1, scaled below
        self.l1 = opts.l1
        first = next(iter(self.params.values()))
        self.rates = torch.tensor(lrs, dtype=first.dtype, device=first.device)
        self.alive = torch.ones(k, dtype=torch.bool, device=first.device)
        self.scales = [self.rates.view((-1,) + (1,) * (p.dim() - 1)) for p in self.params.values()]
        self.runs = [SweepRun(opts.optimizer, lr, []) for lr in lrs]
        self.optimizer_name = opts.optimizer
        self.start: list[float] | None = None
        self.lowest: list[float] = []  # each run's lowest loss so far (the rising test's best)
        self.best = [math.inf] * k  # early stopping: the best validation loss, its epoch and
        self.best_epoch = [0] * k  # the epochs waited since, as the training loop keeps them
        self.waited = [0] * k
        self.analytic: AnalyticGradient | None = None  # linear models: formulas, not autograd

    def outputs(self, X: torch.Tensor) -> torch.Tensor:
        """(K, n, outputs): batched matrix products for gdlab's own models, vmap otherwise."""
        layers: list[tuple[str, nn.Module]] | None = None
        if isinstance(self.net, nn.Linear):
            layers = [("", self.net)]
        if isinstance(self.net, nn.Sequential):
            layers = [(f"{name}.", module) for name, module in self.net.named_children()]
        if layers is None or not all(isinstance(m, (nn.Linear, *ACTIVATIONS.values()))
                                     for _, m in layers):  # fmt: skip
            result: torch.Tensor = vmap(lambda p: functional_call(self.net, p, (X,)))(self.params)
            return result
        h = X
        for prefix, module in layers:
            if isinstance(module, nn.Linear):
                weight = self.params[prefix + "weight"]  # (K, out, in)
                if len(layers) == 1:  # a linear model: one GEMM for all K copies
                    k, out, width = weight.shape
                    h = (h @ weight.reshape(k * out, width).T).view(-1, k, out).transpose(0, 1)
                else:
                    h = h @ weight.transpose(-1, -2)
                if module.bias is not None:
                    h = h + self.params[prefix + "bias"].unsqueeze(-2)
            else:
                h = module(h)
        return h

    def step(self, losses: torch.Tensor, factor: float = 1.0) -> None:
        self.optimizer.zero_grad()
        everyone = bool(self.alive.all())
        (losses.sum() if everyone else losses[self.alive].sum()).backward()  # type: ignore[no-untyped-call]
        self.advance(factor)

    def theta(self) -> torch.Tensor:
        """A linear model's K parameter vectors [w, b] as rows, in float64."""
        weight = self.params["weight"]
        rows = [weight.detach().reshape(len(weight), -1)]
        if "bias" in self.params:
            rows.append(self.params["bias"].detach().reshape(len(weight), -1))
        return torch.cat(rows, dim=1).double()

    def set_gradients(self, gradients: torch.Tensor) -> None:
        """Rows of `gradients` (K, p) become the linear model's .grad; dead copies get none."""
        weight = self.params["weight"]
        width = weight[0].numel()
        weight.grad = gradients[:, :width].to(weight.dtype).reshape(weight.shape)
        if "bias" in self.params:
            bias = self.params["bias"]
            bias.grad = gradients[:, width:].to(bias.dtype).reshape(bias.shape)
        self.silence_dead()

    @torch.no_grad()
    def silence_dead(self) -> None:
        """Zero the gradients of copies that have stopped (a diverged copy's may be NaN)."""
        if bool(self.alive.all()):
            return
        for p in self.params.values():
            if p.grad is not None:
                p.grad.masked_fill_(~self.alive.view((-1,) + (1,) * (p.dim() - 1)), 0.0)

    def advance(self, factor: float = 1.0) -> None:
        """The optimizer's step at rate 1, then each copy's step scaled by its own rate times
        the schedule's `factor`. gdlab's gd needs no detour: p - rate (grad + weight_decay p),
        copy by copy. L1 first adds l1·sign(w) to the weights' gradients (not the biases')."""
        everyone = bool(self.alive.all())
        params = list(self.params.values())
        if self.l1:
            with torch.no_grad():
                for name, p in self.params.items():
                    if p.grad is not None and not name.endswith("bias"):
                        p.grad.add_(self.l1 * torch.sign(p))
        scales = self.scales if factor == 1.0 else [s * factor for s in self.scales]
        if isinstance(self.optimizer, GradientDescent):
            with torch.no_grad():
                grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
                decay = self.optimizer.param_groups[0]["weight_decay"]
                if decay:
                    grads = list(torch._foreach_add(grads, params, alpha=decay))
                rates = scales if everyone else [
                    s * self.alive.view(s.shape) for s in scales
                ]  # fmt: skip
                torch._foreach_sub_(params, torch._foreach_mul(grads, rates))
            return
        with torch.no_grad():
            before = torch._foreach_mul(params, 1.0)  # copies, in one call
        self.optimizer.step()
        with torch.no_grad():
            if everyone:  # p = before + rate (p - before), in place, all tensors at once
                torch._foreach_sub_(params, before)
                torch._foreach_mul_(params, scales)
                torch._foreach_add_(params, before)
                return
            for p, old, rate in zip(params, before, scales, strict=True):
                keep = self.alive.view(rate.shape)
                p.copy_(torch.where(keep, old + rate * (p - old), old))

    def record(self, epoch: int, losses: list[float]) -> None:
        if self.start is None:
            self.start, self.lowest = losses, list(losses)
        for k, (run, value) in enumerate(zip(self.runs, losses, strict=True)):
            if not self.alive[k]:
                continue
            run.losses.append(value)
            self.lowest[k] = min(self.lowest[k], value)  # kept, not recomputed each epoch
            recent = run.losses[-RISE_WINDOW:]
            if divergence(value, self.start[k], self.lowest[k], recent) is not None:
                self.alive[k] = False
                run.label, run.reason = "diverged", _divergence(value, self.start[k], epoch)

    def watch(self, epoch: int, val_losses: list[float], opts: FitOptions, scale: float) -> None:
        """Early stopping, copy by copy, by the loop's rule (`rules.improved`) on the
        validation loss in training units: a copy stops after `patience` epochs without an
        improvement by `tol`."""
        for k, (run, value) in enumerate(zip(self.runs, val_losses, strict=True)):
            if not self.alive[k]:
                continue
            run.val_losses.append(value * scale)
            if improved(value, self.best[k], opts.tol):
                self.best[k], self.best_epoch[k], self.waited[k] = value, epoch + 1, 0
                continue
            self.waited[k] += 1
            if self.waited[k] >= opts.patience:
                self.alive[k] = False
                run.label = "early_stopped"
                run.reason = (
                    f"the validation loss last improved at epoch {self.best_epoch[k]} "
                    f"({self.best[k] * scale:.4g}); stopped {opts.patience} epochs later"
                )

    def record_curve(self, k: int, losses: np.ndarray) -> None:
        """Copy k's whole loss curve at once, cut where `record` would have stopped it."""
        run, start = self.runs[k], float(losses[0])
        with np.errstate(invalid="ignore"):  # the loop's tests, all epochs at once
            lowest = np.minimum.accumulate(np.where(np.isfinite(losses), losses, np.inf))
            rising = np.zeros(len(losses), dtype=bool)
            if len(losses) >= RISE_WINDOW:  # fewer epochs than the window: never rising
                window = np.lib.stride_tricks.sliding_window_view(losses, RISE_WINDOW).min(1)
                rising[RISE_WINDOW - 1 :] = window > RISE_FACTOR * lowest[RISE_WINDOW - 1 :]
            bad = ~np.isfinite(losses) | ((start > 0) & (losses > DIVERGENCE_FACTOR * start))
            bad |= rising & (lowest > 0)
        if not bad.any():
            run.losses = losses.tolist()
            return
        first = int(np.argmax(bad))
        run.losses = losses[: first + 1].tolist()
        self.alive[k] = False
        run.label, run.reason = "diverged", _divergence(float(losses[first]), start, first)


def _divergence(value: float, start: float, epoch: int) -> str:
    grew = f"grew to {value:.3g}, over {DIVERGENCE_FACTOR:g}x its start {start:.3g}"
    if not math.isfinite(value):
        grew = "became NaN or infinite"
    return f"the loss {grew} at epoch {epoch + 1}"


def per_copy_loss(
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(K, n, outputs) and the shared targets -> (K,) mean losses, without vmap when possible."""
    if not isinstance(loss_fn, nn.modules.loss._Loss):
        return vmap(loss_fn, in_dims=(0, None))
    elementwise = type(loss_fn)(reduction="none")
    if isinstance(loss_fn, nn.CrossEntropyLoss):

        def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            k, n, classes = outputs.shape
            flat: torch.Tensor = elementwise(outputs.reshape(k * n, classes), targets.repeat(k))
            return flat.view(k, n).mean(1)

        return cross_entropy

    def mean_per_copy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        losses: torch.Tensor = elementwise(outputs, targets.expand_as(outputs))
        return losses.mean(dim=(1, 2))

    return mean_per_copy
