"""The contract every model, loss, optimizer and gradient source keeps, checked for each one:
shapes, dtype, device; gradients equal to autograd's (and autograd's to finite differences)
to 1e-9 in float64; one optimizer step equal to the textbook update written out by hand.
A new one added to a registry is checked here without a new test."""

from __future__ import annotations

import math

import pytest
import torch

from gdlab.config import ACTIVATIONS, LOSSES, OPTIMIZERS
from gdlab.losses import make_loss, wants_class_indices
from gdlab.models import ModelSpec, build_model
from gdlab.optim.registry import make_optimizer
from gdlab.train.analytic import LOSSES as ANALYTIC_LOSSES
from gdlab.train.analytic import AnalyticGradient
from gdlab.train.exact import ExactGradient, LeastSquaresStatistics

MODELS = ["linear", "logistic", "softmax", "poly:3", "mlp:5", "mlp:4,3"]
ROWS, FEATURES, CLASSES = 12, 3, 4


def data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(ROWS, FEATURES, generator=generator, dtype=torch.float64)
    return X, torch.randn(ROWS, generator=generator, dtype=torch.float64)


def targets(loss: str, y: torch.Tensor) -> torch.Tensor:
    """Targets in the form each loss takes: class indices, 0/1 columns or real columns."""
    if wants_class_indices(make_loss(loss)):
        return (torch.arange(ROWS) % CLASSES).long()
    if loss == "bce":
        return (y > 0).double().reshape(-1, 1)
    return y.reshape(-1, 1)


def outputs_for(spec: ModelSpec) -> int:
    return CLASSES if spec.kind == "softmax" else 1


