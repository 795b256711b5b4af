"""Vanishing and exploding gradients, as the tutorials mean them: across the depth of a network.

Backpropagation multiplies the gradient, layer by layer, by each layer's weights and its
activation's derivative. When that factor is below one (a sigmoid's derivative is at most 1/4,
tanh's at most 1, and both vanish where the units saturate), the first layers' gradients are
orders of magnitude below the last layers' and those layers barely move; when it is above one
(weights drawn too large), they are orders above and the first steps blow the run up. The test
is relative, never a fixed threshold: the first weight layer's gradient norm against the
last's, at the initial point, on the run's own rows; and, for exploding gradients, the first
step's size against the layer's own (lr·‖∂L/∂W‖/‖W‖ above 1: one step is larger than the
layer), which is how a large initialization shows in a relu network, whose every layer's
gradient grows with the signal.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

ORDERS = 3.0  # a first layer's gradient this many orders of magnitude from the last's is named
ROWS = 4096  # rows the initial gradients are measured on (the first ones of the training set)
MOST_DERIVATIVE = {"sigmoid": 0.25, "tanh": 1.0, "relu": 1.0}


def initial_layer_gradients(
    net: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    X: torch.Tensor,
    y: torch.Tensor,
) -> dict[str, tuple[float, float]]:
    """(‖∂L/∂W‖, ‖W‖) of each weight tensor, in depth order, at the model's current point
    (one forward and backward pass on up to ROWS rows; the model's .grad is untouched)."""
    weights = [(name, p) for name, p in net.named_parameters() if name.endswith("weight")]
    grads = torch.autograd.grad(loss_fn(net(X[:ROWS]), y[:ROWS]), [p for _, p in weights])
    with torch.no_grad():
        tensors = [*grads, *(p for _, p in weights)]
        norms = torch.stack([torch.linalg.vector_norm(t) for t in tensors]).tolist()
    k = len(weights)
    return {name: (norms[i], norms[k + i]) for i, (name, _) in enumerate(weights)}


def diagnose(
    layers: dict[str, tuple[float, float]],
    *,
    lr: float,
    activation: str,
    init: str,
    update_ratios: dict[str, list[float]] | None = None,
) -> str:
    """One paragraph naming vanishing or exploding gradients with the layers, the likely cause
    and what to change; '' when neither test holds."""
    names = list(layers)
    if len(names) < 3:  # at least two hidden layers: depth is what the test is about
        return ""
    norms = {name: gradient for name, (gradient, _) in layers.items()}
    steps = {name: lr * g / w for name, (g, w) in layers.items() if w > 0 and math.isfinite(g)}
    first, last = norms[names[0]], norms[names[-1]]
    if not (first > 0 and last > 0 and math.isfinite(first) and math.isfinite(last)):
        return ""
    orders = math.log10(last / first)
    depth = len(names)
    if orders >= ORDERS:
        moved = _movement(update_ratios, names)
        cause = (
            f"{activation}'s derivative is at most {MOST_DERIVATIVE[activation]:g} and vanishes "
            f"where its units saturate, and backpropagation multiplies by it once per layer "
            f"({depth} weight layers)"
            if activation in ("sigmoid", "tanh")
            else f"the initial weights ({init}) shrink the signal at each of the {depth} layers"
        )
        return (
            f"vanishing gradients: the first layer's gradient ({names[0]}, {first:.2g}) is "
            f"{orders:.1f} orders of magnitude below the last layer's ({names[-1]}, "
            f"{last:.2g}) at the start, so the first layers barely learn{moved}. Cause: {cause}. "
            f"Try `activation=relu` with `init=he`, keep `standardize=True`, or use fewer layers."
        )
    worst = max(steps, key=steps.__getitem__) if steps else None
    if orders > -ORDERS and (worst is None or steps[worst] <= 1):
        return ""
    if orders <= -ORDERS:
        what = (
            f"the first layer's gradient ({names[0]}, {first:.2g}) is {-orders:.1f} orders of "
            f"magnitude above the last layer's ({names[-1]}, {last:.2g}) at the start"
        )
    else:
        assert worst is not None
        g, w = layers[worst]
        what = (
            f"at the start, layer {worst}'s gradient ({g:.2g}) is so large that one step at "
            f"`lr={lr:g}` moves it {steps[worst]:.2g} times its own size ({w:.2g})"
        )
    return (
        f"exploding gradients: {what}. Cause: the initial weights ({init}) grow the signal "
        f"and its gradient at each of the {depth} layers. Try `init=he` (relu) or "
        f"`init=xavier` (tanh, sigmoid), a smaller `lr`, or clipping the gradient."
    )


def _movement(ratios: dict[str, list[float]] | None, names: list[str]) -> str:
    """How far the first and last layers moved in the first epoch, when it was recorded."""
    if not ratios or names[0] not in ratios or names[-1] not in ratios:
        return ""
    first, last = ratios[names[0]][0], ratios[names[-1]][0]
    if not (math.isfinite(first) and math.isfinite(last)):
        return ""
    return (
        f" (the first epoch changed {names[0]} by {first:.1g} of its size, {names[-1]} by "
        f"{last:.1g})"
    )
