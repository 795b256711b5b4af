"""The exact least-squares path (gradients from XᵀX) against the plain autograd loop."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import gdlab
from gdlab.config import OPTIMIZERS
from gdlab.data.builtin import DATASETS
from gdlab.history import History
from gdlab.train.exact import LeastSquaresStatistics

# Paths are compared over fixed epochs, so most runs end at the limit on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:stopped at the epoch limit")


def problem(seed: int = 3, n: int = 300, d: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * np.linspace(1.0, 5.0, d) + 2.0
    y = X @ rng.normal(size=d) + 1.5 + rng.normal(scale=0.3, size=n)
    return X, y


def both_paths(X: object, y: object, **options: object) -> tuple[gdlab.FitResult, gdlab.FitResult]:
    common = {"dtype": "float64", "tol": 0.0, "gtol": 0.0, "xtol": 0.0, "device": "cpu", **options}
    exact = gdlab.fit(X, y, fast_paths="iterate", **common)
    plain = gdlab.fit(X, y, fast_paths="off", **common)
    assert (exact.path, plain.path) == ("exact", "autograd")
    return exact, plain


def assert_same_run(exact: gdlab.FitResult, plain: gdlab.FitResult, rtol: float = 1e-9) -> None:
    assert exact.status == plain.status and len(exact.history) == len(plain.history)
    for name, values in plain.history.params.items():
        np.testing.assert_allclose(exact.history.params[name], values, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(exact.history.train_loss, plain.history.train_loss, rtol=rtol)
    # Near the optimum autograd's gradient is rounding noise (~1e-16): compare to the first norm.
    scale = plain.history.grad_norm[0]
    np.testing.assert_allclose(exact.history.grad_norm, plain.history.grad_norm, atol=1e-9 * scale)
    assert exact.coef_ is not None and plain.coef_ is not None
    np.testing.assert_allclose(exact.coef_, plain.coef_, rtol=rtol)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_fast_paths_iterates_equal_autograd_for_every_optimizer(optimizer: str) -> None:
    X, y = problem()
    lr = {"adagrad": 0.1, "rmsprop": 0.003, "adam": 0.01, "adamw": 0.01}.get(optimizer, 0.1)
    assert_same_run(*both_paths(X, y, optimizer=optimizer, lr=lr, epochs=150, patience=150))


@pytest.mark.parametrize(
    "options",
    [
        {"intercept": False, "standardize": False, "lr": 0.002},
        {"weight_decay": 0.05, "optimizer": "momentum"},
        {"l1": 0.01},
        {"model": "poly:3", "lr": 0.05},
        {"schedule": "cosine", "optimizer": "nesterov"},
    ],
    ids=["no-intercept-raw", "weight-decay", "l1", "poly", "cosine"],
)
def test_fast_paths_covers_the_options_of_linear_models(options: dict[str, object]) -> None:
    X, y = problem(n=200, d=2)
    options = {"lr": 0.1, "epochs": 120, "patience": 120, **options}
    assert_same_run(*both_paths(X, y, **options))


def test_fast_paths_early_stopping_on_validation_matches() -> None:
    X, y = problem(n=400)
    exact, plain = both_paths(X, y, lr=0.05, epochs=400, val_fraction=0.25, patience=5, tol=1e-6)
    assert_same_run(exact, plain)
    np.testing.assert_allclose(exact.history.val_loss, plain.history.val_loss, rtol=1e-9)


def test_fast_paths_runs_only_where_it_is_valid() -> None:
    X, y = problem(n=100, d=2)
    assert gdlab.fit(X, y, epochs=3).path == "closed-form"
    assert gdlab.fit(X, y, epochs=3, optimizer="adam").path == "exact"
    assert gdlab.fit(X, y, epochs=3, fast_paths="off").path == "autograd"
    assert gdlab.fit(X, y, epochs=3, batch_size=16).path == "analytic"
    assert gdlab.fit(X, y, epochs=3, batch_size=16, fast_paths="off").path == "autograd"
    assert gdlab.fit(X, y, epochs=3, batch_size=16, loss="mae").path == "autograd"
    assert gdlab.fit(X, y, epochs=3, loss="mae").path == "autograd"
    assert gdlab.fit(X, y, epochs=3, model="mlp:4").path == "autograd"
    labels = (y > np.median(y)).astype(int)
    assert gdlab.fit(X, labels, epochs=3, model="logistic").path == "autograd"  # full batch
    assert gdlab.fit(X, labels, epochs=3, model="logistic", batch_size=8).path == "analytic"
    assert gdlab.fit(X, labels, epochs=3, model="softmax", batch_size=8).path == "autograd"


def test_statistics_give_the_least_squares_solution_and_loss() -> None:
    frame = pd.read_csv(DATASETS["noisy-plane"].path)
    X = torch.tensor(frame[["x1", "x2"]].to_numpy())
    y = torch.tensor(frame["y"].to_numpy()).unsqueeze(1)
    stats = LeastSquaresStatistics.from_rows(X, y, intercept=True)
    A = np.column_stack([X.numpy(), np.ones(len(X))])
    solution, *_ = np.linalg.lstsq(A, y[:, 0].numpy(), rcond=None)
    np.testing.assert_allclose(stats.optimum.numpy(), solution, rtol=1e-12)
    for theta in (torch.tensor([0.3, -2.0, 1.0], dtype=torch.float64), stats.optimum + 1e-5):
        residual = A @ theta.numpy() - y[:, 0].numpy()
        assert stats.loss(theta) == pytest.approx(np.mean(residual**2), rel=1e-13)
        np.testing.assert_allclose(
            stats.gradient(theta).numpy(), 2 * A.T @ residual / len(A), rtol=1e-8
        )
    assert stats.least_loss == pytest.approx(np.mean((A @ solution - y[:, 0].numpy()) ** 2))


@pytest.mark.parametrize(
    "options",
    [
        {"optimizer": "gd", "lr": 0.1, "tol": 0.0, "patience": 400},
        {"optimizer": "sgd", "lr": 0.05, "tol": 1e-6, "patience": 3},  # stops on tol
        {"optimizer": "gd", "lr": 0.05, "val_fraction": 0.25, "tol": 1e-4, "patience": 5},
        {"optimizer": "gd", "lr": 0.002, "standardize": False, "intercept": False},
        {"optimizer": "gd", "lr": 0.05, "model": "poly:2"},
    ],
    ids=["gd", "sgd-tol", "validation", "raw-no-intercept", "poly"],
)
def test_closed_form_equals_the_iterated_loop(options: dict[str, object]) -> None:
    X, y = problem(n=240, d=3)
    common = {"dtype": "float64", "device": "cpu", "epochs": 400, **options}
    closed = gdlab.fit(X, y, **common)
    plain = gdlab.fit(X, y, fast_paths="off", **common)
    assert closed.path == "closed-form"
    assert_same_run(closed, plain)
    assert closed.history.epoch == plain.history.epoch
    np.testing.assert_allclose(closed.history.val_loss, plain.history.val_loss, rtol=1e-9)
    for name, norms in plain.history.grad_norms.items():
        np.testing.assert_allclose(
            closed.history.grad_norms[name], norms, atol=1e-9 * plain.history.grad_norm[0]
        )
    assert closed.predict(X) == pytest.approx(plain.predict(X), rel=1e-9)


def test_a_billion_epochs_return_at_once_with_a_log_sampled_history() -> None:
    X, y = problem(n=500, d=5)
    result = gdlab.fit(X, y, dtype="float64", lr=0.01, epochs=1_000_000_000, tol=0.0,
                       patience=1_000_000_000, xtol=0.0)  # fmt: skip
    assert result.path == "closed-form" and result.status == "max_epochs"
    epochs = result.history.epoch
    assert epochs[:1000] == list(range(1, 1001)) and epochs[-1] == 1_000_000_000
    assert len(epochs) < 5000 and epochs == sorted(set(epochs))
    A = np.column_stack([X, np.ones(len(X))])
    solution, *_ = np.linalg.lstsq(A, y, rcond=None)
    assert result.coef_ is not None and result.intercept_ is not None
    np.testing.assert_allclose(result.coef_[0], solution[:-1], rtol=1e-10)
    assert result.intercept_[0] == pytest.approx(solution[-1], rel=1e-10)
    # The sampled history is the closed form evaluated at those epochs: it falls to the optimum.
    losses = np.array(result.history.train_loss)
    assert np.all(np.diff(losses) <= 1e-12 * losses[0])
    assert losses[-1] == pytest.approx(np.mean((A @ solution - y) ** 2), rel=1e-12)


def test_closed_form_leaves_a_run_that_resumes_on_the_iterated_path() -> None:
    X, y = problem(n=200, d=2)
    options = {"dtype": "float64", "lr": 0.05, "tol": 0.0, "patience": 1000}
    first = gdlab.fit(X, y, epochs=60, **options)
    whole = gdlab.fit(X, y, epochs=100, fast_paths="off", **options)
    resumed = gdlab.fit(X, y, epochs=100, resume=first, **options)
    assert first.path == "closed-form" and resumed.path == "exact"
    assert_same_run(resumed, whole)


def classes(seed: int = 5, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)) * [1.0, 3.0, 0.5] + 1.0
    logits = X @ np.array([1.0, -0.5, 2.0]) - 1.0
    return X, (logits + rng.logistic(size=n) > 0).astype(int)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("model", ["linear", "logistic"])
def test_analytic_mini_batches_equal_autograd(model: str, optimizer: str) -> None:
    X, y = problem(n=300, d=3) if model == "linear" else classes()
    lr = {"adagrad": 0.1, "rmsprop": 0.003, "adam": 0.01, "adamw": 0.01}.get(optimizer, 0.05)
    options = {"model": model, "optimizer": optimizer, "lr": lr, "batch_size": 32, "epochs": 15,
               "patience": 15, "tol": 0.0, "dtype": "float64", "device": "cpu"}  # fmt: skip
    analytic = gdlab.fit(X, y, **options)
    plain = gdlab.fit(X, y, fast_paths="off", **options)
    assert (analytic.path, plain.path) == ("analytic", "autograd")
    assert_same_run(analytic, plain)


@pytest.mark.parametrize(
    "options",
    [{"l1": 0.01}, {"weight_decay": 0.1, "optimizer": "momentum"}, {"intercept": False},
     {"batch_size": 1}, {"batch_size": 7, "val_fraction": 0.2, "patience": 3, "tol": 1e-3}],
    ids=["l1", "weight-decay", "no-intercept", "stochastic", "ragged-last-batch-validation"],
)  # fmt: skip
def test_analytic_mini_batches_cover_the_options(options: dict[str, object]) -> None:
    X, y = classes(n=150)
    common = {"model": "logistic", "lr": 0.1, "batch_size": 16, "epochs": 8, "patience": 8,
              "tol": 0.0, "dtype": "float64", "device": "cpu", **options}  # fmt: skip
    analytic = gdlab.fit(X, y, **common)
    plain = gdlab.fit(X, y, fast_paths="off", **common)
    assert analytic.path == "analytic"
    assert_same_run(analytic, plain)


def test_the_command_line_runs_a_billion_epochs_and_says_which_path(gdlab, tmp_path) -> None:
    out = tmp_path / "run"
    run = gdlab("fit", "noisy-plane", "--lr", "0.1", "--epochs", "1000000000", "--tol", "0",
                "--patience", "1000000000", "--xtol", "0", "--out", str(out))  # fmt: skip
    assert run.code == 0, run.err
    assert (
        "path: closed form" in run.out and "status: max_epochs after 1000000000 epochs" in run.out
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["path"] == "closed-form" and summary["epochs"] == 1_000_000_000
    history = History.load(out / "history.csv")
    assert history.last_epoch == 1_000_000_000 and len(history) < 5000
    # The run continues (on the iterated exact path) from where the closed form left it.
    more = gdlab("fit", "--resume", str(out), "--epochs", "1000000005", "--json")
    assert more.code == 0, more.err
    assert json.loads(more.out)["epochs"] == 1_000_000_005
