"""`gdlab.watch`: measure and explain the descent of a user's own PyTorch training loop.

Each step costs a fused norm call or two on the model's device and no host synchronisation.
When a backward pass ends (a callback the autograd engine runs once every gradient is
accumulated, queued behind DistributedDataParallel's all-reduce), each parameter's gradient
norm goes into this step's row: before any clipping the loop does next, all-reduced under DDP,
unscaled under a GradScaler (a loop that sets `.grad` without backward() is measured in the
optimizer's step pre-hook instead). The weights' norms are measured with the updates, and on
the CPU also whenever a gradient is not finite (a read there waits for nothing), so that the
first non-finite layer is named; on a GPU, every step. Every `ratio_every` steps the pre-hook
copies the parameters into one buffer, and `step(loss)`, after the optimizer's step, turns it
into the update Δθ in place and measures it. A full block of rows (BLOCK steps on a GPU,
CPU_BLOCK on the CPU) is copied to the host at once, summed into layers there, and read by
the diagnoses (`watching.diagnoses`). Every `every` steps, with a `probe`, the sharpness on the
probe batch is estimated (`watching.probe`) within a time budget: when probes have taken more
than BUDGET of the time since the first step (and more than FLOOR seconds), they are spaced
twice as far apart (`budget=None`: every `every` steps whatever they cost).

Memory: one copy of the trainable parameters (the update buffer) and the block (3 numbers a
parameter tensor a step); a probe adds the power iteration's vector and the previous update
for the cosine between successive updates.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
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
from gdlab.watching.folder import HISTORY, SOURCE, SUMMARY, in_memory
from gdlab.watching.probe import (
    activations,
    plain_name,
    preconditioner,
    sharpness,
    threshold,
    untouched,
)

BLOCK = 64  # steps recorded on a GPU between copies to the host (a copy waits for the device)
CPU_BLOCK = 256  # on the CPU a copy waits for nothing: fewer, larger blocks cost less per step
EVERY = 50  # steps between probes
BUDGET = 0.02  # the most of the training time probes may take...
FLOOR = 0.05  # ...once they have taken this many seconds (a tiny model's probes are free)
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
        block: int | None = None,
        budget: float | None = BUDGET,
        ratio_every: int = RATIOS,
        overwrite: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise GdlabError(f"watch: model must be a torch.nn.Module, not {type(model).__name__}.")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise GdlabError(
                f"watch: optimizer must be a torch.optim.Optimizer, not {type(optimizer).__name__}."
            )
        counts = (every, ratio_every) if block is None else (every, block, ratio_every)
        if not all(isinstance(n, int) and n >= 1 for n in counts):
            raise GdlabError(
                "watch: `every`, `block` and `ratio_every` must be whole numbers of steps >= 1."
            )
        if budget is not None and not (isinstance(budget, float | int) and 0 < budget <= 1):
            raise GdlabError("watch: budget is a share of the training time in (0, 1], or None.")
        if probe is not None and not callable(probe):
            raise GdlabError("watch: probe must be a function of no arguments returning a loss.")
        named = [(plain_name(model, name), p) for name, p in model.named_parameters()
                 if p.requires_grad]  # fmt: skip
        if not named:
            raise GdlabError("watch: the model has no trainable parameters.")
        if block is None:
            block = CPU_BLOCK if named[0][1].device.type == "cpu" else BLOCK
        self.model, self.optimizer, self.probe, self.every = model, optimizer, probe, every
        self.scaler, self.block, self.budget = scaler, block, budget
        self.ratio_every = ratio_every
        self._snapped = False
        self.out = _out_folder(out, overwrite) if out is not None else None
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
        n = len(self.params)
        # each layer's parameters (a matrix product would spread one nan to every layer)
        self._members = [np.flatnonzero(np.array(index) == k) for k in range(len(self.layers))]
        # A row a step: the loss, then each parameter's gradient, weight and update norm.
        self._buffer = torch.empty((block, 1 + 3 * n), device=device)
        self._columns = (slice(1, 1 + n), slice(1 + n, 1 + 2 * n), slice(1 + 2 * n, 1 + 3 * n))
        # each row's views (loss, gradients, weights, updates), made once: a step indexes none
        self._views = [(row[0], *(row[c] for c in self._columns)) for row in self._buffer]
        self._clear()
        # On the CPU reading a value costs no synchronisation: the weights are measured when
        # a gradient is not finite (to name the layer) and with the updates; on a GPU, every
        # step, as reading back would stall the device.
        self._weights_always = device.type != "cpu"
        self._last_weights = np.full(n, math.nan)
        self._skips: list[bool] = []  # a GradScaler skipped the step (inf/NaN gradients)
        self._filled = 0
        self._snapshot: list[torch.Tensor] | None = None
        self._measured = False  # this step's gradient norms are in its row
        self.stopped: str | None = None  # why a measure failed, and measuring stopped
        self._sparse = False  # a gradient is sparse: norms are taken of the values
        self._previous_update: list[torch.Tensor] | None = None
        self._vector: list[torch.Tensor] | None = None
        self._method = "double backward"
        self._hook: Any = None
        self._grad_hooks: list[Any] = []
        self._queued = False  # a measure is queued behind the running backward pass
        self._stepped = False  # the optimizer stepped since the last step(loss)
        self.steps = 0
        self.host: list[np.ndarray] = []
        self.rates: list[tuple[float, ...]] = []  # each group's lr and momentum, a step
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
        self._unhook()
        self._flush()
        self.write()

    def _unhook(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        for hook in self._grad_hooks:
            hook.remove()
        self._grad_hooks = []

    def _stop(self, error: Exception) -> None:
        """A measure failed, in a case the watcher does not know (it runs inside the user's
        backward() and step()): say so once and measure nothing more, so that training goes on
        as it would unwatched; the steps recorded so far are kept and written."""
        self._unhook()
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        self.stopped = f"{type(error).__name__}: {reason}" if reason else type(error).__name__
        self.skipped.append(
            f"every measure from step {self.steps + 1} on: the watcher failed ({self.stopped})"
        )
        warnings.warn(
            f"gdlab watch: stopped measuring at step {self.steps + 1} ({self.stopped}); training "
            f"goes on unwatched, and the {self.steps} steps recorded are kept. Please report it "
            f"with the model's layout.",
            GdlabWarning,
            stacklevel=caller_level(),
        )

    def step(self, loss: torch.Tensor | float) -> None:
        """Record the step just taken (call it after `optimizer.step()`)."""
        if self.stopped is not None:  # a measure failed: training goes on unwatched
            return
        if self._hook is None:
            raise GdlabError("watch: call step() inside `with gdlab.watch(...) as w:`.")
        if self._started is None:
            self._started = time.perf_counter()
        try:
            self._record(loss)
        except Exception as error:
            self._stop(error)

    def _record(self, loss: torch.Tensor | float) -> None:
        if not self._measured:  # neither a backward pass nor a step: as they are
            with torch.no_grad():
                self._measure()
        value, _, _, updates = self._views[self._filled]
        # (a step's Python runs with cold caches after the model's kernels: each call counts)
        if isinstance(loss, torch.Tensor):
            value.copy_(loss.detach() if loss.ndim == 0 else loss.detach().reshape(()))
        else:
            value.fill_(float(loss))
        if self._stepped and self._snapped and self._snapshot is not None:
            with torch.no_grad():
                torch._foreach_sub_(self._snapshot, self.params)  # θ_before - θ_after
                self._norms(self._snapshot, updates)
        self._skips.append(self.scaler is not None and not self._stepped)
        self._measured = self._stepped = self._queued = False  # (a failed backward: no callback)
        self._filled += 1
        self.steps += 1
        self.rates.append(tuple(value for group in self.optimizer.param_groups
                                for value in _rate(group)))  # fmt: skip
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
        if self.stopped is not None:
            return
        try:
            with torch.no_grad():
                self._measure()
        except Exception as error:
            self._stop(error)

    def _measure(self) -> None:
        """Each gradient's norm into this step's row, on the device (one fused call); the
        weights' too where `_weights_always`, at the first step, or for a non-finite gradient
        (on update steps the step pre-hook measures them from its copy)."""
        _, grads, weights, _ = self._views[self._filled]
        # in float64 under a scaler: a scaled gradient's square overflows float32 long before
        scaled = self.scaler is not None and _scaled(self.scaler, self.optimizer)
        scale = self.scaler._scale if scaled else None
        tensors = self._grads()
        if self._sparse:
            tensors = [_strided(g) for g in tensors]
        try:
            self._norms(tensors, grads, scale=scale)
        except (NotImplementedError, RuntimeError):  # no fused norm for a sparse gradient
            if self._sparse or all(g.layout == torch.strided for g in tensors):
                raise
            self._sparse = True  # nn.Embedding(sparse=True): from now on, by their values
            self._norms([_strided(g) for g in tensors], grads, scale=scale)
        if (
            self._weights_always
            or self.steps == 0
            or not math.isfinite(sum(grads.tolist()))  # CPU: a read, no synchronisation
        ):
            self._norms(self.params, weights)
        self._measured = True

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        try:
            self._copy_before_step()
        except Exception as error:
            self._stop(error)

    def _copy_before_step(self) -> None:
        self._stepped = True
        self._snapped = self._measures_update(self.steps + 1)
        if self._measured and not self._snapped:  # most steps: nothing to do here
            return
        with torch.no_grad():
            if not self._measured:  # gradients set without a backward pass
                self._measure()
            if not self._snapped:
                return
            if self._snapshot is None:
                self._snapshot = [p.detach().clone() for p in self.params]
            else:
                torch._foreach_copy_(self._snapshot, self.params)
            if not self._weights_always:  # the copy is in the cache: a cold read of θ saved
                self._norms(self._snapshot, self._views[self._filled][2])

    def _measures_update(self, step: int) -> bool:
        """Whether `step` measures its update Δθ (one copy and one pass more): every
        `ratio_every` steps, and the two steps whose updates a probe's cosine compares."""
        probing = self.probe is not None and step % self.every in (0, self.every - 1)
        return step % self.ratio_every == 0 or probing

    def _grads(self) -> list[torch.Tensor]:
        return [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]

    @staticmethod
    def _norms(
        tensors: list[torch.Tensor], out: torch.Tensor, scale: torch.Tensor | None = None
    ) -> None:
        """Each tensor's norm into `out`, in one fused call: accumulated in float32 at least,
        and in float64 and divided by `scale` for a GradScaler's scaled gradients."""
        if scale is not None:
            norms = torch._foreach_norm(tensors, 2, dtype=torch.float64)
            out.copy_(torch.stack(norms).div_(scale.double()))
            return
        low = tensors[0].dtype in (torch.float16, torch.bfloat16)
        norms = torch._foreach_norm(tensors, 2, dtype=torch.float32) if low else (
            torch._foreach_norm(tensors))  # fmt: skip
        torch.stack(norms, out=out)

    def _clear(self) -> None:
        """An empty block: nan (not measured) everywhere, -1 where weights were not measured
        (the host carries the last measured weights forward; nan there means non-finite)."""
        self._buffer.fill_(math.nan)
        self._buffer[:, self._columns[1]] = -1.0

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
        rows = self._buffer[: self._filled].double().cpu().numpy().copy()
        self._clear()
        self._filled = 0
        grads, weights, updates = (rows[:, c] for c in self._columns)
        unmeasured = weights < 0  # the weights as last measured (they move slowly)
        latest = np.where(unmeasured, -1, np.arange(len(rows))[:, None])
        np.maximum.accumulate(latest, axis=0, out=latest)
        carried = np.take_along_axis(weights, np.maximum(latest, 0), axis=0)
        weights = np.where(latest >= 0, carried, self._last_weights)
        self._last_weights = weights[-1].copy()
        by_layer = [np.sqrt(np.column_stack([(norms[:, m] ** 2).sum(1) for m in self._members]))
                    for norms in (grads, weights, updates)]  # fmt: skip
        skips, self._skips = np.array(self._skips, dtype=float), []
        block = np.column_stack([rows[:, 0], skips, *by_layer])
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
        width = 2 + 3 * len(self.layers)
        rows = np.concatenate(blocks[::-1]) if blocks else np.empty((0, width))
        if last is not None:
            rows = rows[-last:]
        first = self.steps - self._filled - len(rows) + 1  # the step number of rows[0]
        k = len(self.layers)
        return rules.Steps(
            step=np.arange(first, first + len(rows)), loss=rows[:, 0], skipped=rows[:, 1] > 0,
            grad=rows[:, 2 : 2 + k], weight=rows[:, 2 + k : 2 + 2 * k], update=rows[:, 2 + 2 * k :],
            layers=self.layers, weighted=self.weighted,
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
            kinds = ("vanishing", "exploding")
            depth = [d for d in [*self.diagnoses, *found] if d and d.kind in kinds]
            window = self.recorded(last=rules.RATIO_STEPS)
            vanishing = any(d.kind == "vanishing" for d in depth)
            found += rules.update_ratios(window, skip={d.layer for d in depth if d.layer},
                                         slow=not vanishing)  # fmt: skip
        for diagnosis in found:
            if diagnosis is not None:
                self._say(diagnosis)

    def _say(self, diagnosis: rules.Diagnosis) -> None:
        for said in self.diagnoses:
            if said.kind == diagnosis.kind and (
                diagnosis.kind != "update_ratio" or said.layer == diagnosis.layer
            ):
                return
        if diagnosis.kind == "vanishing" and self.probe is not None:
            diagnosis = self._with_activations(diagnosis)
        self.diagnoses.append(diagnosis)
        warnings.warn(f"gdlab watch: {diagnosis.message}", GdlabWarning, stacklevel=caller_level())

    def _with_activations(self, diagnosis: rules.Diagnosis) -> rules.Diagnosis:
        """The diagnosis with what the probe batch shows of the activations (saturated or dead
        layers), where the model's activations are modules a forward hook sees."""
        try:
            with untouched(self.model, self.params):
                seen = activations(self.model, self.probe)  # type: ignore[arg-type]
        except Exception:  # the probe's own failure is said when it next runs
            return diagnosis
        if not seen:
            return diagnosis
        return dataclasses.replace(diagnosis, message=f"{diagnosis.message} Layers {seen}.")

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
        run = in_memory(self)
        text = io.StringIO()
        writer = csv.writer(text)
        groups = len(self.rates[0]) // 2 if self.rates else 1
        writer.writerow(["step", "loss", "grad_norm", "lr", "momentum",
                         *(f"{name}:group{g}" for g in range(1, groups)
                           for name in ("lr", "momentum")),
                         *(f"grad_norm:{n}" for n in self.layers),
                         *(f"update_ratio:{n}" for n in self.layers)])  # fmt: skip
        for i in range(len(run.step)):
            rates = self.rates[i][: 2 * groups] + (math.nan,) * (2 * groups - len(self.rates[i]))
            writer.writerow([int(run.step[i]), f"{run.loss[i]:.9g}", f"{run.grad_norm[i]:.9g}",
                             *(f"{v:.9g}" for v in rates),
                             *(f"{v:.6g}" for v in run.grad[i]),
                             *(f"{v:.6g}" for v in run.ratio[i])])  # fmt: skip
        write_text(self.out / HISTORY, text.getvalue())
        write_text(self.out / SUMMARY, json.dumps(run.summary, indent=2, default=str))

    def _repr_html_(self) -> str:
        from gdlab.notebook import watch_html

        return watch_html(self)


def _strided(gradient: torch.Tensor) -> torch.Tensor:
    """A tensor with the gradient's norm that the fused norm takes: a sparse gradient's
    coalesced values (an uncoalesced one repeats rows), any other layout made dense."""
    if gradient.is_sparse:
        return gradient.coalesce().values()
    return gradient if gradient.layout == torch.strided else gradient.to_dense()


def _out_folder(out: Any, overwrite: bool) -> Path:
    """`out` as a folder the watcher may write, made now on rank 0: a bad path is refused
    before training, not after it, and another watched run there is kept unless `overwrite`."""
    if not isinstance(out, str | os.PathLike):
        raise GdlabError(f"watch: out is a folder path, not {type(out).__name__}.")
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise GdlabError(f"watch: out {folder} is a file; give a folder path.")
    held = [name for name in (SUMMARY, HISTORY) if (folder / name).exists()]
    if held and not overwrite:
        raise GdlabError(
            f"watch: {folder} already holds a watched run ({', '.join(held)}); choose another "
            f"folder or pass overwrite=True."
        )
    if _leader():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise GdlabError(f"watch: cannot make the folder {folder} ({reason}).") from None
    return folder


def _rate(group: dict[str, Any]) -> tuple[float, float]:
    """A parameter group's lr as it stands (after any scheduler) and momentum (β1 for Adam)."""
    betas = group.get("betas")
    momentum = float(betas[0]) if betas is not None else float(group.get("momentum", 0.0))
    return float(group["lr"]), momentum


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
