"""What a watcher says about a user's training run: one line each, with the numbers, the step,
the layer and what to change. Every rule reads the host copy of the recorded steps (`Steps`)
and the probes; each kind is said once, at the first step where its test holds.

The tests are relative, as in `analysis.gradients` (which judges gdlab's own networks at their
initial point): a first layer's gradient ORDERS orders of magnitude from the last's; an update
larger than its layer; an update-to-weight ratio below RATIO_LOW or above RATIO_HIGH (the
usual range of a healthy layer is around 1e-3 a step); the sharpness above the optimizer's
stability threshold on ABOVE probes in a row; a loss whose median improved by less than
PLATEAU over the last PLATEAU_STEPS steps. The watcher gives each rule the rows it needs: the
block just copied for the per-step tests, the last steps for the windowed ones.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from gdlab.analysis.gradients import ORDERS

RATIO_LOW, RATIO_HIGH = 1e-6, 0.1
ABOVE = 2  # probes in a row above the threshold
PLATEAU, PLATEAU_STEPS = 1e-3, 200
RATIO_STEPS = 400  # the window of steps whose median update ratio is judged


@dataclass(frozen=True)
class Diagnosis:
    kind: str  # vanishing, exploding, lr_above_threshold, non_finite, update_ratio, plateau
    step: int
    layer: str | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Steps:
    """The recorded steps on the host: one row a step; per-layer columns in depth order."""

    step: np.ndarray  # (n,) the watcher's step numbers (1, 2, ...)
    loss: np.ndarray  # (n,)
    skipped: np.ndarray  # (n,) bool: a GradScaler skipped the step (its gradient overflowed)
    grad: np.ndarray  # (n, layers) ‖g‖ per layer, unscaled
    weight: np.ndarray  # (n, layers) ‖θ‖ per layer, before the step (as last measured)
    update: np.ndarray  # (n, layers) ‖Δθ‖ per layer (nan before the first update)
    layers: list[str]
    weighted: list[bool]  # whether the layer holds a weight matrix (not a bias or norm only)


def non_finite(steps: Steps) -> Diagnosis | None:
    bad = ~np.isfinite(steps.loss) | ~np.isfinite(steps.weight).all(1)
    bad |= ~np.isfinite(steps.grad).all(1) & ~steps.skipped  # a scaler's overflow is no fault
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    weights, grads = ~np.isfinite(steps.weight[i]), ~np.isfinite(steps.grad[i])
    where = weights if weights.any() else grads
    what = "weights" if weights.any() else "gradient"
    layer = steps.layers[int(np.argmax(where))] if where.any() else None
    place = f"in the {what} of layer {layer}" if layer else "in the loss"
    return Diagnosis("non_finite", int(steps.step[i]), layer, (
        f"non-finite values first appeared at step {int(steps.step[i])} {place}; lower the "
        f"learning rate, clip the gradient, or check the inputs of that step for NaN/inf."
    ))  # fmt: skip


def depth(steps: Steps, lr: float) -> Diagnosis | None:
    """Vanishing or exploding gradients across the depth (at least three weight layers)."""
    index = [i for i, w in enumerate(steps.weighted) if w]
    finite = np.isfinite(steps.grad).all(1)
    if len(index) < 3 or not finite.any():
        return None
    first, last = index[0], index[-1]
    names = steps.layers
    rows = np.flatnonzero(finite)  # the rows' tests at once; the first that holds is said
    grad, weight = steps.grad[rows], np.maximum(steps.weight[rows], 1e-30)
    g_first, g_last = grad[:, first], grad[:, last]
    with np.errstate(divide="ignore", invalid="ignore"):
        orders = np.where((g_first > 0) & (g_last > 0), np.log10(g_last / g_first), 0.0)
        ratio = steps.update[rows] / weight
    unmeasured = ~np.isfinite(ratio).any(1)  # a step whose update was not measured: lr‖g‖/‖θ‖
    ratio[unmeasured] = lr * grad[unmeasured] / weight[unmeasured]
    largest = np.where(np.isfinite(ratio), ratio, -np.inf).max(1)
    hits = np.flatnonzero((np.abs(orders) >= ORDERS) | (largest > 1))
    if not len(hits):
        return None
    k = int(hits[0])
    step, g_first_k, g_last_k = int(steps.step[rows[k]]), g_first[k], g_last[k]
    if orders[k] >= ORDERS:
        return Diagnosis("vanishing", step, names[first], (
            f"vanishing gradients at step {step}: layer {names[first]}'s gradient "
            f"({g_first_k:.2g}) is {orders[k]:.1f} orders of magnitude below layer "
            f"{names[last]}'s ({g_last_k:.2g}), so the first layers barely learn; use "
            f"relu (or GELU) with He initialisation, normalisation layers, residual "
            f"connections, or fewer layers."
        ))  # fmt: skip
    if orders[k] <= -ORDERS:
        return Diagnosis("exploding", step, names[first], (
            f"exploding gradients at step {step}: layer {names[first]}'s gradient "
            f"({g_first_k:.2g}) is {-orders[k]:.1f} orders of magnitude above layer "
            f"{names[last]}'s ({g_last_k:.2g}); initialise smaller (He or Xavier), "
            f"lower the learning rate, or clip the gradient."
        ))  # fmt: skip
    j = int(np.argmax(np.where(np.isfinite(ratio[k]), ratio[k], -np.inf)))
    return Diagnosis("exploding", step, names[j], (
        f"exploding gradients at step {step}: one step moves layer {names[j]} by "
        f"{ratio[k, j]:.2g} times its own size (gradient {grad[k, j]:.2g}, "
        f"lr {lr:g}); initialise smaller (He or Xavier), lower the learning rate, or "
        f"clip the gradient."
    ))  # fmt: skip


def update_ratios(steps: Steps, skip: set[str], *, slow: bool = True) -> list[Diagnosis]:
    """Layers whose median update-to-weight ratio over the given steps (the watcher passes
    the last RATIO_STEPS) is far outside the usual range, once 20 updates are measured: one
    diagnosis for the layers that barely move (unless `slow` is False: a vanishing gradient
    already explains them), one for those that move too far, each naming its first layer."""
    ratio = steps.update / np.maximum(steps.weight, 1e-30)
    measured = ratio[np.isfinite(ratio).all(1)]  # the steps that measured their update
    if len(measured) < 20:
        return []
    medians = np.median(measured, axis=0)
    low, high = [], []
    for name, median, weighted in zip(steps.layers, medians, steps.weighted, strict=True):
        if name in skip or not weighted or not np.isfinite(median):
            continue
        if median < RATIO_LOW and slow:
            low.append((name, float(median)))
        elif median > RATIO_HIGH:
            high.append((name, float(median)))
    step = int(steps.step[-1])
    found = []
    if low:
        names, values = _listed(low)
        found.append(Diagnosis("update_ratio", step, low[0][0], (
            f"{names} barely move: median updates of {values} of their size a step (usual: "
            f"about 1e-3); raise the learning rate, or check that they are in the optimizer "
            f"and receive a gradient."
        )))  # fmt: skip
    if high:
        names, values = _listed(high)
        found.append(Diagnosis("update_ratio", step, high[0][0], (
            f"{names} change by {values} of their size a step (usual: about 1e-3); lower the "
            f"learning rate, or warm it up."
        )))  # fmt: skip
    return found


def _listed(layers: list[tuple[str, float]]) -> tuple[str, str]:
    """'layer a' or 'layers a, b and c', and their values (a range when there are several)."""
    names = [name for name, _ in layers]
    values = [value for _, value in layers]
    if len(names) == 1:
        return f"layer {names[0]}", f"{values[0]:.2g}"
    return (f"layers {', '.join(names[:-1])} and {names[-1]}",
            f"{min(values):.2g} to {max(values):.2g}")  # fmt: skip


def sharpness(probes: list[dict[str, Any]]) -> Diagnosis | None:
    """The sharpness above the optimizer's threshold on ABOVE probes in a row."""
    run = 0
    for probe in probes:
        limit, value = probe["threshold"], probe["sharpness"]
        run = run + 1 if math.isfinite(limit) and value > limit else 0
        if run >= ABOVE:
            what = "preconditioned sharpness" if probe.get("preconditioned") else "sharpness"
            return Diagnosis("lr_above_threshold", probe["step"], None, (
                f"the learning rate is above the stability threshold: at step {probe['step']} "
                f"the {what} on the probe is {value:.3g}, above {probe['rule']} = "
                f"{limit:.3g} on {run} probes in a row, so the steps overshoot and the loss "
                f"oscillates or grows; lower the learning rate below "
                f"{probe['lr'] * limit / value:.2g}."
            ))  # fmt: skip
    return None


def plateau(steps: Steps) -> Diagnosis | None:
    n = len(steps.loss)
    if n < 2 * PLATEAU_STEPS:
        return None
    before = float(np.nanmedian(steps.loss[-2 * PLATEAU_STEPS : -PLATEAU_STEPS]))
    after = float(np.nanmedian(steps.loss[-PLATEAU_STEPS:]))
    if not (math.isfinite(before) and math.isfinite(after)) or before <= 0:
        return None
    if (before - after) / before >= PLATEAU:
        return None
    step = int(steps.step[-1])
    return Diagnosis("plateau", step, None, (
        f"the loss has stopped improving: its median over steps {step - PLATEAU_STEPS + 1}-"
        f"{step} ({after:.4g}) is within {PLATEAU:.1%} of the {PLATEAU_STEPS} steps before "
        f"({before:.4g}); lower the rate (a schedule) if it oscillates, raise it if the "
        f"updates are small, or stop: more steps at this rate will not help."
    ))  # fmt: skip
