"""scikit-learn estimators: `GDRegressor` and `GDClassifier`, with the options of `gdlab fit`.

They wrap `gdlab.fit`, so a model trained here is the model the command line trains. Two
defaults differ from the command line, for scikit-learn's sake: dtype float64 (scikit-learn
works in float64, and its checks compare predictions to 1e-7) and no Ctrl-C handling (an
interrupt inside GridSearchCV should stop the search, not one fit). scikit-learn is an optional
dependency: `pip install gdlab[sklearn]`.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from gdlab.config import FitOptions
from gdlab.data.arrays import FloatArray
from gdlab.errors import GdlabWarning
from gdlab.history import History
from gdlab.result import FitResult
from gdlab.training import fit

NOT_CONVERGED = (
    "max_epochs:",
    "stalled:",
    "separable:",
)  # gdlab's warnings that scikit-learn calls ConvergenceWarning


def _never() -> bool:
    return False


class _GDEstimator(BaseEstimator):  # type: ignore[misc]
    """Shared parameters and training; subclasses say how targets and outputs are read."""

    def __init__(
        self,
        *,
        model: str = "linear",
        activation: str = "relu",
        init: str = "default",
        intercept: bool = True,
        loss: str | None = None,
        optimizer: str = "gd",
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        l1: float = 0.0,
        lr: float | str = "auto",
        schedule: str = "constant",
        epochs: int | str = "auto",
        batch_size: int | None = None,
        gtol: float = 1e-8,
        xtol: float = 1e-12,
        tol: float = 1e-8,
        patience: int = 20,
        val_fraction: float = 0.0,
        standardize: bool = True,
        seed: int = 0,
        dtype: str = "auto",
        device: str = "auto",
        memory_budget: float | None = None,
        track_sharpness: int | str = "auto",
        fast_paths: str = "auto",
    ) -> None:
        self.model = model
        self.activation = activation
        self.init = init
        self.intercept = intercept
        self.loss = loss
        self.optimizer = optimizer
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.l1 = l1
        self.lr = lr
        self.schedule = schedule
        self.epochs = epochs
        self.batch_size = batch_size
        self.gtol = gtol
        self.xtol = xtol
        self.tol = tol
        self.patience = patience
        self.val_fraction = val_fraction
        self.standardize = standardize
        self.seed = seed
        self.dtype = dtype
        self.device = device
        self.memory_budget = memory_budget
        self.track_sharpness = track_sharpness
        self.fast_paths = fast_paths

    # -- what subclasses decide -------------------------------------------------------------

    def _options(self, n_classes: int) -> dict[str, Any]:
        return dict(self.get_params())

    def _targets(self, y: Any, *, first: bool, classes: Any = None) -> FloatArray:
        raise NotImplementedError

    # -- training ---------------------------------------------------------------------------

    def _train(self, X: Any, y: Any, *, partial: bool, classes: Any = None) -> None:
        first = not partial or not hasattr(self, "result_")
        X, y = validate_data(self, X, y, reset=first, dtype=np.float64, y_numeric=self._numeric)
        target = self._targets(y, first=first, classes=classes)
        n_classes = len(getattr(self, "classes_", ()))
        options = self._options(n_classes)
        previous: FitResult | None = None if first else self.result_
        if partial:  # one pass over the rows given, no early stopping (scikit-learn's contract)
            done = 0 if previous is None else len(previous.history)
            options |= {"epochs": done + 1, "patience": done + 1, "val_fraction": 0.0}
            if previous is not None and previous.loop_state is not None:
                previous.loop_state.waited = 0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fit(
                X,
                target,
                resume=previous,
                stop=_never,
                classes=list(range(n_classes)) if n_classes else None,
                **options,
            )
        for warning in caught:
            self._rewarn(warning, partial)
        if result.status == "diverged":  # as SGDRegressor does: a diverged model is no model
            raise ValueError(f"{type(self).__name__} diverged: {result.message}")
        self.result_: FitResult = result
        self.n_iter_ = result.history.last_epoch
        self.history_: History = result.history
        self.status_ = result.status
        self._set_coefficients(result)

    @property
    def _numeric(self) -> bool:
        return True

    @staticmethod
    def _rewarn(warning: warnings.WarningMessage, partial: bool) -> None:
        message = str(warning.message)
        if issubclass(warning.category, GdlabWarning) and message.startswith(NOT_CONVERGED):
            if not partial:
                warnings.warn(message, ConvergenceWarning, stacklevel=4)
            return
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)

    def _set_coefficients(self, result: FitResult) -> None:
        if result.coef_ is not None and result.intercept_ is not None:
            self.coef_, self.intercept_ = result.coef_, result.intercept_

    def _outputs(self, X: Any) -> FloatArray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self.result_.decision_function(X)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = False
        return tags


class GDRegressor(RegressorMixin, _GDEstimator):  # type: ignore[misc]
    """Regression by gradient descent: linear (least squares), poly:K or mlp:H1,H2 models.

    Attributes after `fit`: `coef_` (n_features,) and `intercept_` (1,) in the data's units
    (linear and poly models), `n_iter_` (epochs run), `history_` (per-epoch losses and
    parameters), `status_` (converged, max_epochs or diverged) and `result_` (the `FitResult`).
    """

    def fit(self, X: Any, y: Any) -> GDRegressor:
        self._train(X, y, partial=False)
        return self

    def partial_fit(self, X: Any, y: Any) -> GDRegressor:
        """One epoch over (X, y); the first call fixes the standardization."""
        self._train(X, y, partial=True)
        return self

    def predict(self, X: Any) -> FloatArray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self.result_.predict(X)

    def _targets(self, y: Any, *, first: bool, classes: Any = None) -> FloatArray:
        return np.asarray(y, dtype=np.float64)

    def _set_coefficients(self, result: FitResult) -> None:
        if result.coef_ is not None and result.intercept_ is not None:
            self.coef_, self.intercept_ = result.coef_[0], result.intercept_


class GDClassifier(ClassifierMixin, _GDEstimator):  # type: ignore[misc]
    """Classification by gradient descent: logistic (two classes) or softmax, or an MLP.

    `model="linear"` (the default) means a linear model of the logits: logistic regression for
    two classes, softmax regression for more. Labels may be any values scikit-learn accepts.
    """

    def fit(self, X: Any, y: Any) -> GDClassifier:
        self._train(X, y, partial=False)
        return self

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> GDClassifier:
        """One epoch over (X, y); `classes` (every label) is required on the first call."""
        self._train(X, y, partial=True, classes=classes)
        return self

    @property
    def _numeric(self) -> bool:
        return False

    def _targets(self, y: Any, *, first: bool, classes: Any = None) -> FloatArray:
        check_classification_targets(y)
        if first:
            labels = np.unique(y) if classes is None else np.unique(np.asarray(classes))
            if len(labels) < 2:
                only = labels.tolist()[0]  # a Python value: 3, not np.int64(3)
                raise ValueError(
                    f"GDClassifier needs at least two classes; y has one class ({only!r})."
                )
            self.classes_ = labels
        unknown = np.setdiff1d(y, self.classes_)
        if len(unknown):
            raise ValueError(
                f"y has labels {unknown.tolist()!r} that are not in classes_ "
                f"{self.classes_.tolist()!r}; give every label to the first partial_fit call."
            )
        codes: FloatArray = np.searchsorted(self.classes_, y).astype(np.float64)
        return codes

    def _options(self, n_classes: int) -> dict[str, Any]:
        options = dict(self.get_params())
        kind = options["model"].split(":")[0]
        if kind == "linear":
            options["model"] = "logistic" if n_classes == 2 else "softmax"
        elif kind == "mlp" and options["loss"] is None:
            options["loss"] = "bce" if n_classes == 2 else "cross-entropy"
        FitOptions(**options)  # a bad combination fails here, before any work
        return options

    def decision_function(self, X: Any) -> FloatArray:
        """Logits: (n,) for two classes (positive means classes_[1]), else (n, n_classes)."""
        outputs = self._outputs(X)
        logits: FloatArray = outputs[:, 0] if outputs.shape[1] == 1 else outputs
        return logits

    def predict_proba(self, X: Any) -> FloatArray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self.result_.predict_proba(X)

    def predict(self, X: Any) -> Any:
        outputs = self._outputs(X)
        index = (outputs[:, 0] > 0).astype(int) if outputs.shape[1] == 1 else outputs.argmax(1)
        return self.classes_[index]
