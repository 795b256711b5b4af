"""Many learning rates (and optimizers) trained together: every batch is read once for all.

The K runs of one optimizer are K copies of the parameters stacked along a new first axis;
`torch.func.vmap` over `functional_call` evaluates all of them on the same batch, and the sum
of their losses has, for each copy, that copy's own gradient. One optimizer steps all copies
with rate 1, and each copy's step is then scaled by its own rate: for gd, sgd, momentum,
nesterov, adam, adamw, rmsprop and adagrad the step is proportional to the rate (their state
does not depend on it), so this is the same update as K separate runs, up to rounding. A
schedule multiplies every copy's rate by the same factor each epoch, and L1 adds l1·sign(w) to
each copy's weight gradients, as the training loop does.

With a validation split each copy stops early as a separate run would: when its validation
loss has not improved by tol for patience epochs. The convergence tests (gtol, xtol) are
refused, and tol and patience without a validation split (the stall test): a sweep runs every
rate for the same epochs so that the curves compare.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from gdlab.config import OPTIMIZERS, OPTIONS_BY_NAME, FitOptions, make_options
from gdlab.data.arrays import as_matrix, as_vector
from gdlab.errors import GdlabError
from gdlab.models import ACTIVATIONS
from gdlab.optim.gd import GradientDescent
from gdlab.optim.kinds import kind_of
from gdlab.optim.registry import optimizer_for
from gdlab.optim.schedules import make_schedule
from gdlab.problem import Problem
from gdlab.train.analytic import LOSSES as ANALYTIC_LOSSES
from gdlab.train.analytic import AnalyticGradient
from gdlab.train.closed_form import Modes
from gdlab.train.exact import LeastSquaresStatistics
from gdlab.train.rules import (
    DIVERGENCE_FACTOR,
    RISE_FACTOR,
    RISE_WINDOW,
    divergence,
    epoch_order,
    improved,
)

SWEEP_EPOCHS = 1000
MAX_RATES = 1000
GOOD_WITHIN = 0.05  # a run within 5% of the best final loss is "good"
OSCILLATING_SHARE = 0.1  # rising in more than 10% of the last half of epochs
STOP_OPTIONS = ("gtol", "xtol", "tol", "patience")  # refused: see the docstring
EARLY_STOPPING = ("tol", "patience")  # ... except these two, with a validation split


def _refuse_stop_options(options: dict[str, Any]) -> None:
    validation = bool(options.get("val_fraction"))
    for name in STOP_OPTIONS:
        if validation and name in EARLY_STOPPING:
            continue
        if name in options and options[name] != OPTIONS_BY_NAME[name].default:
            raise GdlabError(
                f"`{name}` is a stop test, and a sweep has none: it runs every rate for the "
                f"same epochs so that the curves compare (only divergence, or early stopping "
                f"on a `val_fraction` split, ends a run early). Leave `{name}` out, and fit "
                f"the rate you choose with it."
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


def parse_rates(text: str) -> list[float]:
    """'1e-4:1:16' is 16 rates log-spaced from 1e-4 to 1; 'a,b,c' lists them."""
    try:
        if ":" in text:
            low, high, count = text.split(":")
            if not 1 <= int(count) <= MAX_RATES:
                rates = [math.nan] * 2  # refused below, with the count named
            else:
                rates = np.geomspace(float(low), float(high), int(count)).tolist()
        else:
            rates = [float(part) for part in text.split(",")]
    except ValueError:
        rates = []
    if ":" in text and len(rates) == 2 and math.isnan(rates[0]):
        raise GdlabError(f"--lr {text!r}: a sweep takes 1 to {MAX_RATES} rates.")
    if not rates or not all(math.isfinite(r) and r > 0 for r in rates):
        raise GdlabError(
            f"--lr {text!r}: give LOW:HIGH:COUNT (log-spaced, e.g. 1e-4:1:16) or a comma list of "
            f"positive rates."
        )
    return [float(rate) for rate in rates]


def parse_optimizers(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in OPTIMIZERS]
    if not names or unknown:
        raise GdlabError(
            f"--optimizer {text!r}: unknown {', '.join(unknown) or 'name'}; choose from "
            f"{', '.join(OPTIMIZERS)}."
        )
    return names


def sweep(
    X: Any,
    y: Any,
    *,
    lrs: list[float],
    optimizers: list[str],
    feature_names: list[str] | None = None,
    **options: Any,
) -> tuple[list[SweepRun], Problem]:
    """Train every (optimizer, lr) pair from the same initial point; label each run."""
    options.setdefault("epochs", SWEEP_EPOCHS)  # curves of a fixed length, compared
    _refuse_stop_options(options)
    opts = make_options(**{**options, "lr": 1.0})
    matrix, names = as_matrix(X)
    names = list(feature_names) if feature_names is not None else names
    problem = Problem(opts, matrix, as_vector(y, len(matrix)), names, custom_model=None,
                      copies=len(lrs) * len(optimizers))  # fmt: skip
    net, loss_fn, data = problem.initial_problem()
    scale = problem.loss_scale()
    groups = [_Group(net, dataclasses.replace(opts, optimizer=name), lrs) for name in optimizers]
    factor = make_schedule(opts.schedule, 1.0, opts.budget)  # the schedule's rate at lr = 1
    n = data.X.shape[0]
    size = n if opts.batch_size is None else opts.batch_size
    linear = problem.fast_linear(net) is not None
    stats = problem.statistics
    validating = len(problem.val_rows) > 0
    if linear and size >= n and stats is not None and math.isfinite(stats.least_loss):
        validation = problem.least_squares(problem.val_rows) if validating else None
        for group in groups:  # full-batch least squares: no pass over the rows at all
            _least_squares_sweep(group, stats, validation, opts, scale, factor)
        runs = [run for group in groups for run in group.runs]
        label(runs)
        return runs, problem
    if validating:
        X_val, y_val = problem.tensors(problem.val_rows, loss_fn, data.X.device)
    analytic = linear and opts.resolved_loss in ANALYTIC_LOSSES
    if analytic:  # the loop's analytic source, K copies wide
        for group in groups:
            group.analytic = AnalyticGradient(group.params["weight"], group.params.get("bias"),
                                              data.X, data.y, opts.resolved_loss, size)  # fmt: skip
    generator = torch.Generator().manual_seed(opts.seed)
    batched_loss = _per_copy_loss(loss_fn)
    for epoch in range(opts.budget):
        order = epoch_order(n, size, generator)
        totals = [torch.zeros(len(lrs), dtype=torch.float64) for _ in groups]
        for begin in range(0, n, size):
            rows = None if order is None else order[begin : begin + size].to(data.X.device)
            Xb = data.X if rows is None or analytic else data.X.index_select(0, rows)
            yb = data.y if rows is None or analytic else data.y.index_select(0, rows)
            for group, total in zip(groups, totals, strict=True):
                if group.analytic is not None:
                    losses = group.analytic.gradients(rows)
                    group.silence_dead()
                    group.advance(factor(epoch))
                else:
                    losses = batched_loss(group.outputs(Xb), yb)
                    group.step(losses, factor(epoch))
                total += losses.detach().double().cpu() * (n if rows is None else len(rows))
        for group, total in zip(groups, totals, strict=True):
            group.record(epoch, (total / n * scale).tolist())
            if validating:
                with torch.no_grad():
                    val = batched_loss(group.outputs(X_val), y_val).double().cpu().tolist()
                group.watch(epoch, val, opts, scale)
        if not any(group.alive.any() for group in groups):
            break
    runs = [run for group in groups for run in group.runs]
    label(runs)
    return runs, problem


class _Group:
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


def _least_squares_sweep(
    group: _Group,
    stats: LeastSquaresStatistics,
    validation: LeastSquaresStatistics | None,
    opts: FitOptions,
    scale: float,
    factor: Callable[[int], float],
) -> None:
    """Full-batch least squares from the sufficient statistics: plain gd or sgd at constant
    rates in closed form (each rate's whole loss curve at once), anything else stepping on
    (2/n)(Gθ - h) for all copies in one product. Losses are recorded before each step, as
    the loop does."""
    constant = (opts.schedule == "constant" and opts.weight_decay == 0 and opts.l1 == 0
                and validation is None)  # fmt: skip
    if kind_of(group.optimizer_name).plain and constant:
        modes = Modes.of(stats, group.theta()[0].numpy(), 1.0)  # one eigendecomposition
        epochs = np.arange(opts.budget)
        for k, run in enumerate(group.runs):
            with np.errstate(over="ignore", invalid="ignore"):
                curve = modes.at_rate(run.lr).train_loss(stats, epochs) * scale
            group.record_curve(k, curve)
        return
    for epoch in range(opts.budget):
        theta = group.theta()
        losses = stats.losses(theta)  # the exact source's formulas, K rows at once
        group.set_gradients(stats.gradient(theta))
        group.advance(factor(epoch))
        group.record(epoch, (losses * scale).tolist())
        if validation is not None:
            after = group.theta()
            group.watch(epoch, [validation.loss(row) for row in after], opts, scale)
        if not group.alive.any():
            return


def _per_copy_loss(
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


def label(runs: list[SweepRun]) -> None:
    """too-small, good, oscillating or diverged, each with the numbers that decided it.

    A run's level is its mean loss over the last tenth of the epochs (mini-batch losses are
    noisy). Good: within 5% of the best level. Otherwise oscillating when the loss rose in
    over 10% of the last half's epochs, and too-small when it is still falling steadily.
    """
    levels = {id(run): _level(run.losses) for run in runs if run.label != "diverged"}
    finite = [level for level in levels.values() if math.isfinite(level)]
    best = min(finite) if finite else math.nan
    for run in runs:
        if run.label in ("diverged", "early_stopped"):
            continue
        level = levels[id(run)]
        losses = np.asarray(run.losses)
        tail = losses[len(losses) // 2 :]
        rises = int(np.sum(np.diff(tail) > 0))
        if level <= best * (1 + GOOD_WITHIN):
            run.label = "good"
            run.reason = f"loss {level:.4g} is within {GOOD_WITHIN:.0%} of the best, {best:.4g}"
        elif rises > OSCILLATING_SHARE * max(1, len(tail) - 1):
            run.label = "oscillating"
            run.reason = (
                f"the loss rose in {rises} of the last {len(tail) - 1} epochs and stays at "
                f"{level / best:.3g}x the best"
            )
        else:
            run.label = "too-small"
            run.reason = (
                f"still falling at the end; loss {level:.4g} is {level / best:.3g}x the best"
            )


def _level(losses: list[float]) -> float:
    if not losses:
        return math.nan
    return float(np.mean(losses[-max(1, len(losses) // 10) :]))
