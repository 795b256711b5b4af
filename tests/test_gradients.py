"""Vanishing and exploding gradients across depth: measured against autograd, named relatively."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import gdlab
from gdlab.analysis.gradients import diagnose, initial_layer_gradients
from gdlab.models import ModelSpec, build_model
from tests.conftest import CliRun
from tests.test_resume import load

DEEP = "mlp:16,16,16,16,16,16,16,16,16"  # ten weight layers, the tutorials' deep network


def deep_net(activation: str, init: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec.parse(DEEP), 2, 1, intercept=True, activation=activation,
                       init=init).double()  # fmt: skip


@pytest.mark.parametrize(("init", "std"), [("xavier", None), ("he", None), ("normal:0.3", 0.3)])
def test_initializations_draw_the_documented_scale(init: str, std: float | None) -> None:
    net = deep_net("tanh", init)
    for layer in (m for m in net.modules() if isinstance(m, torch.nn.Linear)):
        fan_out, fan_in = layer.weight.shape
        if fan_in * fan_out < 256:  # the input and output layers: too few draws to judge
            continue
        expected = {"xavier": (5 / 3) * (2 / (fan_in + fan_out)) ** 0.5, "he": (2 / fan_in) ** 0.5}
        wanted = std if std is not None else expected[init]
        assert float(layer.weight.detach().std()) == pytest.approx(wanted, rel=0.15)
        assert not layer.bias.any()


def test_the_layer_gradients_are_autograds() -> None:
    net = deep_net("sigmoid", "default")
    X, y = torch.randn(50, 2, dtype=torch.float64), torch.randn(50, 1, dtype=torch.float64)
    layers = initial_layer_gradients(net, torch.nn.MSELoss(), X, y)
    torch.nn.MSELoss()(net(X), y).backward()
    for name, p in net.named_parameters():
        if name.endswith("weight"):
            gradient, size = layers[name]
            assert gradient == pytest.approx(float(p.grad.norm()), rel=1e-12)
            assert size == pytest.approx(float(p.detach().norm()), rel=1e-12)


def test_the_diagnosis_is_relative() -> None:
    """Tiny gradients everywhere are not vanishing; the first layer far below the last is."""
    even = {f"{k}.weight": (1e-9, 1.0) for k in range(4)}
    assert diagnose(even, lr=0.1, activation="sigmoid", init="default") == ""
    steep = {f"{k}.weight": (10.0 ** (k - 5), 1.0) for k in range(4)}  # 3 orders, first to last
    text = diagnose(steep, lr=0.1, activation="sigmoid", init="default")
    assert text.startswith("vanishing gradients") and "0.weight" in text and "3.weight" in text
    assert "`activation=relu`" in text and "`init=he`" in text and not re.search("--[a-z]", text)
    huge = {f"{k}.weight": (1e6, 2.0) for k in range(4)}  # every layer alike, but one step ...
    text = diagnose(huge, lr=0.1, activation="relu", init="normal:2")
    assert text.startswith("exploding gradients") and "5e+04 times its own size" in text


def fit_deep(X: np.ndarray, y: np.ndarray, **options: object) -> tuple[gdlab.FitResult, str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = gdlab.fit(X, y, model=DEEP, epochs=30, lr=0.05, **options)
    return result, " ".join(str(w.message) for w in caught)


@pytest.mark.slow
def test_the_classic_deep_sigmoid_network_is_named_and_relu_with_he_fixes_it() -> None:
    X, y = load("noisy-plane")
    sigmoid, told = fit_deep(X, y, activation="sigmoid")
    assert "vanishing gradients" in told and "0.weight" in told and "18.weight" in told
    first = np.array(sigmoid.history.update_ratios["0.weight"])
    last = np.array(sigmoid.history.update_ratios["18.weight"])
    assert first[0] < 1e-4 * last[0]  # in the first epoch the last layer moves, the first not
    assert np.all(first < 1e-6)  # ... nor in any epoch after
    relu, told = fit_deep(X, y, activation="relu", init="he")
    assert "gradients:" not in told
    assert relu.loss < 0.1 * sigmoid.loss
    _, told = fit_deep(X, y, activation="relu", init="normal:2")
    assert "exploding gradients" in told and "18.weight" in told


def test_gdlab_plot_draws_gradients_by_depth(gdlab: Callable[..., CliRun], tmp_path: Path) -> None:
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = gdlab("fit", "noisy-plane", "--model", "mlp:4,4,4", "--activation", "sigmoid",
                       "--epochs", "20", "--out", str(out))  # fmt: skip
    assert fitted.code == 0, fitted.err
    assert gdlab("plot", str(out)).code == 0
    assert (out / "layers.png").stat().st_size > 10_000
    from gdlab.history import History
    from gdlab.plot.training import depth_figure

    history = History.load(out / "history.csv")
    left = depth_figure(history).axes[0]
    first = left.lines[0]
    assert list(first.get_xdata()) == [1, 2, 3, 4]
    weights = ["0.weight", "2.weight", "4.weight", "6.weight"]
    assert list(first.get_ydata()) == [history.grad_norms[name][0] for name in weights]
