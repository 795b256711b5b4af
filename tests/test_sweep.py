"""Sweeps: K stacked runs equal K separate runs, and their labels say what a user would."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import gdlab
from gdlab.errors import GdlabError
from gdlab.tools.sweep import parse_optimizers, parse_rates, sweep
from tests.conftest import CliRun
from tests.test_resume import load

pytestmark = pytest.mark.filterwarnings("ignore::gdlab.GdlabWarning")


@pytest.mark.parametrize(
    ("name", "model", "optimizers", "batch"),
    [
        ("noisy-plane", "linear", ["gd", "momentum", "adam"], 16),
        ("noisy-plane", "linear", ["gd", "nesterov", "adam"], None),  # from XᵀX, no rows
        ("binary-blobs", "logistic", ["gd", "rmsprop"], 16),
        ("three-blobs", "softmax", ["nesterov", "rmsprop"], None),
        ("binary-blobs", "mlp:6", ["adamw", "adagrad", "sgd"], 32),
    ],
)
def test_stacked_runs_equal_separate_runs(
    name: str, model: str, optimizers: list[str], batch: int | None
) -> None:
    X, y = load(name)
    lrs = [0.003, 0.03, 0.3]
    common = {"model": model, "epochs": 15, "batch_size": batch, "dtype": "float64",
              "weight_decay": 1e-3}  # fmt: skip
    runs, _ = sweep(X, y, lrs=lrs, optimizers=optimizers, **common)
    for run in runs:
        single = gdlab.fit(X, y, optimizer=run.optimizer, lr=run.lr, tol=0, patience=10**6,
                           gtol=0, xtol=0, stop=lambda: False, **common)  # fmt: skip
        np.testing.assert_allclose(run.losses, single.history.train_loss, rtol=1e-9)


@pytest.mark.parametrize(
    ("name", "model", "loss", "batch"),
    [
        ("noisy-plane", "linear", "mae", 16),  # a linear model without a formula: autograd
        ("binary-blobs", "logistic", "bce", None),  # the analytic source on every row
    ],
)
def test_linear_sweeps_off_the_formula_paths_equal_separate_runs(
    name: str, model: str, loss: str, batch: int | None
) -> None:
    X, y = load(name)
    lrs = [0.01, 0.1, 1.0]
    common = {"model": model, "loss": loss, "epochs": 12, "batch_size": batch,
              "dtype": "float64"}  # fmt: skip
    runs, _ = sweep(X, y, lrs=lrs, optimizers=["gd", "adam"], **common)
    for run in runs:
        single = gdlab.fit(X, y, optimizer=run.optimizer, lr=run.lr, tol=0, patience=10**6,
                           gtol=0, xtol=0, stop=lambda: False, **common)  # fmt: skip
        np.testing.assert_allclose(run.losses, single.history.train_loss, rtol=1e-9)


@pytest.mark.parametrize(
    ("name", "model", "optimizers", "batch"),
    [
        ("noisy-plane", "linear", ["gd", "momentum"], None),  # from XᵀX, iterated
        ("noisy-plane", "linear", ["gd", "adam"], 16),  # gradients by formula
        ("binary-blobs", "mlp:6", ["gd", "rmsprop"], 32),  # autograd over vmap
    ],
)
@pytest.mark.parametrize("schedule", ["cosine", "step:3,0.5", "exponential:0.9"])
def test_a_sweep_with_a_schedule_and_l1_equals_separate_runs(
    name: str, model: str, optimizers: list[str], batch: int | None, schedule: str
) -> None:
    X, y = load(name)
    lrs = [0.003, 0.03, 0.3]
    common = {"model": model, "epochs": 12, "batch_size": batch, "dtype": "float64",
              "schedule": schedule, "l1": 0.05}  # fmt: skip
    runs, _ = sweep(X, y, lrs=lrs, optimizers=optimizers, **common)
    without, _ = sweep(X, y, lrs=lrs, optimizers=optimizers, epochs=12, batch_size=batch,
                       model=model, dtype="float64")  # fmt: skip
    for run, plain in zip(runs, without, strict=True):
        single = gdlab.fit(X, y, optimizer=run.optimizer, lr=run.lr, tol=0, patience=10**6,
                           gtol=0, xtol=0, stop=lambda: False, **common)  # fmt: skip
        np.testing.assert_allclose(run.losses, single.history.train_loss, rtol=1e-9)
        assert run.losses[-1] != pytest.approx(plain.losses[-1], rel=1e-6)  # they matter


@pytest.mark.parametrize(
    ("name", "model", "optimizers", "batch"),
    [
        ("noisy-plane", "linear", ["gd", "momentum"], None),  # from XᵀX, iterated
        ("noisy-plane", "linear", ["gd", "adam"], 16),  # gradients by formula
        ("binary-blobs", "mlp:6", ["gd", "rmsprop"], 32),  # autograd over vmap
    ],
)
def test_a_sweep_with_validation_stops_each_copy_as_a_separate_run_would(
    name: str, model: str, optimizers: list[str], batch: int | None
) -> None:
    X, y = load(name)
    lrs = [0.001, 0.05, 0.5]
    common = {"model": model, "epochs": 60, "batch_size": batch, "dtype": "float64",
              "val_fraction": 0.3, "patience": 4, "tol": 1e-3}  # fmt: skip
    runs, _ = sweep(X, y, lrs=lrs, optimizers=optimizers, **common)
    stopped = 0
    for run in runs:
        single = gdlab.fit(X, y, optimizer=run.optimizer, lr=run.lr, gtol=0, xtol=0,
                           stop=lambda: False, **common)  # fmt: skip
        np.testing.assert_allclose(run.losses, single.history.train_loss, rtol=1e-9)
        np.testing.assert_allclose(run.val_losses, single.history.val_loss, rtol=1e-9)
        assert (run.label == "early_stopped") == (single.status == "early_stopped"), run
        stopped += run.label == "early_stopped"
    assert 0 < stopped < len(runs)  # the comparison covered both outcomes


@pytest.mark.parametrize(("option", "value"), [("tol", 1e-3), ("patience", 5), ("gtol", 1e-3),
                                               ("xtol", 0.0)])  # fmt: skip
def test_a_sweep_refuses_the_stop_tests_by_name(option: str, value: float) -> None:
    X, y = load("noisy-plane")
    with pytest.raises(GdlabError, match=f"`{option}` is a stop test"):
        sweep(X, y, lrs=[0.1], optimizers=["gd"], **{option: value})


def test_gdlab_sweep_names_a_refused_option_as_its_flag(gdlab: Callable[..., CliRun]) -> None:
    run = gdlab("sweep", "noisy-plane", "--lr", "0.01,0.1", "--patience", "5")
    assert run.code == 2 and run.err.count("\n") == 1 and "--patience" in run.err, run.err
    assert "--val-fraction" in run.err


def test_a_gd_sweep_on_least_squares_is_the_closed_form_of_each_run() -> None:
    X, y = load("noisy-plane")
    lrs = [0.01, 0.3, 0.9, 1.5]  # the last is above 2/λmax = 0.92
    common = {"epochs": 40, "dtype": "float64"}
    runs, _ = sweep(X, y, lrs=lrs, optimizers=["gd"], **common)
    for run in runs[:3]:
        single = gdlab.fit(X, y, lr=run.lr, tol=0, patience=10**6, gtol=0, xtol=0, **common)
        assert single.path == "closed-form"
        np.testing.assert_allclose(run.losses, single.history.train_loss, rtol=1e-9)
    assert runs[3].label == "diverged" and "grew to" in runs[3].reason
    assert gdlab.fit(X, y, lr=1.5, **common).status == "diverged"


def test_a_vmapped_custom_architecture_equals_the_fast_path() -> None:
    """Modules other than gdlab's own go through torch.func.vmap + functional_call."""
    from gdlab.tools.stacked import StackedCopies

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    options = gdlab.FitOptions(lr=1.0)
    group = StackedCopies(net, options, [0.1, 0.2])
    X = torch.randn(5, 2)
    fast = group.outputs(X)
    wrapped = StackedCopies(torch.nn.Sequential(torch.nn.Sequential(*net)), options, [0.1, 0.2])
    torch.testing.assert_close(wrapped.outputs(X), fast)
    torch.testing.assert_close(fast[0], net(X))


