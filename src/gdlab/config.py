"""Training options: one frozen dataclass validated against one table of constraints.

The command line (`gdlab fit`) builds its options from `OPTIONS`, and `gdlab.fit` validates its
keyword arguments with the same table, so the two can never disagree about what is allowed.
String names (models, losses, optimizers, schedules) are checked here against their registries'
names and resolved into objects by the training code.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gdlab.constraints import (
    Constraint,
    int_at_least,
    int_between,
    is_int,
    matches,
    one_of,
    option,
    real_in,
)
from gdlab.errors import GdlabError
from gdlab.optim.kinds import KINDS

OPTIMIZERS = tuple(KINDS)
LOSSES = ("mse", "mae", "huber", "bce", "cross-entropy")
ACTIVATIONS = ("relu", "tanh", "sigmoid")
SCHEDULES = ("constant", "step", "exponential", "cosine", "inverse-scaling")
DTYPES = ("auto", "float32", "float64")
DEVICES = ("cpu", "cuda", "auto")
FAST_PATHS = ("auto", "iterate", "off")
MODEL_FORMS = "linear | logistic | softmax | poly:K | mlp:H1,H2,..."

MAX_DEGREE = 30  # poly:K beyond this is numerically meaningless in float64
AUTO_EPOCHS = 10_000  # the budget of epochs='auto' where no curvature predicts one

INIT_FORMS = "default | xavier | he | normal:STD"
_INIT_PATTERN = re.compile(r"^(default|xavier|he|normal:([0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?))$")
_MODEL_PATTERN = re.compile(
    r"^(linear|logistic|softmax|poly:[1-9][0-9]*|mlp:[1-9][0-9]*(,[1-9][0-9]*)*)$"
)
_SCHEDULE_PATTERN = re.compile(
    r"^(constant|cosine|step(:[1-9][0-9]*(,[0-9.eE+-]+)?)?|exponential(:[0-9.eE+-]+)?"
    r"|inverse-scaling(:[0-9.eE+-]+)?)$"
)


BOOLEAN = Constraint("True or False", lambda v: isinstance(v, bool))
OPTIONAL_LOSS = Constraint(
    "None (follow the model) or one of " + ", ".join(LOSSES), lambda v: v is None or v in LOSSES
)
LEARNING_RATE = Constraint(
    "a float in the range (0, inf) or 'auto'",
    lambda v: v == "auto" or real_in(0.0, math.inf, low_open=True).check(v),
)
BATCH_SIZE = Constraint(
    "'full' (or None) or an integer >= 1", lambda v: v is None or (is_int(v) and v >= 1)
)


@dataclass(frozen=True)
class Option:
    """One training option: its name, default, constraint and help text."""

    name: str
    default: Any
    constraint: Constraint
    help: str

    @property
    def text_default(self) -> Any:
        """The default as text reads it back (`parse_value`): None, "not set", is the word
        'full' (every row) for batch_size and 'auto' for the others."""
        if self.name in PARSED and self.default is None:
            return "full" if self.name == "batch_size" else "auto"
        return self.default


PARSED = ("lr", "batch_size", "epochs", "memory_budget", "track_sharpness")
_UNITS = {
    "k": 1e3,
    "m": 1e6,
    "g": 1e9,
    "t": 1e12,
}  # options whose text form is not their value's Python form


def parse_value(name: str, text: str) -> Any:
    """The one reading of an option written as text, shared by the CLI and `gdlab.fit`:
    batch_size 'full' is None (every row), lr 'auto' stays 'auto', numbers are numbers. Text
    that is none of these comes back unchanged, for the constraint to reject by name."""
    word = text.strip().lower()
    if name == "batch_size":
        if word in ("full", "none"):
            return None
        return int(word) if word.isdigit() else text
    if name == "memory_budget":
        if word in ("", "none", "auto"):
            return None
        scale = _UNITS.get(word.rstrip("ib")[-1:], 1.0)
        number = word.rstrip("ib").rstrip("kmgt") if scale != 1.0 else word.rstrip("b")
        try:
            return float(number) * scale
        except ValueError:
            return text
    if name in ("epochs", "track_sharpness"):
        if word in ("auto", "off") and (name != "epochs" or word == "auto"):
            return word
        return int(word) if word.isdigit() else text
    if name == "lr":
        if word == "auto":
            return "auto"
        try:
            return float(word)
        except ValueError:
            return text
    return text


def invalid(name: str, value: Any, allowed: str) -> GdlabError:
    """The one message format for a rejected option (scikit-learn's wording)."""
    return GdlabError(f"The `{name}` option must be {allowed}. Got {value!r} instead.")


@dataclass(frozen=True)
class FitOptions:
    """Everything that decides how a model is trained; validated when constructed."""

    model: str = option("linear", matches(_MODEL_PATTERN, MODEL_FORMS), "model to fit")
    activation: str = option("relu", one_of(ACTIVATIONS), "hidden-layer activation of mlp models")
    init: str = option(
        "default",
        matches(_INIT_PATTERN, INIT_FORMS),
        "initial weights of mlp layers: default (torch's), xavier (Glorot, for tanh/sigmoid), "
        "he (Kaiming, for relu) or normal:STD; biases start at 0 except with default",
    )
    intercept: bool = option(True, BOOLEAN, "fit an intercept (bias) term")
    loss: str | None = option(
        None,
        OPTIONAL_LOSS,
        "loss; default follows the model (mse, bce, cross-entropy)",
    )
    optimizer: str = option("gd", one_of(OPTIMIZERS), "update rule; gd is p = p - lr * p.grad")
    momentum: float = option(
        0.9,
        real_in(0.0, 1.0),
        "momentum of the momentum and nesterov optimizers",
    )
    weight_decay: float = option(0.0, real_in(0.0, math.inf), "L2 penalty added to the gradient")
    l1: float = option(0.0, real_in(0.0, math.inf), "L1 penalty on the weights, added to the loss")
    lr: float | str = option(
        "auto",
        LEARNING_RATE,
        "learning rate, or auto: chosen from the curvature",
    )
    schedule: str = option(
        "constant",
        matches(
            _SCHEDULE_PATTERN,
            "constant | step[:EVERY[,FACTOR]] | exponential[:GAMMA]"
            " | cosine | inverse-scaling[:POWER]",
        ),
        "learning-rate schedule over epochs",
    )
    epochs: int | str = option(
        "auto",
        Constraint("an integer >= 1 or 'auto'", lambda v: v == "auto" or (is_int(v) and v >= 1)),
        "the budget: most passes over the data; auto: what least squares needs at this rate"
        f" (from λmin), else {AUTO_EPOCHS}",
    )
    batch_size: int | None = option(None, BATCH_SIZE, "rows per step; full batch when not set")
    gtol: float = option(
        1e-8,
        real_in(0.0, math.inf),
        "converged when the gradient norm is below gtol x its start",
    )
    xtol: float = option(
        1e-12,
        real_in(0.0, math.inf),
        "least squares: converged when |θ - θ*| is below xtol x |θ*|",
    )
    tol: float = option(
        1e-8,
        real_in(0.0, math.inf),
        "stalled (or early-stopped) when the loss improves by less than tol x loss",
    )
    patience: int = option(20, int_at_least(1), "epochs of such small improvement before stopping")
    val_fraction: float = option(
        0.0,
        real_in(0.0, 1.0),
        "rows held out; early stopping watches them",
    )
    standardize: bool = option(True, BOOLEAN, "train on standardized features and target")
    seed: int = option(0, int_between(0, 2**63 - 1), "seed of initialisation and shuffling")
    dtype: str = option(
        "auto",
        one_of(DTYPES),
        "floating-point type of the training tensors; auto: float64 on the CPU, float32 on a GPU",
    )
    device: str = option("auto", one_of(DEVICES), "where to train; auto picks cuda when available")
    memory_budget: float | None = option(
        None,
        Constraint(
            "None (80% of the available memory) or a positive number of bytes, e.g. 4e9 or 4G",
            lambda v: v is None or (real_in(0.0, math.inf, low_open=True).check(v)),
        ),
        "memory a run may plan to use; a model or sweep estimated above it is refused",
    )
    track_sharpness: int | str = option(
        "auto",
        Constraint(
            "'auto', 'off' or an integer >= 1",
            lambda v: v in ("auto", "off") or (is_int(v) and v >= 1),
        ),
        "epochs between estimates of the loss Hessian's λmax during training (the edge of "
        "stability); auto: 50 a run for networks, none for linear models",
    )
    fast_paths: str = option(
        "auto",
        one_of(FAST_PATHS),
        "fast paths: auto = least squares from XᵀX (closed form for plain gd) and mini-batch"
        " gradients of linear/logistic models by formula; iterate = XᵀX, no closed form;"
        " off = autograd for every step",
    )

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            option = OPTIONS_BY_NAME[field.name]
            if isinstance(value, str) and field.name in PARSED:
                value = parse_value(field.name, value)
                object.__setattr__(self, field.name, value)
            if is_int(value) and isinstance(option.default, float):
                value = float(value)  # 1 is a fine learning rate: store it as 1.0
                object.__setattr__(self, field.name, value)
            if not option.constraint.check(value):
                raise invalid(field.name, value, option.constraint.describe)
        self._check_combinations()

    def _check_combinations(self) -> None:
        self._check_schedule()
        loss = self.resolved_loss
        kind = self.model.split(":")[0]
        if kind == "logistic" and loss != "bce":
            raise GdlabError(
                f"The logistic model is trained with loss bce, not {loss}; drop `loss`."
            )
        if kind == "softmax" and loss != "cross-entropy":
            raise GdlabError(
                f"The softmax model is trained with loss cross-entropy, not {loss}; drop `loss`."
            )
        if kind == "poly" and int(self.model.split(":")[1]) > MAX_DEGREE:
            raise GdlabError(
                f"The `model` option {self.model}: above degree {MAX_DEGREE} the powers x^K over- "
                f"or underflow float64 and are collinear; use poly:K with K up to {MAX_DEGREE}, "
                f"or an mlp for a more flexible shape."
            )
        if kind in ("linear", "poly") and loss in ("bce", "cross-entropy"):
            raise GdlabError(
                f"The {kind} model is a regression model; for loss {loss} use "
                f"`model={'logistic' if loss == 'bce' else 'softmax'}` (or an mlp)."
            )

    def _check_schedule(self) -> None:
        name, _, argument = self.schedule.partition(":")
        try:
            values = [float(part) for part in argument.split(",")] if argument else []
        except ValueError:
            values = [math.nan]
        ranges = {
            "step": "EVERY >= 1 epochs and 0 < FACTOR <= 1, e.g. step:100,0.5",
            "exponential": "0 < GAMMA <= 1, e.g. exponential:0.99",
            "inverse-scaling": "POWER >= 0, e.g. inverse-scaling:0.25",
        }
        valid: dict[str, Callable[[list[float]], bool]] = {
            "step": lambda v: v[0] >= 1 and (len(v) == 1 or 0 < v[1] <= 1),
            "exponential": lambda v: 0 < v[0] <= 1,
            "inverse-scaling": lambda v: v[0] >= 0,
        }
        if values and not (all(map(math.isfinite, values)) and valid[name](values)):
            raise invalid("schedule", self.schedule, f"{name} with {ranges[name]}")

    @property
    def resolved_loss(self) -> str:
        """The loss actually used: the one given, or the model's natural loss."""
        if self.loss is not None:
            return self.loss
        return {"logistic": "bce", "softmax": "cross-entropy"}.get(self.model.split(":")[0], "mse")

    @property
    def budget(self) -> int:
        """The epochs as a number; 'auto' must have been resolved (see gdlab.fit)."""
        if isinstance(self.epochs, str):
            raise GdlabError("epochs 'auto' has not been resolved to a number yet.")
        return int(self.epochs)

    @property
    def rate(self) -> float:
        """The learning rate as a number; 'auto' must have been resolved (see gdlab.tools.rates)."""
        if isinstance(self.lr, str):
            raise GdlabError("lr 'auto' has not been resolved to a number yet.")
        return float(self.lr)

    @property
    def is_classifier(self) -> bool:
        return self.resolved_loss in ("bce", "cross-entropy")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


OPTIONS: tuple[Option, ...] = tuple(
    Option(f.name, f.default, f.metadata["constraint"], f.metadata["help"])
    for f in dataclasses.fields(FitOptions)
)
OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}


def make_options(**kwargs: Any) -> FitOptions:
    """Build `FitOptions`, turning an unknown keyword into a message that lists the known ones."""
    unknown = sorted(set(kwargs) - set(OPTIONS_BY_NAME))
    if unknown:
        raise GdlabError(
            f"Unknown option {unknown[0]!r}; the options are: {', '.join(OPTIONS_BY_NAME)}."
        )
    return FitOptions(**kwargs)
