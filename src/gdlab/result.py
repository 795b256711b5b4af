"""What `gdlab.fit` returns: the trained model, its coefficients in original units, predictions."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from gdlab.analysis.curvature import Curvature
from gdlab.config import FitOptions
from gdlab.data.arrays import FloatArray, as_matrix
from gdlab.data.scaling import Scaler, expand_powers, power_names
from gdlab.errors import GdlabError
from gdlab.history import History
from gdlab.models import ModelSpec
from gdlab.train.rules import Verdict
from gdlab.train.state import LoopState


@dataclass
class FitResult:
    """A trained model with what it learned (`coef_`, `intercept_`) and how it got there."""

    model: nn.Module
    history: History
    status: str
    options: FitOptions
    feature_names: list[str]
    coef_: FloatArray | None
    intercept_: FloatArray | None
    classes_: list[int] | None
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    curvature: Curvature | None = None
    x_scaler: Scaler | None = None
    y_scaler: Scaler | None = None
    optimizer: torch.optim.Optimizer | None = None
    generator: torch.Generator | None = None
    custom_model: bool = False
    loop_state: LoopState | None = None
    fingerprint: str | None = None
    lr_choice: str = ""  # with lr="auto": the rate chosen and why
    sharpness: str = ""  # where λmax was tracked: how often, at what cost
    path: str = "autograd"  # or "exact": gradients from least-squares sufficient statistics
    verdict: Verdict | None = None  # the stop test that ended the run, with its measures
    loss: float = math.nan  # the kept model's training loss, in the target's units
    reading: str = "in memory"  # or "streamed from FILE": how the data were read
    ranks: dict[str, Any] | None = None  # a data-parallel run's ranks and costs (train/parallel)

    def _repr_html_(self) -> str:
        """Jupyter's view: status, loss and coefficients beside the loss curve."""
        from gdlab.notebook import fit_html

        return fit_html(self)

    def __getstate__(self) -> dict[str, Any]:
        """Picklable: a torch.Generator is stored as its state tensor."""
        state = dict(self.__dict__)
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("generator") is not None:
            generator = torch.Generator()
            generator.set_state(state["generator"])
            state["generator"] = generator
        self.__dict__.update(state)

    @property
    def n_iter_(self) -> int:
        return self.history.last_epoch

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec.parse(self.options.model)

    @property
    def expanded_names(self) -> list[str]:
        return power_names(self.feature_names, self.spec.degree)

    def decision_function(self, X: Any) -> FloatArray:
        """Raw model outputs (n, outputs) in training space: logits for classifiers."""
        matrix = self._matrix(X)
        if self.x_scaler is not None:
            matrix = self.x_scaler.transform(expand_powers(matrix, self.spec.degree))
        parameter = next(self.model.parameters())
        inputs = torch.as_tensor(matrix, dtype=parameter.dtype, device=parameter.device)
        with torch.no_grad():
            outputs = self.model(inputs).detach().cpu().double().numpy()
        return np.asarray(outputs, dtype=np.float64).reshape(len(matrix), -1)

    def predict(self, X: Any) -> FloatArray:
        """Predicted values in the target's units, or predicted class labels."""
        outputs = self.decision_function(X)
        if self.classes_ is not None:
            index = (outputs[:, 0] > 0).astype(int) if outputs.shape[1] == 1 else outputs.argmax(1)
            labels: FloatArray = np.asarray(self.classes_, dtype=np.float64)[index]
            return labels
        if self.y_scaler is not None:
            outputs = outputs * self.y_scaler.scale + self.y_scaler.shift
        return np.asarray(outputs[:, 0], dtype=np.float64)

    def predict_proba(self, X: Any) -> FloatArray:
        """Class probabilities (n, classes), columns in the order of `classes_`."""
        if self.classes_ is None:
            raise GdlabError("predict_proba needs a classifier (loss bce or cross-entropy).")
        outputs = torch.from_numpy(self.decision_function(X))
        if outputs.shape[1] == 1:
            positive = torch.sigmoid(outputs[:, 0])
            return torch.stack([1 - positive, positive], dim=1).numpy()
        return torch.softmax(outputs, dim=1).numpy()

    def _matrix(self, X: Any) -> FloatArray:
        if hasattr(X, "columns"):
            missing = [name for name in self.feature_names if name not in X.columns]
            if missing:
                raise GdlabError(
                    f"the model was trained on features {', '.join(self.feature_names)}; the data "
                    f"lacks {', '.join(missing)}. Give data with the same feature columns."
                )
            X = X[self.feature_names]
        matrix, _ = as_matrix(X)
        if matrix.shape[1] != len(self.feature_names):
            raise GdlabError(
                f"the model was trained on {len(self.feature_names)} features "
                f"({', '.join(self.feature_names)}); got {matrix.shape[1]} columns."
            )
        return matrix