def test_labels_follow_the_predicted_limit() -> None:
    X, y = load("noisy-plane")
    lrs = parse_rates("1e-3:2:8")
    runs, problem = sweep(X, y, lrs=lrs, optimizers=["gd"], epochs=100)
    limit = 2 / problem.curvature.lambda_max  # type: ignore[union-attr]
    for run in runs:
        if run.lr > limit:
            assert run.label == "diverged" and "1000x its start" in run.reason
        else:
            assert run.label in ("too-small", "good")
    labels = [run.label for run in runs]
    assert labels[0] == "too-small" and "still falling" in runs[0].reason
    assert "good" in labels


def test_mini_batch_noise_at_a_large_rate_is_oscillating() -> None:
    X, y = load("noisy-plane")
    runs, _ = sweep(X, y, lrs=[0.01, 0.1], optimizers=["sgd"], batch_size=1, epochs=40)
    assert [run.label for run in runs] == ["good", "oscillating"]
    assert "rose in" in runs[1].reason


def test_rate_and_optimizer_lists_are_checked() -> None:
    assert parse_rates("1e-4:1:5") == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    assert parse_rates("0.1,0.2") == [0.1, 0.2]
    for bad in ("1e-4:1", "0:1:4", "a,b", ""):
        with pytest.raises(GdlabError, match="LOW:HIGH:COUNT"):
            parse_rates(bad)
    with pytest.raises(GdlabError, match="unknown lion"):
        parse_optimizers("gd,lion")


