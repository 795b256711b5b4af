"""Learning-rate predictions against measurement: Hessians, divergence boundaries, --lr auto."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LinearRegression, LogisticRegression

import gdlab
from gdlab.analysis.hessian import flat_loss, hessian_spectrum
from gdlab.tools.rates import advise, predicted_epochs
from tests.conftest import CliRun
from tests.test_resume import load

pytestmark = pytest.mark.filterwarnings("ignore::gdlab.GdlabWarning")


@pytest.mark.parametrize(
    ("model", "loss"),
    [
        (lambda: torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1)),
         torch.nn.functional.mse_loss),
        (lambda: torch.nn.Linear(3, 1), torch.nn.functional.binary_cross_entropy_with_logits),
        (lambda: torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3)),
         torch.nn.functional.cross_entropy),
    ],
)  # fmt: skip
def test_lanczos_on_hessian_vector_products_matches_the_autograd_hessian(
    model: Callable[[], torch.nn.Module], loss: Callable[..., torch.Tensor]
) -> None:
    torch.manual_seed(0)
    net = model()
    X = torch.randn(40, 3)
    y = (
        torch.randint(0, 3, (40,))
        if loss is torch.nn.functional.cross_entropy
        else torch.randint(0, 2, (40, 1)).float()
    )
    function, point = flat_loss(net, loss, X, y)
    reference = torch.linalg.eigvalsh(torch.autograd.functional.hessian(function, point))
    lanczos = hessian_spectrum(net, loss, X, y, exact_limit=0)  # HVPs only
    assert lanczos.method == "lanczos"
    c = lanczos.curvature
    assert c.lambda_max == pytest.approx(float(reference[-1]), rel=1e-8)
    assert c.lambda_min == pytest.approx(float(reference[0]), rel=1e-6, abs=1e-9)


def diverges(X: np.ndarray, y: np.ndarray, lr: float, **options: object) -> bool:
    """Measured: the loss rises at some epoch in 500 (for least squares: it blows up)."""
    result = gdlab.fit(X, y, lr=lr, epochs=500, tol=0, patience=10**6, dtype="float64",
                       stop=lambda: False, **options)  # fmt: skip
    losses = np.asarray(result.history.train_loss)
    return result.status == "diverged" or bool(np.any(np.diff(losses) > 1e-12 * losses[:-1]))


def boundary(X: np.ndarray, y: np.ndarray, low: float, high: float, **options: object) -> float:
    """Bisection over the rate (in log space) to 0.1%."""
    assert not diverges(X, y, low, **options) and diverges(X, y, high, **options)
    while high / low > 1.001:
        middle = math.sqrt(low * high)
        if diverges(X, y, middle, **options):
            high = middle
        else:
            low = middle
    return math.sqrt(low * high)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["noisy-plane", "diabetes"])
def test_least_squares_diverges_where_2_over_lambda_max_says(name: str) -> None:
    X, y = load_diabetes(return_X_y=True) if name == "diabetes" else load(name)
    predicted = advise(X, y, seeds=1).max_stable_lr
    measured = boundary(X, y, predicted / 4, predicted * 4)
    assert measured == pytest.approx(predicted, rel=0.02)


def overlapping_classes() -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping Gaussian classes. (On nearly separable data, such as binary-blobs, the
    logits grow during training and the curvature at the optimum is 20 times smaller than at
    the start, so gradient descent stays stable far above the initial-point prediction.)"""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400).astype(float)
    return rng.normal(size=(400, 2)) + (y[:, None] - 0.5) * [1.0, 0.5], y


@pytest.mark.slow
@pytest.mark.parametrize("model", ["logistic", "mlp:16"])
def test_other_models_diverge_within_a_factor_of_two_of_the_prediction(model: str) -> None:
    X, y = overlapping_classes() if model == "logistic" else load("noisy-plane")
    predicted = advise(X, y, model=model, seeds=1).max_stable_lr
    measured = boundary(X, y, predicted / 8, predicted * 8, model=model)
    assert predicted / 2 <= measured <= predicted * 2


