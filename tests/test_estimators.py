"""GDRegressor and GDClassifier against scikit-learn: its estimator checks, its closed forms,
and its tools (Pipeline, GridSearchCV, clone, pickle)."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from gdlab import FitOptions, GDClassifier, GDRegressor


@pytest.mark.slow
@parametrize_with_checks([GDRegressor(), GDClassifier()])  # no expected failures
def test_scikit_learn_estimator_checks(estimator, check) -> None:  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


def test_the_parameters_are_the_options_of_gdlab_fit() -> None:
    fields = {field.name: field.default for field in dataclasses.fields(FitOptions)}
    for estimator in (GDRegressor, GDClassifier):
        params = estimator().get_params()
        assert set(params) == set(fields)
        different = {name for name in fields if params[name] != fields[name]}
        assert different == set()  # the same defaults: gdlab.fit's
        assert list(inspect.signature(estimator).parameters) == list(fields)


def test_least_squares_matches_the_closed_form_inside_a_pipeline() -> None:
    X, y = load_diabetes(return_X_y=True)
    pipeline = make_pipeline(
        StandardScaler(), GDRegressor(lr=0.24, epochs=8000, tol=0, patience=8000)
    )
    pipeline.fit(X, y)
    exact = make_pipeline(StandardScaler(), LinearRegression()).fit(X, y)
    ours, theirs = pipeline[-1], exact[-1]
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours.intercept_, [theirs.intercept_], rtol=1e-9)
    assert pipeline.score(X, y) == pytest.approx(exact.score(X, y), abs=1e-9)


def test_grid_search_picks_a_learning_rate_that_converges() -> None:
    X, y = load_diabetes(return_X_y=True)
    search = GridSearchCV(GDRegressor(epochs=300), {"lr": [1e-4, 0.1, 0.5]}, cv=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        search.fit(X, y)
    assert search.best_params_ == {"lr": 0.1}  # 1e-4 crawls; 0.5 is above 2/λmax ≈ 0.25
    scores = search.cv_results_["mean_test_score"]
    assert scores[1] > 0.4 and scores[0] < scores[1] and np.isnan(scores[2])
    assert any("diverged" in str(w.message) and "2/λmax" in str(w.message) for w in caught)


def test_logistic_regression_with_string_labels_matches_scikit_learn() -> None:
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X[:, [0, 1, 4]])  # all 30 are nearly separable
    labels = np.where(y == 1, "benign", "malignant")
    ours = GDClassifier(lr=2.0, epochs=3000, tol=0, patience=3000).fit(X, labels)
    theirs = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10000).fit(X, labels)
    assert list(ours.classes_) == ["benign", "malignant"] and ours.coef_.shape == (1, 3)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-6)
    np.testing.assert_allclose(ours.decision_function(X), theirs.decision_function(X), atol=1e-4)
    assert (ours.predict(X) == theirs.predict(X)).all()


def test_softmax_on_iris_in_a_pipeline() -> None:
    X, y = load_iris(return_X_y=True)
    model = make_pipeline(StandardScaler(), GDClassifier(lr=0.5, epochs=500)).fit(X, y)
    assert model.score(X, y) > 0.95
    assert model[-1].coef_.shape == (3, 4) and model.predict_proba(X).shape == (150, 3)


def test_partial_fit_calls_equal_epochs_of_fit() -> None:
    X, y = load_diabetes(return_X_y=True)
    streamed = GDRegressor(lr=0.05, optimizer="momentum")
    for _ in range(7):
        streamed.partial_fit(X, y)
    whole = GDRegressor(lr=0.05, optimizer="momentum", epochs=7, patience=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        whole.fit(X, y)
    assert streamed.n_iter_ == 7
    assert streamed.history_.to_csv() == whole.history_.to_csv()
    np.testing.assert_array_equal(streamed.coef_, whole.coef_)


def test_classifier_partial_fit_on_batches_lacking_a_class() -> None:
    X, y = load_iris(return_X_y=True)
    model = GDClassifier(lr=0.5)
    with pytest.raises(ValueError, match="two classes"):
        GDClassifier().partial_fit(X[:10], y[:10])
    model.partial_fit(X[y < 2], y[y < 2], classes=[0, 1, 2])  # the first batch lacks class 2
    assert model.predict_proba(X).shape == (150, 3)
    batches = np.array_split(np.random.default_rng(0).permutation(len(y)), 5)
    for _ in range(30):
        for rows in batches:
            model.partial_fit(X[rows], y[rows])
    assert model.classes_.tolist() == [0, 1, 2] and model.score(X, y) > 0.9
    with pytest.raises(ValueError, match=r"not in classes_"):
        model.partial_fit(X[:3], [0, 1, 7])


def test_clone_and_pickle_keep_the_model() -> None:
    X, y = load_iris(return_X_y=True)
    model = GDClassifier(model="mlp:6", optimizer="adam", lr=0.01, epochs=50, batch_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    copy = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(copy.predict_proba(X), model.predict_proba(X))
    assert clone(model).get_params() == model.get_params()
    assert not hasattr(clone(model), "result_")
    copy.partial_fit(X, y)  # the unpickled optimizer and RNG keep training
    assert copy.n_iter_ == model.n_iter_ + 1


pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def test_the_epoch_limit_is_a_convergence_warning_and_bad_options_a_value_error() -> None:
    X, y = load_diabetes(return_X_y=True)
    with pytest.warns(ConvergenceWarning, match="epoch limit"):
        GDRegressor(epochs=3).fit(X, y)
    with pytest.raises(ValueError, match="The `lr` option must be a float"):
        GDRegressor(lr=-1.0).fit(X, y)
    with pytest.raises(ValueError, match="regression model"):
        GDRegressor(loss="bce").fit(X, y)


def test_the_command_line_works_without_scikit_learn(tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = (
        "import sys; sys.modules['sklearn'] = None\n"
        "import gdlab\n"
        "try:\n    gdlab.GDRegressor\nexcept ImportError as e:\n    print(e)\n"
        "from gdlab.cli import main\n"
        f"main(['fit', 'tutorial-line', '--epochs', '5', '--out', {str(tmp_path / 'r')!r}])\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "pip install 'gdlab[sklearn]'" in run.stdout
    assert (tmp_path / "r" / "model.pt").is_file()
