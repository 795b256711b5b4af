"""Models by name: linear, logistic, softmax, poly:K and mlp:H1,H2,... as torch modules.

linear, logistic, softmax and poly are all one `nn.Linear`: they differ in their loss (and poly in
its expanded inputs, made in `gdlab.data.scaling`). Building them right after
`torch.manual_seed(S)` gives the same initial numbers as a plain PyTorch script seeded with S.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model name: its kind, polynomial degree and hidden-layer widths."""

    kind: str
    degree: int = 1
    hidden: tuple[int, ...] = ()

    @classmethod
    def parse(cls, name: str) -> ModelSpec:
        kind, _, argument = name.partition(":")
        if kind == "poly":
            return cls(kind, degree=int(argument))
        if kind == "mlp":
            return cls(kind, hidden=tuple(int(width) for width in argument.split(",")))
        return cls(kind)

    @property
    def is_linear_in_parameters(self) -> bool:
        """True when the prediction is X @ W.T + b, so coefficients exist and MSE is quadratic."""
        return self.kind != "mlp"


def build_model(
    spec: ModelSpec,
    n_inputs: int,
    n_outputs: int,
    *,
    intercept: bool,
    activation: str,
    init: str = "default",
) -> nn.Module:
    """A fresh module (call after seeding): torch's default initialisation, or for an mlp's
    layers `init` (see `initialize`)."""
    if spec.kind != "mlp":
        return nn.Linear(n_inputs, n_outputs, bias=intercept)
    layers: list[nn.Module] = []
    width = n_inputs
    for hidden in spec.hidden:
        layers += [nn.Linear(width, hidden, bias=intercept), ACTIVATIONS[activation]()]
        width = hidden
    layers.append(nn.Linear(width, n_outputs, bias=intercept))
    net = nn.Sequential(*layers)
    initialize(net, init, activation)
    return net


GAINS = {"relu": 2.0**0.5, "tanh": 5.0 / 3.0, "sigmoid": 1.0}  # torch's calculate_gain


@torch.no_grad()
def initialize(net: nn.Module, init: str, activation: str) -> None:
    """Set every linear layer's weights by `init`, biases to 0 (except 'default', torch's own):

    - xavier: normal with variance 2/(fan_in + fan_out) x gain² (Glorot; keeps the signal's
      scale through tanh and sigmoid layers),
    - he: normal with variance 2/fan_in (Kaiming; keeps it through relu layers),
    - normal:STD: normal with standard deviation STD (a large STD makes gradients explode).
    """
    if init == "default":
        return
    for layer in net.modules():
        if not isinstance(layer, nn.Linear):
            continue
        if init == "xavier":
            nn.init.xavier_normal_(layer.weight, gain=GAINS[activation])
        elif init == "he":
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        else:
            nn.init.normal_(layer.weight, 0.0, float(init.split(":", 1)[1]))
        if layer.bias is not None:
            layer.bias.zero_()
