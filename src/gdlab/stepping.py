"""A run driven a few epochs at a time: prepared once, advanced, rewound.

`SteppedRun` is what a live page (or a notebook) drives: the data are prepared once (split,
scalers, XᵀX, curvature, the rate when it is 'auto'), then each `advance(epochs)` continues
the same model, optimizer, random stream and loop state, so that any sequence of advances
equals one uninterrupted run of their total length, bit for bit; `rewind()` returns to the
initial point (the seed's parameters). Every advance goes through the same loop, gradient
sources and stop tests as `gdlab.fit`; its result says how the last advance ended.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

from gdlab.config import make_options
from gdlab.data.arrays import as_matrix, as_vector
from gdlab.errors import GdlabError, GdlabWarning
from gdlab.result import FitResult
from gdlab.training import Training


class SteppedRun:
    def __init__(
        self, X: Any, y: Any, *, feature_names: list[str] | None = None, **options: Any
    ) -> None:
        # The closed form computes a whole run at once; stepping iterates the same updates.
        options.setdefault("fast_paths", "iterate")
        opts = make_options(**options)
        matrix, names = as_matrix(X)
        names = list(feature_names) if feature_names is not None else names
        self.training = Training(opts, matrix, as_vector(y, len(matrix)), names, None)
        self.prepared = list(self.training.warnings)  # the data's warnings, said once
        self.result: FitResult | None = None

    @property
    def epochs_done(self) -> int:
        return 0 if self.result is None else len(self.result.history)

    def advance(self, epochs: int) -> FitResult:
        """Train `epochs` more epochs (fewer if a stop test holds first) and return the run."""
        if not isinstance(epochs, int) or epochs < 1:
            raise GdlabError(f"`epochs` to advance must be an integer >= 1. Got {epochs!r}.")
        training = self.training
        training.previous = self.result
        training.opts = dataclasses.replace(training.opts, epochs=self.epochs_done + epochs)
        training.warnings = list(self.prepared)
        with warnings.catch_warnings():  # the end of each advance is its status, not a warning
            warnings.simplefilter("ignore", GdlabWarning)
            self.result = training.run(None, None, lambda: False)
        return self.result

    def rewind(self) -> None:
        """Back to the initial point: the next advance starts from the seed's parameters."""
        self.result = None