def flat_gradient(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("name", MODELS)
def test_every_model_maps_rows_to_outputs_in_the_input_dtype(name: str, activation: str) -> None:
    spec = ModelSpec.parse(name)
    width = FEATURES * spec.degree
    torch.manual_seed(0)
    model = build_model(spec, width, outputs_for(spec), intercept=True,
                        activation=activation).double()  # fmt: skip
    X = torch.randn(ROWS, width, dtype=torch.float64)
    out = model(X)
    assert out.shape == (ROWS, outputs_for(spec)) and out.dtype == torch.float64
    assert out.device == X.device and bool(torch.isfinite(out).all())
    assert all(p.dtype == torch.float64 for p in model.parameters())
    single = model(X[:1])  # rows are independent: a batch of one gives that row's output
    torch.testing.assert_close(single, out[:1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("name", ["linear", "mlp:4"])
def test_autograd_gradients_equal_finite_differences(name: str, loss: str) -> None:
    """The reference the gradient sources below are held to is itself checked here."""
    spec = ModelSpec.parse(name)
    outputs = CLASSES if loss == "cross-entropy" else 1
    torch.manual_seed(1)
    model = build_model(spec, FEATURES, outputs, intercept=True, activation="tanh").double()
    X, y = data(1)
    target, loss_fn = targets(loss, y), make_loss(loss)
    loss_fn(model(X), target).backward()  # type: ignore[no-untyped-call]
    analytic = flat_gradient(model)
    params = list(model.parameters())
    numeric, step = [], 1e-6
    with torch.no_grad():
        for p in params:
            for i in range(p.numel()):
                old = p.view(-1)[i].item()
                p.view(-1)[i] = old + step
                up = loss_fn(model(X), target).item()
                p.view(-1)[i] = old - step
                down = loss_fn(model(X), target).item()
                p.view(-1)[i] = old
                numeric.append((up - down) / (2 * step))
    tolerance = 1e-4 if loss in ("mae", "huber") else 1e-7  # kinks: a step may straddle one
    torch.testing.assert_close(analytic, torch.tensor(numeric, dtype=torch.float64),
                               rtol=tolerance, atol=tolerance)  # fmt: skip


def autograd_reference(model: torch.nn.Linear, X: torch.Tensor, y: torch.Tensor,
                       loss: str) -> tuple[torch.Tensor, float]:  # fmt: skip
    model.zero_grad()
    value = make_loss(loss)(model(X), targets(loss, y))
    value.backward()  # type: ignore[no-untyped-call]
    return flat_gradient(model).clone(), value.item()


@pytest.mark.parametrize("intercept", [True, False])
def test_the_exact_source_gives_autograd_gradient_and_loss(intercept: bool) -> None:
    X, y = data(2)
    torch.manual_seed(2)
    model = torch.nn.Linear(FEATURES, 1, bias=intercept).double()
    expected, loss = autograd_reference(model, X, y, "mse")
    blocks = [(X[:5].numpy(), y[:5].numpy()), (X[5:].numpy(), y[5:].numpy())]
    stats = LeastSquaresStatistics.from_blocks(lambda: iter(blocks), intercept=intercept)
    model.zero_grad()
    source = ExactGradient(model, stats, None)
    assert source.step_gradient(None) == pytest.approx(loss, rel=1e-9)
    torch.testing.assert_close(flat_gradient(model), expected, rtol=1e-9, atol=1e-12)
    assert model.weight.grad is not None and model.weight.grad.shape == model.weight.shape


@pytest.mark.parametrize("loss", ANALYTIC_LOSSES)
@pytest.mark.parametrize("intercept", [True, False])
def test_the_analytic_source_gives_autograd_gradient_and_loss(loss: str, intercept: bool) -> None:
    X, y = data(3)
    y = (y > 0).double() if loss == "bce" else y
    torch.manual_seed(3)
    model = torch.nn.Linear(FEATURES, 1, bias=intercept).double()
    rows = torch.tensor([7, 2, 9, 4, 0])
    expected, value = autograd_reference(model, X[rows], y[rows], loss)
    model.zero_grad()
    source = AnalyticGradient.of(model, X, y, loss, batch_size=len(rows))
    assert source.step_gradient(rows) == pytest.approx(value, rel=1e-9)
    torch.testing.assert_close(flat_gradient(model), expected, rtol=1e-9, atol=1e-12)


def by_hand(name: str, p: torch.Tensor, g: torch.Tensor, lr: float, mu: float, wd: float,
            defaults: dict[str, float]) -> torch.Tensor:  # fmt: skip
    """The first step of each update rule from its definition, with its state at zero."""
    if name == "adamw":  # decoupled decay, then Adam's first step
        beta1, beta2 = defaults["betas"]  # type: ignore[misc]
        m, v = (1 - beta1) * g, (1 - beta2) * g * g
        step = (m / (1 - beta1)) / ((v / (1 - beta2)).sqrt() + defaults["eps"])
        return p * (1 - lr * wd) - lr * step
    g = g + wd * p  # every other rule adds L2 decay to the gradient
    if name in ("gd", "sgd", "momentum"):  # the first momentum buffer is g itself
        return p - lr * g
    if name == "nesterov":
        return p - lr * (g + mu * g)
    if name == "adam":
        beta1, beta2 = defaults["betas"]  # type: ignore[misc]
        m, v = (1 - beta1) * g, (1 - beta2) * g * g
        return p - lr * (m / (1 - beta1)) / ((v / (1 - beta2)).sqrt() + defaults["eps"])
    if name == "rmsprop":
        v = (1 - defaults["alpha"]) * g * g
        return p - lr * g / (v.sqrt() + defaults["eps"])
    assert name == "adagrad"
    return p - lr * g / ((g * g).sqrt() + defaults["eps"])


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_takes_the_textbook_first_step(name: str, weight_decay: float) -> None:
    generator = torch.Generator().manual_seed(4)
    p = torch.randn(6, generator=generator, dtype=torch.float64, requires_grad=True)
    g = torch.randn(6, generator=generator, dtype=torch.float64)
    lr, mu = 0.07, 0.9
    optimizer = make_optimizer(name, [p], lr=lr, momentum=mu, weight_decay=weight_decay)
    expected = by_hand(name, p.detach().clone(), g, lr, mu, weight_decay, optimizer.defaults)
    p.grad = g.clone()
    optimizer.step()
    assert p.dtype == torch.float64 and p.shape == (6,)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_steps_in_proportion_to_the_rate(name: str) -> None:
    """What the sweep relies on to run K rates as one: after the same gradients from the same
    state, the step at rate lr is lr times the step at rate 1."""
    steps = []
    for lr in (1.0, 0.003):
        generator = torch.Generator().manual_seed(5)
        p = torch.randn(6, generator=generator, dtype=torch.float64, requires_grad=True)
        optimizer = make_optimizer(name, [p], lr=lr, momentum=0.9, weight_decay=0.0)
        start = p.detach().clone()
        for _ in range(3):
            p.grad = torch.sin(torch.arange(6.0, dtype=torch.float64) + 1)  # state builds up
            optimizer.step()
        steps.append(p.detach() - start)
    torch.testing.assert_close(steps[1], 0.003 * steps[0], rtol=1e-9, atol=1e-15)
    assert not math.isclose(float(steps[0].abs().sum()), 0.0)


def test_the_autograd_source_is_backward_on_the_batch() -> None:
    from gdlab.train.sources import AutogradGradient

    X, y = data(6)
    torch.manual_seed(6)
    model = build_model(ModelSpec.parse("mlp:4"), FEATURES, 1, intercept=True,
                        activation="tanh").double()  # fmt: skip
    rows = torch.tensor([1, 5, 8])
    expected, value = autograd_reference(model, X[rows], y[rows], "mse")  # type: ignore[arg-type]
    model.zero_grad()
    source = AutogradGradient(model, make_loss("mse"), X, y.reshape(-1, 1))
    assert source.step_gradient(rows) == pytest.approx(value, rel=1e-12)
    torch.testing.assert_close(flat_gradient(model), expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    ("model", "batch_size", "path"),
    [("linear", None, "exact"), ("linear", 8, "analytic"), ("mlp:4", None, "autograd")],
)
def test_the_reduction_hook_sees_every_source_before_the_step(
    monkeypatch: pytest.MonkeyPatch, model: str, batch_size: int | None, path: str
) -> None:
    """Where a data-parallel run will sum gradients across ranks: a reduction that halves
    them must give, for heavy-ball momentum, exactly the run at half the rate, on each path."""
    import functools

    import numpy as np

    import gdlab
    from gdlab import training

    rng = np.random.default_rng(7)
    X = rng.normal(size=(40, 3))
    y = X @ [1.0, -2.0, 0.5] + 0.1 * rng.normal(size=40)
    common = {"model": model, "batch_size": batch_size, "optimizer": "momentum", "epochs": 15,
              "dtype": "float64", "gtol": 0, "xtol": 0, "tol": 0, "patience": 10**6}  # fmt: skip
    half = gdlab.fit(X, y, lr=0.01, **common)

    def halve(params: list[torch.Tensor], value: float, seen: int) -> tuple[float, int]:
        for p in params:
            p.grad.mul_(0.5)
        return value, seen

    monkeypatch.setattr(training, "Loop", functools.partial(training.Loop, reduction=halve))
    reduced = gdlab.fit(X, y, lr=0.02, **common)
    assert reduced.path == half.path == path
    np.testing.assert_allclose(reduced.history.train_loss, half.history.train_loss, rtol=1e-12)
