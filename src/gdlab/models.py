"""Models by name: linear, logistic, softmax, poly:K and mlp:H1,H2,... as torch modules.

linear, logistic, softmax and poly are all one `nn.Linear`: they differ in their loss (and poly in
its expanded inputs, made in `gdlab.data.scaling`). Building them right after
`torch.manual_seed(S)` gives the same initial numbers as a plain PyTorch script seeded with S.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    spec: ModelSpec, n_inputs: int, n_outputs: int, *, intercept: bool, activation: str
) -> nn.Module:
    """A fresh module with torch's default initialisation (call after seeding)."""
    if spec.kind != "mlp":
        return nn.Linear(n_inputs, n_outputs, bias=intercept)
    layers: list[nn.Module] = []
    width = n_inputs
    for hidden in spec.hidden:
        layers += [nn.Linear(width, hidden, bias=intercept), ACTIVATIONS[activation]()]
        width = hidden
    layers.append(nn.Linear(width, n_outputs, bias=intercept))
    return nn.Sequential(*layers)
