"""`gdlab.watch` on a user's own training loop, against references computed by hand:
`torch.linalg.vector_norm` over `.grad`, the exact Hessian's largest eigenvalue, and the same
loop run without the watcher."""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import gdlab
from gdlab.errors import GdlabError, GdlabWarning
from gdlab.watching.probe import sharpness, untouched

pytestmark = pytest.mark.filterwarnings("ignore::gdlab.GdlabWarning")


def mlp(depth: int = 3, width: int = 8, activation: type[nn.Module] = nn.Tanh) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth - 1):
        layers += [nn.Linear(4 if i == 0 else width, width), activation()]
    return nn.Sequential(*layers, nn.Linear(width, 1))


def batches(steps: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        x = torch.randn(32, 4, generator=g)
        out.append((x, x.sum(1, keepdim=True).sin()))
    return out


def train(model, optimizer, data, watcher=None, scaler=None):
    loss_fn = nn.MSELoss()
    for x, y in data:
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if watcher is not None:
            watcher.step(loss)
    return loss


def test_norms_equal_the_norms_of_the_gradients_by_hand() -> None:
    torch.manual_seed(0)
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    expected = []
    with gdlab.watch(model, optimizer, block=4, ratio_every=1) as w:
        for x, y in batches(10):
            loss = nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            by_layer = {}
            for name, p in model.named_parameters():
                layer = name.rsplit(".", 1)[0]
                by_layer[layer] = by_layer.get(layer, 0.0) + float(p.grad.double().norm()) ** 2
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            optimizer.step()
            moved, weights = {}, {}
            for name, p in model.named_parameters():
                layer = name.rsplit(".", 1)[0]
                change = float((p.detach() - before[name]).double().norm())
                moved[layer] = moved.get(layer, 0.0) + change**2
                weights[layer] = weights.get(layer, 0.0) + float(before[name].double().norm()) ** 2
            expected.append((float(loss.detach()), by_layer, moved, weights))
            w.step(loss)
    steps = w.recorded()
    assert w.layers == ["0", "2", "4"]
    for i, (loss, by_layer, moved, weights) in enumerate(expected):
        assert steps.loss[i] == pytest.approx(loss, rel=1e-6)
        for j, layer in enumerate(w.layers):
            assert steps.grad[i, j] == pytest.approx(math.sqrt(by_layer[layer]), rel=1e-5)
            assert steps.update[i, j] == pytest.approx(math.sqrt(moved[layer]), rel=1e-4)
            # the weights the update moved: θ before the step
            assert steps.weight[i, j] == pytest.approx(math.sqrt(weights[layer]), rel=1e-5)


class Bag(nn.Module):
    """A sparse embedding (its gradient a sparse COO tensor, uncoalesced) and a dense head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 6, sparse=True)
        self.head = nn.Linear(6, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids).mean(1))


def _sparse_run(watched: bool) -> tuple[list[torch.Tensor], list[list[float]], Any]:
    torch.manual_seed(0)
    model = Bag()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    expected = []
    with gdlab.watch(model, optimizer, ratio_every=1) if watched else contextlib.nullcontext() as w:
        for _ in range(12):
            ids, y = torch.randint(0, 50, (16, 5)), torch.randn(16, 1)  # repeated ids
            loss = nn.functional.mse_loss(model(ids), y)
            optimizer.zero_grad()
            loss.backward()
            assert model.embed.weight.grad.is_sparse
            embed = float(model.embed.weight.grad.to_dense().double().norm())
            head = sum(float(p.grad.double().pow(2).sum()) for p in model.head.parameters())
            expected.append([embed, math.sqrt(head)])
            optimizer.step()
            if w is not None:
                w.step(loss)
    return [p.detach().clone() for p in model.parameters()], expected, w


def test_a_sparse_gradient_is_measured_and_training_is_unchanged() -> None:
    plain, _, _ = _sparse_run(watched=False)
    watched, expected, w = _sparse_run(watched=True)
    for a, b in zip(plain, watched, strict=True):
        assert torch.equal(a, b)
    steps = w.recorded()
    assert w.layers == ["embed", "head"]
    np.testing.assert_allclose(steps.grad, np.array(expected), rtol=1e-5)
    assert np.isfinite(steps.update).all() and (steps.update > 0).all()


def test_under_a_grad_scaler_the_norms_are_the_unscaled_ones() -> None:
    runs = []
    for scaled in (False, True):
        torch.manual_seed(0)
        model = mlp()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, enabled=scaled)
        with gdlab.watch(model, optimizer, scaler=scaler) as w:
            for x, y in batches(5):
                loss = nn.functional.mse_loss(model(x), y)
                optimizer.zero_grad()
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                w.step(loss)
        runs.append(w.recorded().grad)
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-6)


def test_a_step_the_grad_scaler_skips_is_not_a_non_finite_diagnosis() -> None:
    torch.manual_seed(0)
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=5e-4)  # the loss is 100x
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)  # the first steps overflow
    with gdlab.watch(model, optimizer, scaler=scaler) as w:
        for x, y in batches(20):
            loss = 100 * nn.functional.mse_loss(model(x), y)  # x 2^127 overflows float32
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            w.step(loss)
    steps = w.recorded()
    assert steps.skipped[:2].all() and not steps.skipped[-1]  # the scaler backed off
    assert not np.isfinite(steps.grad[0]).all()  # recorded as it was...
    assert "non_finite" not in [d["kind"] for d in w.summary()["diagnoses"]]  # ...not a fault


def test_the_norms_are_the_gradients_before_the_loop_clips_them() -> None:
    torch.manual_seed(0)
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    before_clipping = []
    with gdlab.watch(model, optimizer, scaler=scaler) as w:
        for x, y in batches(6):
            loss = nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            total = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1e-3)
            before_clipping.append(float(total))  # clip_grad_norm_ returns the norm before
            scaler.step(optimizer)
            scaler.update()
            w.step(loss)
    recorded = np.sqrt((w.recorded().grad ** 2).sum(1))
    assert min(before_clipping) > 10 * 1e-3  # the clip changed every step's gradient
    np.testing.assert_allclose(recorded, before_clipping, rtol=1e-5)


def exact_hessian(model: nn.Module, loss_of) -> torch.Tensor:
    params = list(model.parameters())
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]
    flat = torch.cat([p.detach().reshape(-1) for p in params]).double()

    def loss_at(vector: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(vector, sizes)
        values = {name: piece.reshape(shape) for (name, _), piece, shape in
                  zip(model.named_parameters(), pieces, shapes, strict=True)}  # fmt: skip
        return loss_of(lambda x: torch.func.functional_call(model, values, (x,)))

    return torch.autograd.functional.hessian(loss_at, flat)


def exact_lambda_max(model: nn.Module, loss_of) -> float:
    return float(torch.linalg.eigvalsh(exact_hessian(model, loss_of))[-1])


@pytest.mark.parametrize("method", ["double backward", "finite differences"])
def test_sharpness_is_within_two_percent_of_the_exact_eigenvalue(method: str) -> None:
    torch.manual_seed(1)
    model = mlp(depth=2, width=4).double()
    x = torch.randn(64, 4, dtype=torch.float64)
    y = x.sum(1, keepdim=True).sin()

    def loss_of(forward):
        return nn.functional.mse_loss(forward(x), y)

    exact = exact_lambda_max(model, loss_of)
    params = list(model.parameters())
    found, vector = sharpness(lambda: loss_of(model), params, None, steps=100, method=method)
    assert found.value == pytest.approx(exact, rel=0.02)
    assert found.residual < 0.1
    warm, _ = sharpness(lambda: loss_of(model), params, vector, steps=5, method=method)
    assert warm.value == pytest.approx(exact, rel=0.02)  # warm-started: a few products suffice


@pytest.mark.parametrize("amsgrad", [False, True])
def test_under_adam_the_probe_measures_the_preconditioned_sharpness(amsgrad: bool) -> None:
    torch.manual_seed(1)
    model = mlp(depth=2, width=4).double()
    x = torch.randn(64, 4, dtype=torch.float64)
    y = x.sum(1, keepdim=True).sin()
    lr, steps = 0.01, 5

    def loss_of(forward):
        return nn.functional.mse_loss(forward(x), y)

    optimizer = torch.optim.Adam(model.parameters(), lr=lr, amsgrad=amsgrad)
    with gdlab.watch(model, optimizer, probe=lambda: loss_of(model), every=steps,
                     budget=None) as w:  # fmt: skip
        for _ in range(steps):
            loss = loss_of(model)
            optimizer.zero_grad()
            loss.backward()
            before = [p.detach().clone() for p in model.parameters()]
            optimizer.step()
            w.step(loss)
    # P = (1 - β1^t)(√v̂ + ε) is Adam's preconditioner: its last step was lr · P⁻¹ m
    diagonal = []
    for p, old in zip(model.parameters(), before, strict=True):
        state = optimizer.state[p]
        v = state["max_exp_avg_sq" if amsgrad else "exp_avg_sq"] / (1 - 0.999**steps)
        pre = (1 - 0.9**steps) * (v.sqrt() + 1e-8)
        torch.testing.assert_close(old - p.detach(), lr * state["exp_avg"] / pre)
        diagonal.append(pre.reshape(-1))
    scale = torch.cat(diagonal).rsqrt()
    hessian = exact_hessian(model, loss_of)
    exact = float(torch.linalg.eigvalsh(scale[:, None] * hessian * scale[None, :])[-1])
    (probe,) = w.probes
    assert probe["preconditioned"] and probe["sharpness"] == pytest.approx(exact, rel=0.02)
    assert probe["threshold"] == pytest.approx((2 + 2 * 0.9) / ((1 - 0.9) * lr))  # 38/lr


def test_a_deep_sigmoid_network_is_diagnosed_vanishing_naming_its_first_layer() -> None:
    torch.manual_seed(0)
    model = mlp(depth=10, width=16, activation=nn.Sigmoid)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with gdlab.watch(model, optimizer, block=8) as w:
        train(model, optimizer, batches(16), w)
    kinds = {d["kind"]: d for d in w.summary()["diagnoses"]}
    assert "vanishing" in kinds and kinds["vanishing"]["layer"] == "0"
    assert "orders of magnitude" in kinds["vanishing"]["message"]


def test_with_a_probe_vanishing_names_the_saturated_layers_and_their_share() -> None:
    torch.manual_seed(0)
    model = mlp(depth=5, width=16, activation=nn.Sigmoid)
    with torch.no_grad():
        for layer in model[::2]:
            layer.bias.fill_(6.0)  # every sigmoid starts near 1, where it is flat
    x_probe = torch.randn(64, 4)
    y_probe = x_probe.sum(1, keepdim=True).sin()

    def probe() -> torch.Tensor:
        return nn.functional.mse_loss(model(x_probe), y_probe)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with gdlab.watch(model, optimizer, block=4, probe=probe) as w:
        train(model, optimizer, batches(8), w)
    (vanishing,) = [d for d in w.summary()["diagnoses"] if d["kind"] == "vanishing"]
    with torch.no_grad():  # the share by hand, on the weights of the step it was said at
        first = torch.sigmoid(model[0](x_probe))
    share = float(((first <= 0.01) | (first >= 0.99)).float().mean())
    assert share > 0.5
    assert "Layers saturated on the probe batch" in vanishing["message"]
    assert f": 1 ({share:.0%}), 3 (" in vanishing["message"]


def test_dead_relu_units_are_counted_on_the_probe_batch() -> None:
    from gdlab.watching.probe import activations

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    with torch.no_grad():
        model[0].bias[:6] = -100.0  # 6 of 8 units can never fire
    x = torch.randn(32, 4)
    said = activations(model, lambda: model(x).pow(2).mean())
    assert said == "dead ReLU units, 0 on every probe row: 1 (75% of units)"


def test_a_wrapped_model_s_layers_are_named_as_the_plain_model_s() -> None:
    from gdlab.watching.probe import activations

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    with torch.no_grad():
        model[0].bias[:6] = -100.0
    x = torch.randn(32, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    nested = nn.Sequential(torch.compile(model))  # a compiled part of a larger model
    layers = {
        name: gdlab.watch(wrapped, optimizer).layers
        for name, wrapped in [("plain", model), ("compiled", torch.compile(model)),
                              ("parallel", nn.DataParallel(model)), ("nested", nested)]
    }  # fmt: skip
    assert layers["plain"] == ["0", "2"]
    assert layers["compiled"] == layers["parallel"] == layers["plain"]
    assert layers["nested"] == ["0.0", "0.2"]
    wrapped = nn.DataParallel(model)  # on the CPU it calls the model: its hooks see the units
    said = activations(wrapped, lambda: wrapped(x).pow(2).mean())
    assert said == "dead ReLU units, 0 on every probe row: 1 (75% of units)"


def test_a_large_initialisation_is_diagnosed_exploding() -> None:
    torch.manual_seed(0)
    model = mlp(depth=4, width=32, activation=nn.ReLU)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(6.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with gdlab.watch(model, optimizer, block=4) as w:
        train(model, optimizer, batches(4), w)
    assert "exploding" in [d["kind"] for d in w.summary()["diagnoses"]]


def test_a_healthy_run_has_no_depth_or_stability_diagnosis() -> None:
    torch.manual_seed(0)
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = batches(1)[0]
    with gdlab.watch(model, optimizer, probe=lambda: nn.functional.mse_loss(model(x), y),
                     every=10, budget=None) as w:  # fmt: skip
        train(model, optimizer, batches(60), w)
    kinds = {d["kind"] for d in w.summary()["diagnoses"]}
    assert not kinds & {"vanishing", "exploding", "lr_above_threshold", "non_finite"}
    assert len(w.probes) == 6
    assert all(p["sharpness"] < p["threshold"] for p in w.probes)


def test_sgd_above_two_over_lambda_is_diagnosed_before_the_loss_is_non_finite() -> None:
    torch.manual_seed(0)
    X = torch.randn(100, 3)
    y = X @ torch.tensor([[1.0], [-2.0], [0.5]])
    model = nn.Linear(3, 1, bias=False)
    hessian = 2 * X.T @ X / len(X)  # mean squared error: the exact Hessian
    lr = 1.1 * 2 / float(torch.linalg.eigvalsh(hessian)[-1])
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)

    def loss() -> torch.Tensor:
        return nn.functional.mse_loss(model(X), y)

    first_bad = None
    with gdlab.watch(model, optimizer, probe=loss, every=5, budget=None) as w:
        for step in range(1, 400):
            value = loss()
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            w.step(value)
            if first_bad is None and not math.isfinite(float(value.detach())):
                first_bad = step
    said = [d for d in w.summary()["diagnoses"] if d["kind"] == "lr_above_threshold"]
    assert first_bad is not None and said and said[0]["step"] < first_bad
    assert w.probes[0]["threshold"] == pytest.approx(2 / lr)
    assert w.probes[0]["sharpness"] == pytest.approx(float(torch.linalg.eigvalsh(hessian)[-1]),
                                                     rel=0.02)  # fmt: skip


def test_a_nan_injected_into_one_layer_is_named_with_its_step() -> None:
    torch.manual_seed(0)
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with gdlab.watch(model, optimizer, block=4) as w:
        for step, (x, y) in enumerate(batches(12), start=1):
            if step == 7:
                with torch.no_grad():
                    model[2].weight[0, 0] = math.nan
            loss = nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            w.step(loss)
    found = [d for d in w.summary()["diagnoses"] if d["kind"] == "non_finite"]
    assert found and found[0]["layer"] == "2" and found[0]["step"] == 7


class Noisy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3),
                                  nn.Linear(16, 1))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _two_hundred_steps(watched: bool) -> tuple[list[torch.Tensor], int]:
    torch.manual_seed(0)
    model = Noisy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    probe_x = torch.randn(64, 4)
    probe_y = probe_x.sum(1, keepdim=True)

    def probe() -> torch.Tensor:
        return nn.functional.mse_loss(model(probe_x), probe_y)

    watcher = gdlab.watch(model, optimizer, every=10, probe=probe, budget=None)
    with watcher if watched else contextlib.nullcontext():
        for _ in range(200):
            x = torch.randn(32, 4)  # batches drawn from the global RNG
            loss = nn.functional.mse_loss(model(x), x.sum(1, keepdim=True))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if watched:
                watcher.step(loss)
    kept = [t.detach().clone() for t in [*model.parameters(), *model.buffers()]]
    return kept, len(watcher.probes)


@pytest.mark.slow
def test_two_hundred_steps_are_bit_identical_with_and_without_the_watcher() -> None:
    plain, _ = _two_hundred_steps(watched=False)
    watched, probes = _two_hundred_steps(watched=True)
    assert probes >= 5
    for a, b in zip(plain, watched, strict=True):
        assert torch.equal(a, b)


def test_the_probe_restores_modes_buffers_grads_and_rng() -> None:
    torch.manual_seed(0)
    model = Noisy().train()
    model(torch.randn(8, 4)).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    buffers = [b.clone() for b in model.buffers()]
    state = torch.get_rng_state()
    params = list(model.parameters())
    with untouched(model, params):
        model.train()
        model(torch.randn(8, 4)).sum().backward()
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(a, p.grad) for a, p in zip(grads, params, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers(), strict=True))
    assert torch.equal(state, torch.get_rng_state())


def test_the_run_folder_holds_history_and_diagnoses(tmp_path) -> None:
    torch.manual_seed(0)
    model = mlp(depth=10, width=16, activation=nn.Sigmoid)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with gdlab.watch(model, optimizer, out=tmp_path / "mine") as w:
        train(model, optimizer, batches(20), w)
    summary = json.loads((tmp_path / "mine" / "summary.json").read_text())
    assert summary["steps"] == 20
    assert {"kind", "step", "layer", "message"} <= set(summary["diagnoses"][0])
    lines = (tmp_path / "mine" / "history.csv").read_text().splitlines()
    assert len(lines) == 21 and "grad_norm:0" in lines[0] and "update_ratio:18" in lines[0]
    assert "sharpness" in " ".join(summary["skipped"])  # no probe: said, with why
    assert "vanishing" in w._repr_html_()


def test_a_folder_is_checked_before_training_and_a_watched_run_there_is_kept(tmp_path) -> None:
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with gdlab.watch(model, optimizer, out=tmp_path / "mine") as w:
        train(model, optimizer, batches(3), w)
    kept = (tmp_path / "mine" / "summary.json").read_text()
    with pytest.raises(GdlabError, match="already holds a watched run") as error:
        gdlab.watch(model, optimizer, out=tmp_path / "mine")
    assert "overwrite=True" in str(error.value) and "\n" not in str(error.value)
    assert (tmp_path / "mine" / "summary.json").read_text() == kept
    with gdlab.watch(model, optimizer, out=tmp_path / "mine", overwrite=True) as w:
        train(model, optimizer, batches(5), w)
    assert json.loads((tmp_path / "mine" / "summary.json").read_text())["steps"] == 5
    (tmp_path / "file").write_text("mine")
    for out, message in ((tmp_path / "file", "is a file"), (tmp_path / "file" / "run",
                         "cannot make the folder"), (7, "folder path, not int")):  # fmt: skip
        with pytest.raises(GdlabError, match=message):
            gdlab.watch(model, optimizer, out=out)
    assert (tmp_path / "file").read_text() == "mine"


def test_a_probe_that_fails_is_skipped_with_its_reason_and_training_goes_on() -> None:
    torch.manual_seed(0)
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)

    def broken() -> torch.Tensor:
        raise ValueError("no batch here")

    with gdlab.watch(model, optimizer, probe=broken, every=2) as w:
        train(model, optimizer, batches(6), w)
    summary = w.summary()
    assert summary["steps"] == 6 and not summary["probes"]
    assert any("no batch here" in s for s in summary["skipped"])


@pytest.mark.parametrize("where", [1, 2, 3], ids=["backward", "pre-hook", "step"])
def test_a_measure_that_fails_stops_the_watcher_not_the_training(
    where: int, tmp_path, monkeypatch
) -> None:
    """A failure the watcher does not foresee (here its fused norm raising from the 13th
    step's backward callback, its step pre-hook or its step(), and on every later call) is
    one warning: training goes on bit for bit as unwatched, and the 12 steps before are kept."""
    from gdlab.watching.watcher import Watcher

    def run(watched: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = mlp()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        watcher = gdlab.watch(model, optimizer, out=tmp_path / "w", ratio_every=1)
        with watcher if watched else contextlib.nullcontext():
            train(model, optimizer, batches(30), watcher if watched else None)
        if watched:
            runs.append(watcher)
        return [p.detach().clone() for p in model.parameters()]

    plain, runs = run(watched=False), []
    measure, calls = Watcher._norms, []

    def failing(tensors, out, scale=None) -> None:
        calls.append(None)
        # three calls a step (gradients, weights before the step, its update), and the first
        # step's weights: 37 calls for 12 steps, then the 13th step's `where`-th call fails
        if len(calls) >= 37 + where:
            raise RuntimeError("Expected all tensors to be on the same device\nsecond line")
        measure(tensors, out, scale)

    monkeypatch.setattr(Watcher, "_norms", staticmethod(failing))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        watched = run(watched=True)
    for a, b in zip(plain, watched, strict=True):
        assert torch.equal(a, b)
    (watcher,) = runs
    said = [str(w.message) for w in caught if "stopped measuring" in str(w.message)]
    assert said == [
        "gdlab watch: stopped measuring at step 13 (RuntimeError: Expected all tensors to be on "
        "the same device); training goes on unwatched, and the 12 steps recorded are kept. "
        "Please report it with the model's layout."
    ]
    summary = json.loads((tmp_path / "w" / "summary.json").read_text())
    assert summary["steps"] == 12
    assert "every measure from step 13 on: the watcher failed (RuntimeError" in (
        summary["skipped"][-1])  # fmt: skip
    steps = watcher.recorded()
    assert list(steps.step) == list(range(1, 13)) and np.isfinite(steps.grad).all()


def test_a_model_without_second_derivatives_falls_back_to_finite_differences() -> None:
    class Clamp(torch.autograd.Function):  # a kernel with a first derivative only
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.clamp(min=0) ** 2

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * 2 * x.clamp(min=0)

    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    x, y = batches(1)[0]

    def loss() -> torch.Tensor:
        return nn.functional.mse_loss(Clamp.apply(model(x)), y)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with gdlab.watch(model, optimizer, probe=loss, every=2, budget=None) as w:
        for _ in range(4):
            value = loss()
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            w.step(value)
    assert [p["method"] for p in w.probes] == ["finite differences"] * 2
    assert all(math.isfinite(p["sharpness"]) for p in w.probes)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (dict(model="not a model"), "torch.nn.Module"),
        (dict(optimizer=3), "torch.optim.Optimizer"),
        (dict(every=0), "whole numbers"),
        (dict(ratio_every=-1), "whole numbers"),
        (dict(probe=5), "probe must be a function"),
        (dict(budget=2.0), "share of the training time"),
    ],
)
def test_bad_arguments_are_one_line_errors(args: dict, message: str) -> None:
    model = mlp()
    given = {"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.1), **args}
    with pytest.raises(GdlabError, match=message) as error:
        gdlab.watch(given.pop("model"), given.pop("optimizer"), **given)
    assert "\n" not in str(error.value)


def test_a_diagnosis_is_also_a_warning_when_it_is_found() -> None:
    torch.manual_seed(0)
    model = mlp(depth=10, width=16, activation=nn.Sigmoid)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with gdlab.watch(model, optimizer, block=4) as w:
            train(model, optimizer, batches(4), w)
    said = [str(c.message) for c in caught if issubclass(c.category, GdlabWarning)]
    assert any(s.startswith("gdlab watch: vanishing gradients") for s in said)


DDP_SCRIPT = """
import json, os, sys
import torch, torch.distributed as dist
from torch import nn
import gdlab

ranks = int(os.environ.get("WORLD_SIZE", "1"))
if ranks > 1:
    dist.init_process_group("gloo")
rank = dist.get_rank() if ranks > 1 else 0
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).double()
if ranks > 1:
    model = nn.parallel.DistributedDataParallel(model)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
g = torch.Generator().manual_seed(1)
with gdlab.watch(model, optimizer, out=sys.argv[1]) as w:
    for _ in range(5):
        x = torch.randn(64, 4, generator=g, dtype=torch.float64)
        y = x.sum(1, keepdim=True).sin()
        share = slice(rank * 64 // ranks, (rank + 1) * 64 // ranks)
        loss = nn.functional.mse_loss(model(x[share]), y[share])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        w.step(loss)
print(json.dumps(w.recorded().grad.tolist()))
if ranks > 1:
    dist.barrier()  # neither rank tears down gloo while the other still talks to it
    dist.destroy_process_group()
"""


@pytest.mark.slow
def test_under_ddp_rank_zero_alone_writes_and_the_norms_are_the_global_batch_ones(
    tmp_path,
) -> None:
    import os
    import socket
    import subprocess
    import sys

    script = tmp_path / "loop.py"
    script.write_text(DDP_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    alone = subprocess.run([sys.executable, str(script), str(tmp_path / "alone")], env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert alone.returncode == 0, alone.stderr
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ranked = [dict(env, RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port)) for rank in range(2)]  # fmt: skip
    command = [sys.executable, str(script)]
    workers = []
    for rank in range(2):
        out = str(tmp_path / f"rank{rank}")
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        workers.append(subprocess.Popen([*command, out], env=ranked[rank], text=True, **pipes))
    outputs = [worker.communicate(timeout=120) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), outputs[1][1][-2000:]
    assert (tmp_path / "rank0" / "summary.json").exists()
    assert not (tmp_path / "rank1").exists()
    expected = np.array(json.loads(alone.stdout))
    for out, _ in outputs:
        np.testing.assert_allclose(np.array(json.loads(out)), expected, rtol=1e-5)
