"""A run driven a few epochs at a time: prepared once, advanced, rewound.

`SteppedRun` is what a live page (or a notebook) drives: the data are prepared once (split,
scalers, XᵀX, curvature, the rate when it is 'auto'), then each `advance(epochs)` continues
the same model, optimizer, random stream and loop state, so that any sequence of advances
equals one uninterrupted run of their total length, bit for bit; `take(updates)` continues by
optimisation steps instead (mini-batches), stopping inside an epoch where it must, as a run
stopped by Ctrl-C does, and the loop resumes there bit for bit (an `advance` after it first
ends that epoch); `rewind()` returns to the initial point (the seed's parameters). Every
advance goes through the same loop, gradient sources and stop tests as `gdlab.fit`; its
result says how the last advance ended.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
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
        self.steps: list[dict[str, float]] = []  # the parameters after each step of `take`

    @property
    def epochs_done(self) -> int:
        return 0 if self.result is None else len(self.result.history)

    def advance(self, epochs: int) -> FitResult:
        """Train `epochs` more epochs (fewer if a stop test holds first) and return the run."""
        if not isinstance(epochs, int) or epochs < 1:
            raise GdlabError(f"`epochs` to advance must be an integer >= 1. Got {epochs!r}.")
        self.steps = []
        return self._continue(self.epochs_done + epochs, lambda: False)

    def take(self, updates: int) -> FitResult:
        """Take `updates` more optimisation steps (fewer if a stop test holds first); the
        run's status is 'interrupted' when the count stopped it. `steps` holds the recorded
        parameters after each of them."""
        if not isinstance(updates, int) or isinstance(updates, bool) or updates < 1:
            raise GdlabError(f"`updates` to take must be an integer >= 1. Got {updates!r}.")
        taken = 0

        def stop() -> bool:  # polled once after every step (train/loop.py)
            nonlocal taken
            taken += 1
            return taken >= updates

        self.steps = []
        # every epoch holds at least one update: this budget never ends the run first
        return self._continue(self.epochs_done + updates + 1, stop, self.steps.append)

    def _continue(
        self,
        budget: int,
        stop: Callable[[], bool],
        on_step: Callable[[dict[str, float]], None] | None = None,
    ) -> FitResult:
        """The run continued up to epoch `budget`, or until `stop` says so."""
        training = self.training
        training.previous = self.result
        training.opts = dataclasses.replace(training.opts, epochs=budget)
        training.warnings = list(self.prepared)
        with warnings.catch_warnings():  # the end of each advance is its status, not a warning
            warnings.simplefilter("ignore", GdlabWarning)
            self.result = training.run(None, None, stop, on_step=on_step)
        return self.result

    def rewind(self) -> None:
        """Back to the initial point: the next advance starts from the seed's parameters."""
        self.result = None