def test_predicted_epochs_match_a_run_on_a_quadratic() -> None:
    X, y = load("noisy-plane")
    advice = advise(X, y, seeds=1, tol=1e-10)
    assert advice.recommended_lr == pytest.approx(advice.optimal_lr)
    slow = 0.1 * advice.max_stable_lr
    predicted = predicted_epochs(advice.curvature, slow, "gd", 0.0, 1e-10)
    exact = LinearRegression().fit(X, y)
    best = np.mean((exact.predict(X) - y) ** 2)
    result = gdlab.fit(X, y, lr=slow, epochs=5000, tol=0, patience=10**6, dtype="float64")
    excess = (np.asarray(result.history.train_loss) - best) / (result.history.train_loss[0] - best)
    reached = int(np.argmax(excess < 1e-10)) + 1
    assert predicted is not None and 0.7 * predicted <= reached <= 1.3 * predicted


def optimum_loss(name: str, X: np.ndarray, y: np.ndarray) -> float:
    if name in ("tutorial-line", "noisy-plane", "diabetes"):
        return float(np.mean((LinearRegression().fit(X, y).predict(X) - y) ** 2))
    Z = (X - X.mean(0)) / X.std(0)
    p = LogisticRegression(C=np.inf, tol=1e-14, max_iter=100000).fit(Z, y).predict_proba(Z)
    labels = np.unique(y, return_inverse=True)[1]
    return float(-np.mean(np.log(p[np.arange(len(y)), labels])))


@pytest.mark.parametrize("name", ["tutorial-line", "noisy-plane", "binary-blobs", "three-blobs",
                                  "diabetes"])  # fmt: skip
def test_lr_auto_reaches_the_optimum_without_a_chosen_rate(name: str) -> None:
    X, y = load_diabetes(return_X_y=True) if name == "diabetes" else load(name)
    model = {"binary-blobs": "logistic", "three-blobs": "softmax"}.get(name, "linear")
    result = gdlab.fit(X, y, model=model, lr="auto", dtype="float64")
    assert result.lr_choice.startswith("lr auto: ") and result.status != "diverged"
    best = optimum_loss(name, X, y)
    assert result.loss == pytest.approx(best, rel=1e-3, abs=1e-12)  # the kept model's loss


def test_lr_auto_on_breast_cancer_data_is_stable_and_accurate() -> None:
    """Unpenalized logistic regression on these data has no finite optimum (the classes are
    separable), so the loss can only keep falling: it must fall every epoch and classify well."""
    X, y = load_breast_cancer(return_X_y=True)
    result = gdlab.fit(X, y, model="logistic", lr="auto")
    losses = np.asarray(result.history.train_loss)
    assert result.status != "diverged" and np.all(np.diff(losses) <= 0)
    assert (result.predict(X) == y).mean() > 0.98


def test_gdlab_lr_prints_limits_and_writes_figure_and_json(
    gdlab: Callable[..., CliRun], tmp_path: Path
) -> None:
    run = gdlab("lr", "noisy-plane", "--out", str(tmp_path), "--overwrite", "--json")
    assert run.code == 0, run.err
    report = json.loads(run.out)
    assert report["max_stable_lr"] == pytest.approx(2 / report["lambda_max"])
    assert report["optimal_lr"] == pytest.approx(2 / (report["lambda_max"] + report["lambda_min"]))
    assert report["max_stable_lr_momentum"] == pytest.approx(3.8 / report["lambda_max"])
    assert report["raw_condition_number"] > report["condition_number"] >= 1
    assert len(report["range_test"]["seeds"]) == 3 and report["range_test"]["spread"] >= 1
    assert (tmp_path / "lr.png").stat().st_size > 10_000
    assert (
        json.loads((tmp_path / "lr.json").read_text())["recommended_lr"] == report["recommended_lr"]
    )
    text = gdlab("lr", "binary-blobs", "--out", str(tmp_path / "t"))
    assert text.code == 0 and "advice: --lr" in text.out and "2/λmax" in text.out


def test_fit_with_lr_auto_says_what_it_chose(gdlab: Callable[..., CliRun], tmp_path: Path) -> None:
    run = gdlab("fit", "noisy-plane", "--lr", "auto", "--json", "--out", str(tmp_path / "r"))
    assert run.code == 0 and "lr auto: 0.5, 2/(λmax+λmin)" in run.err
    chosen = json.loads((tmp_path / "r" / "summary.json").read_text())["options"]["lr"]
    assert chosen == pytest.approx(0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bad = gdlab("fit", "noisy-plane", "--lr", "fast")
    assert bad.code == 2 and "The --lr option must be a float" in bad.err and "'fast'" in bad.err
