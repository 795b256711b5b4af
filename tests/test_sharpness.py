"""The loss Hessian's λmax tracked during training, against the exact Hessian and 2/lr."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import gdlab
from gdlab.analysis.sharpness import SharpnessTracker, tracking_interval
from gdlab.history import History
from gdlab.models import ModelSpec, build_model
from tests.test_resume import load


def test_an_estimate_is_the_exact_hessians_largest_eigenvalue() -> None:
    torch.manual_seed(1)
    net = build_model(ModelSpec.parse("mlp:5,4"), 2, 1, intercept=True, activation="tanh").double()
    X = torch.randn(60, 2, dtype=torch.float64)
    y = torch.sin(X.sum(1, keepdim=True))
    loss_fn = torch.nn.MSELoss()
    params = dict(net.named_parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in params.values()])
    shapes = [(name, p.shape, p.numel()) for name, p in params.items()]

    def loss(vector: torch.Tensor) -> torch.Tensor:
        pieces, at = {}, 0
        for name, shape, size in shapes:
            pieces[name] = vector[at : at + size].reshape(shape)
            at += size
        return loss_fn(torch.func.functional_call(net, pieces, (X,)), y)

    exact = float(torch.linalg.eigvalsh(torch.func.hessian(loss)(flat)).max())
    estimate = SharpnessTracker(net, loss_fn, X, y, every=1).estimate()
    assert estimate <= exact * (1 + 1e-9)  # a Rayleigh quotient never exceeds λmax
    assert estimate == pytest.approx(exact, rel=0.02)


def test_tracked_epochs_and_the_history_file() -> None:
    X, y = load("noisy-plane")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = gdlab.fit(X, y, model="mlp:4,4", epochs=30, lr=0.05, track_sharpness=10,
                           stop=lambda: False)  # fmt: skip
        linear = gdlab.fit(X, y, epochs=30, lr=0.05, stop=lambda: False)
    tracked = [e for e, v in zip(result.history.epoch, result.history.lambda_max, strict=True)
               if math.isfinite(v)]  # fmt: skip
    assert tracked == [10, 20, 30] and "λmax tracked at 3 epochs" in result.sharpness
    assert not any(map(math.isfinite, linear.history.lambda_max)) and linear.sharpness == ""
    assert tracking_interval("auto", network=True, budget=1000) == 20
    assert tracking_interval("off", network=True, budget=1000) == 0


def test_the_history_file_keeps_lambda_max(tmp_path: Path) -> None:
    history = History()
    for epoch in (1, 2, 3):
        history.append(epoch, 1.0, math.nan, 0.1, 1.0)
    history.lambda_max[1] = 12.5
    history.save(tmp_path / "h.csv")
    loaded = History.load(tmp_path / "h.csv")
    assert np.isnan(loaded.lambda_max[0]) and loaded.lambda_max[1] == 12.5


@pytest.mark.slow
def test_full_batch_training_of_a_network_sharpens_to_the_edge_of_stability() -> None:
    """λmax starts well below 2/lr, rises (progressive sharpening) and settles at 2/lr."""
    X, y = load("noisy-plane")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = gdlab.fit(X, y, model="mlp:32,32", epochs=300, lr=0.1, patience=1000,
                           track_sharpness=5, stop=lambda: False)  # fmt: skip
    values = [v for v in result.history.lambda_max if math.isfinite(v)]
    limit = 2 / 0.1
    assert values[0] < 0.5 * limit  # epoch 5
    assert all(abs(v - limit) < 0.05 * limit for v in values[-20:])  # the last 100 epochs
