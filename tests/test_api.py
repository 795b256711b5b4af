"""gdlab.fit against independent references: closed-form least squares and scikit-learn."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression

import gdlab
from gdlab.data.builtin import DATASETS


def load(name: str) -> tuple[pd.DataFrame, pd.Series]:
    frame = pd.read_csv(DATASETS[name].path)
    target = DATASETS[name].target
    return frame.drop(columns=target), frame[target]


def test_linear_fit_matches_closed_form_least_squares() -> None:
    X, y = load("noisy-plane")
    result = gdlab.fit(X, y, lr=0.5, epochs=400, dtype="float64", tol=0.0, patience=50)
    A = np.column_stack([X.to_numpy(), np.ones(len(X))])
    exact, *_ = np.linalg.lstsq(A, y.to_numpy(), rcond=None)
    assert result.coef_ is not None and result.intercept_ is not None
    np.testing.assert_allclose(result.coef_[0], exact[:2], rtol=1e-8)
    assert result.intercept_[0] == pytest.approx(exact[2], rel=1e-8)
    assert result.predict(X) == pytest.approx(A @ exact, rel=1e-7)
    # Losses are reported in the target's units: the final MSE is that of the exact fit.
    assert result.history.train_loss[-1] == pytest.approx(np.mean((A @ exact - y) ** 2), rel=1e-6)


def test_numpy_torch_and_pandas_inputs_give_the_same_fit() -> None:
    X, y = load("noisy-plane")
    kwargs = {"lr": 0.3, "epochs": 50}
    from_pandas = gdlab.fit(X, y, **kwargs)
    from_numpy = gdlab.fit(X.to_numpy(), y.to_numpy(), **kwargs)
    from_torch = gdlab.fit(torch.tensor(X.to_numpy()), torch.tensor(y.to_numpy()), **kwargs)
    assert from_pandas.feature_names == ["x1", "x2"] and from_numpy.feature_names == ["x0", "x1"]
    for other in (from_numpy, from_torch):
        assert other.coef_ is not None and from_pandas.coef_ is not None
        np.testing.assert_array_equal(other.coef_, from_pandas.coef_)


def test_logistic_regression_agrees_with_scikit_learn() -> None:
    X, y = load("binary-blobs")
    result = gdlab.fit(X, y, model="logistic", lr=10.0, epochs=3000, dtype="float64", tol=0.0,
                       patience=3000)  # fmt: skip
    reference = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10000).fit(X, y)
    assert result.coef_ is not None and result.intercept_ is not None
    np.testing.assert_allclose(result.coef_[0], reference.coef_[0], rtol=1e-5)
    assert result.intercept_[0] == pytest.approx(reference.intercept_[0], rel=1e-5, abs=1e-6)
    np.testing.assert_allclose(result.predict_proba(X), reference.predict_proba(X), atol=1e-6)
    assert (result.predict(X) == reference.predict(X)).all()


def test_softmax_regression_agrees_with_scikit_learn_multinomial() -> None:
    X, y = load("three-blobs")
    result = gdlab.fit(X, y, model="softmax", lr=5.0, epochs=2000, dtype="float64", tol=0.0,
                       patience=2000)  # fmt: skip
    reference = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10000).fit(X, y)
    np.testing.assert_allclose(result.predict_proba(X), reference.predict_proba(X), atol=1e-6)
    assert result.classes_ == [0, 1, 2]


def test_a_user_module_and_loss_function_are_trained() -> None:
    X, y = load("noisy-plane")
    torch.manual_seed(1)
    module = torch.nn.Sequential(torch.nn.Linear(2, 1))
    result = gdlab.fit(X, y, model=module, loss=torch.nn.functional.mse_loss, lr=0.01,
                       epochs=300, standardize=False)  # fmt: skip
    assert result.model is module and result.coef_ is None and result.custom_model
    assert result.history.train_loss[-1] < result.history.train_loss[0] / 10
    assert np.isfinite(result.predict(X)).all()


@pytest.mark.parametrize("batch_size", [None, 16, 1])
def test_the_same_seed_gives_an_identical_history(batch_size: int | None) -> None:
    X, y = load("noisy-plane")
    runs = [
        gdlab.fit(X, y, lr=0.01, epochs=15, batch_size=batch_size, seed=7, val_fraction=0.2)
        for _ in range(2)
    ]
    first, second = (run.history for run in runs)
    assert first.train_loss == second.train_loss and first.params == second.params
    assert first.val_loss == second.val_loss
    other_seed = gdlab.fit(X, y, lr=0.01, epochs=15, batch_size=batch_size, seed=8)
    assert other_seed.history.train_loss != first.train_loss


def test_initial_parameters_are_those_of_a_seeded_torch_script() -> None:
    X, y = load("noisy-plane")
    result = gdlab.fit(X, y, model="mlp:4", lr=1e-9, epochs=1, seed=3, standardize=False,
                       optimizer="sgd")  # fmt: skip
    torch.manual_seed(3)
    reference = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    for ours, theirs in zip(result.model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours.detach(), theirs.detach(), atol=1e-6, rtol=0,
                                   check_dtype=False)  # fmt: skip


def test_divergence_stops_keeps_finite_parameters_and_names_the_limit() -> None:
    X, y = load("noisy-plane")
    result = gdlab.fit(X, y, lr=1.5, epochs=100)
    assert result.status == "diverged"
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert result.curvature is not None
    limit = 2 / result.curvature.lambda_max
    assert f"2/λmax = {limit:.3g}" in result.message and "lr=1.5 is above" in result.message
    assert len(result.history) < 100


def test_divergence_without_standardization_blames_the_scales() -> None:
    X, y = load("noisy-plane")
    result = gdlab.fit(X * [1, 1000], y, lr=0.01, epochs=100, standardize=False)
    assert result.status == "diverged"
    assert "not standardized" in result.message and "`standardize=False`" in result.message


def test_the_epoch_limit_warns_and_early_stopping_converges() -> None:
    X, y = load("noisy-plane")
    with pytest.warns(gdlab.GdlabWarning, match="epoch limit"):
        limited = gdlab.fit(X, y, lr=0.001, epochs=5)
    assert limited.status == "max_epochs" and len(limited.history) == 5
    stopped = gdlab.fit(X, y, lr=0.3, epochs=5000, val_fraction=0.25, tol=1e-6)
    assert stopped.status == "converged" and len(stopped.history) < 5000
    assert not math.isnan(stopped.history.val_loss[-1])


def test_bad_arrays_are_refused_with_the_fix() -> None:
    with pytest.raises(gdlab.GdlabError, match=r"reshape with X.reshape\(-1, 1\)"):
        gdlab.fit(np.arange(4.0), np.arange(4.0))
    with pytest.raises(gdlab.GdlabError, match="different lengths"):
        gdlab.fit(np.ones((4, 1)), np.ones(3))
    with pytest.raises(gdlab.GdlabError, match="complex"):
        gdlab.fit(np.ones((4, 1), dtype=complex), np.ones(4))
    with pytest.raises(gdlab.GdlabError, match="Unknown option 'learning_rate'"):
        gdlab.fit(np.ones((4, 1)), np.ones(4), learning_rate=0.1)


def test_features_near_the_float64_limit_are_standardized_without_overflow() -> None:
    """Found by the malformed-file tests: squares of 1e300 overflow; moments must not."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 2)) * [1e300, 1.0]
    y = X @ [2e-300, 3.0] + 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no overflow along the way
        result = gdlab.fit(X, y, lr=0.3, epochs=2000, dtype="float64")
    assert result.status == "converged"
    np.testing.assert_allclose(result.coef_[0], [2e-300, 3.0], rtol=1e-6)
    assert result.intercept_[0] == pytest.approx(1.0, abs=1e-6)


def test_warnings_point_at_the_callers_line() -> None:
    """However deep in gdlab a warning is raised, it names the user's call, as numpy's do."""
    X = np.arange(10.0).reshape(-1, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gdlab.fit(X, 2 * X[:, 0] + 1, lr=0.01, epochs=3)  # stops at max_epochs: one warning
    assert caught and all(w.filename == __file__ for w in caught)
