"""What the loop measures after each epoch (train/norms.py), against torch.linalg by hand, and
the rollback to the last finite parameters that its finiteness test drives."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import gdlab
from gdlab.train.norms import SMALL, EpochNorms


def model_with_gradients(width: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, 1))
    X, y = torch.randn(16, 3), torch.randn(16, 1)
    nn.functional.mse_loss(net(X), y).backward()
    return net


@pytest.mark.parametrize("width", [4, 200])  # 21 parameters (on the host), 1001 (fused calls)
def test_the_norms_are_torchs_norms_of_each_gradient(width: int) -> None:
    net = model_with_gradients(width)
    params = list(net.parameters())
    measure = EpochNorms(params)
    assert measure.small == (sum(p.numel() for p in params) <= SMALL)
    norms = measure()
    by_hand = [float(torch.linalg.vector_norm(p.grad)) for p in params]  # type: ignore[arg-type]
    assert norms.layers == pytest.approx(by_hand, rel=1e-6)
    assert norms.total == pytest.approx(math.sqrt(sum(v * v for v in by_hand)), rel=1e-6)
    assert norms.finite
    if measure.small:  # the entries travel with the norms: the record and the rollback point
        flat = torch.cat([p.detach().reshape(-1) for p in params])
        assert norms.entries == flat.tolist()
        assert norms.copy is not None and torch.equal(norms.copy[: len(flat)], flat)
    else:
        assert norms.entries is None and norms.copy is None


@pytest.mark.parametrize("width", [4, 200])
def test_the_update_ratios_are_the_step_over_the_size(width: int) -> None:
    net = model_with_gradients(width)
    params = list(net.parameters())
    start = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p in params:
            p.add_(0.01 * torch.ones_like(p))
    ratios = EpochNorms(params)(start).ratios
    by_hand = [0.01 * math.sqrt(p.numel()) / float(torch.linalg.vector_norm(s))
               for p, s in zip(params, start, strict=True)]  # fmt: skip
    assert ratios == pytest.approx(by_hand, rel=1e-4)


@pytest.mark.parametrize("width", [4, 200])
def test_a_non_finite_parameter_is_seen_and_an_overflowing_norm_is_not_one(width: int) -> None:
    net = model_with_gradients(width)
    params = list(net.parameters())
    measure = EpochNorms(params)
    with torch.no_grad():
        params[2].fill_(3e38)  # finite, but its float32 norm overflows
    assert measure().finite
    with torch.no_grad():
        params[2][0, -1] = math.inf
    assert not measure().finite


class Saturating(nn.Module):
    """sigmoid(w·x + b): its loss stays finite whatever its parameters."""

    def __init__(self, width: int) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.linear = nn.Linear(1, width)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear(X)).mean(dim=1, keepdim=True)


class InfiniteGradient(torch.autograd.Function):
    """The identity, whose gradient is infinite: the next step overflows the parameters."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        return grad * math.inf


@pytest.mark.parametrize("width", [2, 300])  # rolled back from the norms' copy, or last_good
def test_parameters_that_overflow_under_a_finite_loss_are_rolled_back(width: int) -> None:
    X, y = [[1.0], [2.0], [3.0], [4.0]], [0.9, 0.1, 0.9, 0.1]
    epochs_done = []

    def loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if len(epochs_done) >= 2:  # from the third epoch on
            outputs = InfiniteGradient.apply(outputs)
        return nn.functional.mse_loss(outputs, targets)

    options = {"optimizer": "sgd", "lr": 0.5, "standardize": False, "track_sharpness": "off"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        two = gdlab.fit(X, y, model=Saturating(width), epochs=2, **options)
        run = gdlab.fit(X, y, model=Saturating(width), loss=loss, epochs=10,
                        on_epoch=lambda history: epochs_done.append(1), **options)  # fmt: skip
    assert run.status == "diverged" and run.verdict is not None, run.status
    assert run.verdict.test == "not_finite"
    assert len(run.history) == 2  # the epoch that overflowed is not recorded
    kept = torch.cat([p.detach().reshape(-1) for p in run.model.parameters()])
    after_two = torch.cat([p.detach().reshape(-1) for p in two.model.parameters()])
    assert bool(kept.isfinite().all()) and torch.equal(kept, after_two)
    if width == 2:  # a small model records its entries: the last row is what it kept
        assert [values[-1] for values in run.history.params.values()] == kept.tolist()