def test_gdlab_sweep_writes_table_csv_and_figures(
    gdlab: Callable[..., CliRun], tmp_path: Path
) -> None:
    run = gdlab("sweep", "noisy-plane", "--lr", "1e-3:2:6", "--optimizer", "gd,momentum",
                "--epochs", "60", "--out", str(tmp_path), "--overwrite")  # fmt: skip
    assert run.code == 0, run.err
    assert "predicted stability limits: 2/λmax" in run.out and "diverged" in run.out
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))
    assert len(rows) == 12 and {row["optimizer"] for row in rows} == {"gd", "momentum"}
    assert all(row["label"] in ("too-small", "good", "oscillating", "diverged") for row in rows)
    history = list(csv.DictReader((tmp_path / "sweep_history.csv").open()))
    assert len(history) == sum(int(row["epochs"]) for row in rows)
    for name in ("sweep_curves.png", "sweep_final.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    as_json = gdlab("sweep", "tutorial-line", "--lr", "0.1,3", "--json", "--epochs", "20",
                    "--out", str(tmp_path / "j"))  # fmt: skip
    report = json.loads(as_json.out)
    assert [r["label"] for r in report["runs"]] == ["good", "diverged"]
    bad = gdlab("sweep", "noisy-plane", "--lr", "fast")
    assert bad.code == 2 and "LOW:HIGH:COUNT" in bad.err


def test_gdlab_sweep_writes_validation_curves_and_early_stops(
    gdlab: Callable[..., CliRun], tmp_path: Path
) -> None:
    run = gdlab("sweep", "noisy-plane", "--lr", "1e-3:1.5:6", "--val-fraction", "0.3",
                "--patience", "5", "--out", str(tmp_path), "--overwrite")  # fmt: skip
    assert run.code == 0, run.err
    assert "early_stopped" in run.out and "the validation loss last improved at epoch" in run.out
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))
    history = list(csv.DictReader((tmp_path / "sweep_history.csv").open()))
    assert len(history) == sum(int(row["epochs"]) for row in rows)
    X, y = load("noisy-plane")
    runs, _ = sweep(X, y, lrs=[float(rows[2]["lr"])], optimizers=["gd"], val_fraction=0.3,
                    patience=5, epochs=1000, lr=0.01)  # fmt: skip
    written = [float(r["val_loss"]) for r in history if r["lr"] == rows[2]["lr"]]
    assert written == runs[0].val_losses and len(written) == int(rows[2]["epochs"])
