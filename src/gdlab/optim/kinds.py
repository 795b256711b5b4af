"""What gdlab knows about each update rule, one record each, without importing torch.

The rules that need a property ask for it here instead of listing names: the stability limit
on a quadratic (gd, heavy-ball and Nesterov momentum have one; the adaptive rules do not),
whether the closed form applies (plain steps only), and whether weight decay is the gradient of
an L2 penalty (AdamW's decoupled decay is not, so no first-order test can hold for it). The
torch optimizer each name builds is in `gdlab.optim.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OptimizerKind:
    name: str
    limit: str = ""  # the quadratic stability limit: "gd", "heavy-ball", "nesterov", or none
    plain: bool = False  # p - lr·g: a least-squares run has a closed form
    penalty_decay: bool = True  # weight decay is the gradient of (wd/2)‖p‖²

    @property
    def momentum(self) -> bool:
        return self.limit in ("heavy-ball", "nesterov")

    @property
    def has_limit(self) -> bool:
        return bool(self.limit)

    def limit_numerator(self, beta: float) -> float:
        """c in the largest stable rate c/λmax (0: no limit): 2, 2(1+β), 2(1+β)/(1+2β)."""
        if self.limit == "gd":
            return 2.0
        if self.limit == "heavy-ball":
            return 2.0 * (1 + beta)
        if self.limit == "nesterov":
            return 2.0 * (1 + beta) / (1 + 2 * beta)
        return 0.0

    def limit_formula(self, beta: float) -> str:
        if self.limit == "heavy-ball":
            return f"2(1+{beta:g})/λmax"
        if self.limit == "nesterov":
            return f"2(1+{beta:g})/((1+{2 * beta:g})λmax)"
        return "2/λmax"


KINDS: dict[str, OptimizerKind] = {
    kind.name: kind
    for kind in (
        OptimizerKind("gd", limit="gd", plain=True),
        OptimizerKind("sgd", limit="gd", plain=True),
        OptimizerKind("momentum", limit="heavy-ball"),
        OptimizerKind("nesterov", limit="nesterov"),
        OptimizerKind("adagrad"),
        OptimizerKind("rmsprop"),
        OptimizerKind("adam"),
        OptimizerKind("adamw", penalty_decay=False),
    )
}


def kind_of(name: str) -> OptimizerKind:
    """The record of `name`; an unknown name (a custom optimizer) has no known properties."""
    return KINDS.get(name, OptimizerKind(name))
