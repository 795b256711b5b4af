"""`gdlab.watch`: measure and explain the descent of a user's own PyTorch training loop.

Each step costs a few fused calls on the model's device and no host synchronisation: at the end
of each backward pass (a callback the autograd engine runs once every gradient is accumulated,
queued behind DistributedDataParallel's all-reduce) the watcher measures every gradient's norm
and every weight's in one fused call: the gradient before any clipping the loop does next, all-
reduced under DDP, unscaled under a GradScaler. (A loop that sets `.grad` without backward() is
measured in the optimizer's step pre-hook instead.) The pre-hook copies the parameters into one
buffer every `ratio_every` steps; `step(loss)`, after the optimizer's step, turns that buffer
into the update Δθ in place and measures it. The per-layer squares are summed on the device into
one row of a block; a full block (BLOCK steps) is copied to the host at once, and the diagnoses
(`watching.diagnoses`) read the host copy. Every `every` steps, with a `probe`, the sharpness on
the probe batch is estimated (`watching.probe`) within a time budget: when probes have taken
more than BUDGET of the time since the first step (and more than FLOOR seconds), they are spaced
twice as far apart (`budget=None`: every `every` steps whatever they cost).

Memory: one copy of the trainable parameters (the update buffer); a probe step adds the power
iteration's vector and, every `every` steps, the previous update for the cosine between
successive updates.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gdlab.atomic import write_text
from gdlab.errors import GdlabError, GdlabWarning, caller_level
from gdlab.watching import diagnoses as rules
from gdlab.watching.folder import HISTORY, SOURCE, SUMMARY
from gdlab.watching.probe import preconditioner, sharpness, threshold, untouched

BLOCK = 64  # steps recorded on the device between copies to the host
EVERY = 50  # steps between probes
BUDGET = 0.05  # the most of the training time probes may take...
FLOOR = 0.25  # ...once they have taken this many seconds (a tiny model's probes are free)
RATIOS = 10  # steps between measures of the update Δθ (a copy and a pass over the parameters)


class Watcher:
    """What `gdlab.watch` returns; use it as a context manager and call `step(loss)` after
    each optimizer step."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        out: str | Path | None = None,
        probe: Callable[[], torch.Tensor] | None = None,
        every: int = EVERY,
        scaler: Any = None,
        block: int = BLOCK,
        budget: float | None = BUDGET,
        ratio_every: int = RATIOS,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise GdlabError(f"watch: model must be a torch.nn.Module, not {type(model).__name__}.")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise GdlabError(
                f"watch: optimizer must be a torch.optim.Optimizer, not {type(optimizer).__name__}."
            )
        if not all(isinstance(n, int) and n >= 1 for n in (every, block, ratio_every)):
            raise GdlabError(
                "watch: `every`, `block` and `ratio_every` must be whole numbers of steps >= 1."
            )
        if budget is not None and not (isinstance(budget, float | int) and 0 < budget <= 1):
            raise GdlabError("watch: budget is a share of the training time in (0, 1], or None.")
        if probe is not None and not callable(probe):
            raise GdlabError("watch: probe must be a function of no arguments returning a loss.")
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise GdlabError("watch: the model has no trainable parameters.")
        self.model, self.optimizer, self.probe, self.every = model, optimizer, probe, every
        self.scaler, self.block, self.budget = scaler, block, budget
        self.ratio_every = ratio_every
        self._snapped = False
        self.out = Path(out) if out is not None else None
        self.params: list[torch.Tensor] = [p for _, p in named]
        self.layers: list[str] = []
        weighted: dict[str, bool] = {}
        index = []
        for name, p in named:
            layer = name.rsplit(".", 1)[0] if "." in name else name
            if layer not in weighted:
                self.layers.append(layer)
                weighted[layer] = False
            weighted[layer] |= p.ndim >= 2
            index.append(self.layers.index(layer))
        self.weighted = [weighted[layer] for layer in self.layers]
        device = self.params[0].device
        self._index = torch.tensor(index, device=device)
        self._index2 = torch.cat([self._index, self._index + len(self.layers)])
        width = len(self.layers)
        self._buffer = torch.full((block, 1 + 3 * width), math.nan, device=device)
        self._filled = 0
        self._snapshot: list[torch.Tensor] | None = None
        self._grad_sq: torch.Tensor | None = None
        self._weight_sq: torch.Tensor | None = None
        self._previous_update: list[torch.Tensor] | None = None
        self._vector: list[torch.Tensor] | None = None
        self._method = "double backward"
        self._hook: Any = None
        self._grad_hooks: list[Any] = []
        self._queued = False  # a measure is queued behind the running backward pass
        self._stepped = False  # the optimizer stepped since the last step(loss)
        self.steps = 0
        self.host: list[np.ndarray] = []
        self.rates: list[tuple[float, float]] = []  # the first group's (lr, momentum) a step
        self.probes: list[dict[str, Any]] = []
        self.skipped: list[str] = [] if probe else [
            "sharpness and the stability threshold: no probe given (watch(..., probe=lambda: "
            "loss_fn(model(xb), yb)) on a fixed batch)"
        ]  # fmt: skip
        self.diagnoses: list[rules.Diagnosis] = []
        self._started: float | None = None
        self._probe_seconds = 0.0

    # -- the loop's side -------------------------------------------------------------------

    def __enter__(self) -> Watcher:
        self._hook = self.optimizer.register_step_pre_hook(self._before_step)
        self._grad_hooks = [
            p.register_post_accumulate_grad_hook(self._accumulated)  # type: ignore[no-untyped-call]
            for p in self.params
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        for hook in self._grad_hooks:
            hook.remove()
        self._grad_hooks = []
        self._flush()
        self.write()

    def step(self, loss: torch.Tensor | float) -> None:
        """Record the step just taken (call it after `optimizer.step()`)."""
        if self._hook is None:
            raise GdlabError("watch: call step() inside `with gdlab.watch(...) as w:`.")
        if self._started is None:
            self._started = time.perf_counter()
        with torch.no_grad():
            if self._grad_sq is None:  # neither a backward pass nor a step: as they are
                self._measure()
            grad_sq, weight_sq = self._grad_sq, self._weight_sq
            assert grad_sq is not None and weight_sq is not None
            if self._stepped and self._snapped and self._snapshot is not None:
                torch._foreach_sub_(self._snapshot, self.params)  # θ_before - θ_after
                update_sq = self._squares(self._snapshot)
            else:  # no update measured this step (or a GradScaler skipped it)
                update_sq = torch.full_like(grad_sq, math.nan)
            value = loss.detach().reshape(1) if isinstance(loss, torch.Tensor) else (
                torch.tensor([float(loss)]))  # fmt: skip
            row = torch.cat([value.to(grad_sq), grad_sq, weight_sq, update_sq])
            self._buffer[self._filled].copy_(row, non_blocking=True)
        self._grad_sq = None
        self._stepped = self._queued = False  # (a failed backward pass ran no callback)
        self._filled += 1
        self.steps += 1
        group = self.optimizer.param_groups[0]
        betas = group.get("betas")
        momentum = float(betas[0]) if betas is not None else float(group.get("momentum", 0.0))
        self.rates.append((float(group["lr"]), momentum))
        if self.probe is not None and self.steps % self.every == self.every - 1:
            self._keep_update()
        if self.probe is not None and self.steps % self.every == 0:
            self._run_probe()
        if self._filled == self.block:
            self._flush()

    def _accumulated(self, param: torch.Tensor) -> None:
        """A parameter's gradient is accumulated: measure them all once the pass ends."""
        if self._queued:
            return
        self._queued = True
        engine = torch.autograd.Variable._execution_engine
        # Queued from within a callback, the measure runs after every callback queued during
        # the pass, among them DistributedDataParallel's wait for its all-reduce.
        engine.queue_callback(lambda: engine.queue_callback(self._after_backward))

    def _after_backward(self) -> None:
        self._queued = False
        with torch.no_grad():
            self._measure()

    def _measure(self) -> None:
        """Gradient and weight norms by layer, on the device: one fused call."""
        both = self._squares([*self._grads(), *self.params])
        self._grad_sq, self._weight_sq = both.chunk(2)
        if self.scaler is not None and _scaled(self.scaler, self.optimizer):
            self._grad_sq /= self.scaler._scale.to(self._grad_sq) ** 2

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._stepped = True
        with torch.no_grad():
            if self._grad_sq is None:  # gradients set without a backward pass
                self._measure()
            self._snapped = self._measures_update(self.steps + 1)
            if not self._snapped:
                return
            if self._snapshot is None:
                self._snapshot = [p.detach().clone() for p in self.params]
            else:
                torch._foreach_copy_(self._snapshot, self.params)

    def _measures_update(self, step: int) -> bool:
        """Whether `step` measures its update Δθ (one copy and one pass more): every
        `ratio_every` steps, and the two steps whose updates a probe's cosine compares."""
        probing = self.probe is not None and step % self.every in (0, self.every - 1)
        return step % self.ratio_every == 0 or probing

    def _grads(self) -> list[torch.Tensor]:
        return [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]

    def _squares(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """The sum of squares of each layer's tensors, on the device: one fused norm call.
        Given two lists of the parameters' shapes one after the other (gradients, then
        weights), the layers' sums of each, one after the other."""
        norms = torch.stack(torch._foreach_norm(tensors)).float()
        copies = len(tensors) // len(self.params)
        index = self._index if copies == 1 else self._index2
        sums = torch.zeros(copies * len(self.layers), device=norms.device)
        return sums.index_add_(0, index, norms * norms)

    # -- probes ----------------------------------------------------------------------------

    def _keep_update(self) -> None:
        if self._snapshot is not None:
            self._previous_update = [s.clone() for s in self._snapshot]

    def _run_probe(self) -> None:
        assert self.probe is not None and self._started is not None
        began = time.perf_counter()
        elapsed = began - self._started - self._probe_seconds
        if self.budget is not None and self._probe_seconds > max(self.budget * elapsed, FLOOR):
            self.every *= 2  # over its budget: probe half as often
            return
        scale = preconditioner(self.optimizer, self.params)
        try:
            with untouched(self.model, self.params):
                found, self._vector = self._estimate(scale)
        except Exception as error:  # the user's probe: say why and keep training
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
            self.skipped.append(f"sharpness: the probe failed ({reason})")
            self.probe = None
            return
        limit, rule = threshold(self.optimizer)
        self.probes.append({
            "step": self.steps, "sharpness": found.value, "residual": found.residual,
            "method": found.method, "threshold": limit, "rule": rule,
            "lr": float(self.optimizer.param_groups[0]["lr"]), "cosine": self._cosine(),
            "preconditioned": scale is not None,
        })  # fmt: skip
        self._probe_seconds += time.perf_counter() - began
        said = rules.sharpness(self.probes)
        if said is not None:
            self._say(said)

    def _estimate(self, scale: list[torch.Tensor] | None) -> Any:
        """λmax (of P^-1/2 H P^-1/2 with Adam's `scale`) by double backward, falling back to
        finite differences for good once the model has no second derivative."""
        assert self.probe is not None
        if self._method == "double backward":
            try:
                return sharpness(self.probe, self.params, self._vector, scale=scale)
            except RuntimeError as error:
                if "derivative" not in str(error) and "grad" not in str(error):
                    raise
                self._method = "finite differences"
        return sharpness(self.probe, self.params, self._vector, method=self._method, scale=scale)

    def _cosine(self) -> float:
        """cos(Δθ_t, Δθ_t-1) of the last two updates (-1: they oscillate, +1: they agree)."""
        if self._previous_update is None or self._snapshot is None:
            return math.nan
        a, b = self._previous_update, self._snapshot
        dot = sum(float((x.double() * y.double()).sum()) for x, y in zip(a, b, strict=True))
        norms = math.sqrt(sum(float(x.double().pow(2).sum()) for x in a)) * math.sqrt(
            sum(float(y.double().pow(2).sum()) for y in b)
        )
        self._previous_update = None
        return dot / norms if norms > 0 else math.nan

    # -- the host side ---------------------------------------------------------------------

    def _flush(self) -> None:
        if not self._filled:
            return
        block = self._buffer[: self._filled].double().cpu().numpy().copy()
        self._buffer.fill_(math.nan)
        self._filled = 0
        self.host.append(block)
        self._diagnose(len(block))

    def recorded(self, last: int | None = None) -> rules.Steps:
        """The recorded steps on the host (the `last` ones only: the blocks they lie in are
        joined, not the whole run)."""
        blocks, rows_in = [], 0
        for block in reversed(self.host):
            if last is not None and rows_in >= last:
                break
            blocks.append(block)
            rows_in += len(block)
        width = 1 + 3 * len(self.layers)
        rows = np.concatenate(blocks[::-1]) if blocks else np.empty((0, width))
        if last is not None:
            rows = rows[-last:]
        first = self.steps - self._filled - len(rows) + 1  # the step number of rows[0]
        k = len(self.layers)
        with np.errstate(invalid="ignore"):
            roots = np.sqrt(rows[:, 1:])
        return rules.Steps(
            step=np.arange(first, first + len(rows)), loss=rows[:, 0], grad=roots[:, :k],
            weight=roots[:, k : 2 * k], update=roots[:, 2 * k :], layers=self.layers,
            weighted=self.weighted,
        )  # fmt: skip

    def _diagnose(self, new: int) -> None:
        """The rules on the block just copied (rules over a window: on the last steps), each
        kind until it has been said: a flush costs the same at step 100 and step 100,000."""
        said = {d.kind for d in self.diagnoses}
        fresh = self.recorded(last=new)
        lr = self.rates[-1][0] if self.rates else math.nan
        found = []
        if "non_finite" not in said:
            found.append(rules.non_finite(fresh))
        if not said & {"vanishing", "exploding"}:
            found.append(rules.depth(fresh, lr))
        if "plateau" not in said:
            found.append(rules.plateau(self.recorded(last=2 * rules.PLATEAU_STEPS)))
        if "non_finite" not in said and not any(d and d.kind == "non_finite" for d in found):
            named = {d.layer for d in self.diagnoses if d.kind in ("vanishing", "exploding")}
            window = self.recorded(last=rules.RATIO_STEPS)
            found += rules.update_ratios(window, skip={n for n in named if n})
        for diagnosis in found:
            if diagnosis is not None:
                self._say(diagnosis)

    def _say(self, diagnosis: rules.Diagnosis) -> None:
        for said in self.diagnoses:
            if said.kind == diagnosis.kind and (
                diagnosis.kind != "update_ratio" or said.layer == diagnosis.layer
            ):
                return
        self.diagnoses.append(diagnosis)
        warnings.warn(f"gdlab watch: {diagnosis.message}", GdlabWarning, stacklevel=caller_level())

    def summary(self) -> dict[str, Any]:
        """The run so far: steps, layers, diagnoses (kind, step, layer, message), probes and
        the measures that were skipped, with why."""
        self._flush()
        steps = self.recorded()
        last = {name: float(steps.grad[-1, i]) for i, name in enumerate(self.layers)} if len(
            steps.loss) else {}  # fmt: skip
        return {
            "source": SOURCE,
            "steps": self.steps,
            "layers": self.layers,
            "loss": float(steps.loss[-1]) if len(steps.loss) else math.nan,
            "grad_norm": last,
            "diagnoses": [d.as_dict() for d in self.diagnoses],
            "probes": self.probes,
            "skipped": self.skipped,
            "probe_seconds": self._probe_seconds,
            "settings": {
                "every": self.every,
                "budget": self.budget,
                "block": self.block,
                "ratio_every": self.ratio_every,
            },
        }

    def write(self) -> None:
        """history.csv (a row a step, per-layer columns) and summary.json into `out`, atomically;
        rank 0 alone in a torch.distributed run."""
        if self.out is None or not _leader():
            return
        self.out.mkdir(parents=True, exist_ok=True)
        steps = self.recorded()
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(["step", "loss", "grad_norm", "lr", "momentum",
                         *(f"grad_norm:{n}" for n in self.layers),
                         *(f"update_ratio:{n}" for n in self.layers)])  # fmt: skip
        with np.errstate(invalid="ignore", divide="ignore"):
            total = np.sqrt((steps.grad**2).sum(1))
            ratio = steps.update / steps.weight
        for i in range(len(steps.loss)):
            lr, momentum = self.rates[i]
            writer.writerow([int(steps.step[i]), f"{steps.loss[i]:.9g}", f"{total[i]:.9g}",
                             f"{lr:.9g}", f"{momentum:.9g}",
                             *(f"{v:.6g}" for v in steps.grad[i]),
                             *(f"{v:.6g}" for v in ratio[i])])  # fmt: skip
        write_text(self.out / HISTORY, text.getvalue())
        write_text(self.out / SUMMARY, json.dumps(self.summary(), indent=2, default=str))

    def _repr_html_(self) -> str:
        from html import escape

        summary = self.summary()
        items = (
            "".join(
                f"<li><b>{escape(d['kind'])}</b> (step {d['step']}): {escape(d['message'])}</li>"
                for d in summary["diagnoses"]
            )
            or "<li>nothing wrong found</li>"
        )
        return (
            f"<div><b>gdlab watch</b>: {summary['steps']} steps, {len(self.layers)} layers, "
            f"loss {summary['loss']:.4g}<ul>{items}</ul></div>"
        )


def _scaled(scaler: Any, optimizer: Any) -> bool:
    """Whether the gradients still carry the GradScaler's scale (not yet `unscale_`d)."""
    states = getattr(scaler, "_per_optimizer_states", {})
    stage = states.get(id(optimizer), {}).get("stage")
    return getattr(stage, "name", "") != "UNSCALED" and getattr(scaler, "_scale", None) is not None


def _leader() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def watch(model: nn.Module, optimizer: torch.optim.Optimizer, **options: Any) -> Watcher:
    """`with gdlab.watch(model, optimizer, out=..., probe=...) as w:` then `w.step(loss)`
    after each optimizer step; `w.summary()["diagnoses"]` says what is wrong."""
    return Watcher(model, optimizer, **options)
