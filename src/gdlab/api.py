"""`gdlab.fit`: from arrays and option names to a trained model, in the data's own units."""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from gdlab.analysis.curvature import ILL_CONDITIONED, Curvature, hessian_curvature
from gdlab.analysis.divergence import explain_divergence
from gdlab.config import AUTO_EPOCHS, FitOptions, make_options
from gdlab.data.arrays import (
    CHUNK_ROWS,
    FloatArray,
    IntArray,
    RowSubset,
    as_matrix,
    as_vector,
    class_labels,
    fingerprint,
)
from gdlab.data.scaling import (
    Scaler,
    constant_columns,
    expand_powers,
    original_units,
    power_names,
)
from gdlab.errors import GdlabError, GdlabWarning, listed
from gdlab.history import History
from gdlab.interrupts import Interrupts
from gdlab.losses import make_loss, wants_class_indices
from gdlab.models import ModelSpec, build_model
from gdlab.optim.registry import optimizer_for
from gdlab.optim.schedules import make_schedule
from gdlab.result import FitResult
from gdlab.train import closed_form
from gdlab.train.analytic import LOSSES as ANALYTIC_LOSSES
from gdlab.train.analytic import AnalyticGradient
from gdlab.train.exact import ExactGradient, LeastSquaresStatistics
from gdlab.train.loop import LoopState, LossFunction, Outcome, Split, Stopping, train
from gdlab.train.rules import (
    DETERMINED,
    EPSILON,
    Tolerances,
    Verdict,
    epochs_for_quadratic,
    quadratic_limit,
    stall_reason,
)

MAX_RECORDED_PARAMETERS = 20
MAX_AUTO_EPOCHS = 10_000_000
EXACT_MAX_WIDTH = 2000  # parameters up to which least squares builds and solves XᵀX
CLOSED_FORM = "closed-form"
CURVATURE_ROWS = 1 << 17
logger = logging.getLogger("gdlab")


def fit(
    X: Any,
    y: Any,
    *,
    model: str | nn.Module = "linear",
    loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    feature_names: list[str] | None = None,
    on_epoch: Callable[[History], None] | None = None,
    resume: FitResult | None = None,
    classes: list[int] | None = None,
    stop: Callable[[], bool] | None = None,
    checkpoint: Callable[[FitResult], object] | None = None,
    checkpoint_every: int = 0,
    **options: Any,
) -> FitResult:
    """Fit a model by gradient descent; options are those of `gdlab fit` (see `gdlab.FitOptions`).

    `model` is a name (linear, logistic, softmax, poly:K, mlp:H1,H2) or any `torch.nn.Module`
    taking (n, d) inputs; with a module, `loss` may be any callable (outputs, targets) -> loss.

    `resume` continues an earlier result (its model, optimizer, RNG and loop state, scalers and
    classes) up to `epochs`; on the same data this equals one uninterrupted run bit for bit.
    `classes` lists every class label when y may lack some (training on batches of rows).
    `stop` is polled after every step; by default Ctrl-C and SIGTERM stop the run cleanly with
    status "interrupted". `checkpoint` receives a resumable result every `checkpoint_every`
    epochs.

    Example:
        >>> result = fit([[1.0], [2.0], [3.0], [4.0]], [2.0, 4.0, 6.0, 8.0], lr=0.1, epochs=500)
        >>> round(float(result.coef_[0, 0]), 3)
        2.0
    """
    custom = isinstance(model, nn.Module)
    custom_loss = None if loss is None or isinstance(loss, str) else loss
    opts = make_options(
        model="linear" if custom else model, loss=loss if isinstance(loss, str) else None, **options
    )
    matrix, names = as_matrix(X)
    names = list(feature_names) if feature_names is not None else names
    target = as_vector(y, len(matrix))
    if resume is not None and resume.custom_model != custom:
        raise GdlabError("resume: give the same kind of model (named or nn.Module) as before.")
    trainer = Trainer(
        opts,
        matrix,
        target,
        names,
        custom_model=model if isinstance(model, nn.Module) else None,
        previous=resume,
        classes=classes,
    )
    if stop is not None:
        return trainer.run(custom_loss, on_epoch, stop, checkpoint, checkpoint_every)
    with Interrupts() as interrupts:
        return trainer.run(
            custom_loss, on_epoch, interrupts.requested, checkpoint, checkpoint_every
        )


@torch.no_grad()
def _separates(net: nn.Module, split: Split) -> bool:
    """Whether a classifier puts every training row strictly on its own side: a positive
    margin for one logit (labels 0/1), the true class's logit above all others for softmax."""
    for begin in range(0, len(split.X), CHUNK_ROWS):
        scores = net(split.X[begin : begin + CHUNK_ROWS])
        labels = split.y[begin : begin + CHUNK_ROWS]
        if scores.shape[1] == 1:
            margins = (2 * labels.reshape(-1) - 1) * scores[:, 0]
        else:
            true = scores.gather(1, labels.reshape(-1, 1).long())
            others = scores.scatter(1, labels.reshape(-1, 1).long(), -math.inf)
            margins = (true - others.max(dim=1, keepdim=True).values).reshape(-1)
        if not bool((margins > 0).all()):
            return False
    return True


def _on_gpu(opts: FitOptions) -> bool:
    return opts.device == "cuda" or (opts.device == "auto" and torch.cuda.is_available())


class Trainer:
    """Prepares data in training space, builds the model and optimizer, trains, reports."""

    def __init__(
        self,
        opts: FitOptions,
        X: FloatArray,
        y: FloatArray,
        names: list[str],
        custom_model: nn.Module | None,
        previous: FitResult | None = None,
        classes: list[int] | None = None,
        copies: int = 1,
    ) -> None:
        if opts.dtype == "auto":  # float64 where it is cheap: exact digits; float32 on a GPU
            opts = dataclasses.replace(opts, dtype="float32" if _on_gpu(opts) else "float64")
        self.opts, self.names, self.custom_model = opts, names, custom_model
        self.previous = previous
        self.spec = ModelSpec.parse(opts.model)
        self.warnings: list[str] = []
        self.undetermined = ""  # why no stop test can certify convergence, when the data say so
        self.separable: bool | None = None  # classifiers: proved separable (no minimum) or not
        self.classes: list[int] | None = None
        self.lr_choice = ""
        self.X = X
        self.y = self.y_given = y
        if opts.is_classifier and custom_model is None:
            codes, self.classes = class_labels(
                y, "target", previous.classes_ if previous is not None else classes
            )
            if opts.resolved_loss == "bce" and len(self.classes) != 2:
                raise GdlabError(
                    f"loss bce needs exactly two classes; the target has {len(self.classes)} "
                    f"({listed(self.classes)}). Use `model=softmax`."
                )
            self.y = codes.astype(np.float64)
        self._check_memory(X, copies)
        with np.errstate(over="ignore"):
            self.Z = expand_powers(X, self.spec.degree)
        if self.spec.degree > 1 and not np.isfinite(self.Z).all():
            column = power_names(names, self.spec.degree)[int(np.flatnonzero(
                ~np.isfinite(self.Z).all(axis=0))[0])]  # fmt: skip
            raise GdlabError(
                f"the feature {column} overflows float64 (values above 1e308); rescale the "
                f"feature or use a lower degree."
            )
        n = len(self.Z)
        n_val = round(n * opts.val_fraction)
        if opts.val_fraction > 0 and (n_val < 1 or n_val >= n):
            raise GdlabError(
                f"`val_fraction={opts.val_fraction:g}` of {n} rows leaves no training or no "
                f"validation rows; choose a fraction between {1 / n:.2g} and {1 - 1 / n:.2g}."
            )
        order = np.random.default_rng(opts.seed).permutation(n) if n_val else np.arange(n)
        self.val_rows, self.train_rows = order[:n_val], order[n_val:]
        n_train = len(self.train_rows)
        if opts.batch_size is not None and opts.batch_size > n_train:
            raise GdlabError(
                f"`batch_size={opts.batch_size}` is above the {n_train} training rows; use a "
                f"value from 1 to {n_train}, or full."
            )
        Z_train = RowSubset.of(self.Z, self.train_rows)  # read in blocks, never copied whole
        regression = not opts.is_classifier
        if previous is not None and previous.x_scaler and previous.y_scaler:
            self.x_scaler, self.y_scaler = previous.x_scaler, previous.y_scaler
        else:
            self.x_scaler = Scaler.fit(Z_train, center=opts.intercept, enabled=opts.standardize)
            self.y_scaler = Scaler.fit(
                self.y[self.train_rows, None],
                center=opts.intercept,
                enabled=opts.standardize and regression and custom_model is None,
                target=True,
            )
        self.separable = self._check_separable()
        same = constant_columns(Z_train)
        constant = [
            name
            for name, fixed in zip(power_names(names, self.spec.degree), same, strict=True)
            if fixed
        ]
        if constant:
            self._warn(
                f"feature {listed(constant)} is constant in the training rows; it cannot "
                f"explain the target and gets coefficient 0 (or shares the intercept)."
            )
        self.curvature: Curvature | None = None
        self.raw_condition: float | None = None
        self.statistics: LeastSquaresStatistics | None = None
        if self._least_squares_statistics_fit():
            # θ* and loss* only serve the exact path (full batch); the curvature needs G alone,
            # and a mini-batch run (which never uses G to train) takes it from evenly spaced
            # rows, at most CURVATURE_ROWS of them: λ to a few percent, in a fraction of a pass.
            rows = self.train_rows
            if opts.batch_size is not None and len(rows) > CURVATURE_ROWS:
                rows = rows[:: -(-len(rows) // CURVATURE_ROWS)]
            self.statistics = self.least_squares(rows, solve=opts.batch_size is None)
            gram, n = self.statistics.gram.numpy(), self.statistics.n
            self.curvature = hessian_curvature(2.0 * gram / n)
            raw = self._to_raw_units(opts.intercept)
            with np.errstate(over="ignore", invalid="ignore"):
                self.raw_condition = hessian_curvature(
                    2.0 * raw.T @ gram @ raw / n
                ).condition_number
            if self.curvature.condition_number > ILL_CONDITIONED:
                self._warn(
                    f"the least-squares problem is ill-conditioned (condition number "
                    f"{self.curvature.condition_number:.3g} of the loss Hessian"
                    f"{' after standardization' if opts.standardize else ''}): gradient descent "
                    f"needs about that many epochs per digit and the coefficients are poorly "
                    f"determined. Use fewer or less correlated features, or a lower degree."
                )

    def _least_squares_statistics_fit(self) -> bool:
        """Whether XᵀX (d² numbers, O(d³) to solve) serves this run: least squares on a model
        linear in its parameters with at most EXACT_MAX_WIDTH of them. Wider problems iterate
        with autograd and take their curvature from Hessian-vector products instead."""
        opts = self.opts
        if self.custom_model is not None or not self.spec.is_linear_in_parameters:
            return False
        if opts.resolved_loss != "mse":
            return False
        width = self.X.shape[1] * self.spec.degree + opts.intercept
        if width > EXACT_MAX_WIDTH:
            self._warn(
                f"{width} parameters: the least-squares statistics XᵀX ({width}² numbers, "
                f"O(d³) to solve) are skipped above {EXACT_MAX_WIDTH}; training iterates "
                f"with autograd and the curvature comes from Hessian-vector products."
            )
            return False
        return True

    def _check_memory(self, X: FloatArray, copies: int) -> None:
        """Refuse, before allocating, a model or a sweep that cannot fit the memory budget."""
        from gdlab.memory import check_fits, estimate_fit

        opts = self.opts
        outputs = len(self.classes) if self.classes and opts.resolved_loss == "cross-entropy" else 1
        estimate = estimate_fit(
            self.spec,
            rows=len(X),
            features=X.shape[1],
            outputs=outputs,
            dtype_bytes=4 if opts.dtype == "float32" else 8,
            batch_size=opts.batch_size,
            least_squares=self.spec.is_linear_in_parameters
            and opts.resolved_loss == "mse"
            and X.shape[1] * self.spec.degree + opts.intercept <= EXACT_MAX_WIDTH,
            copies=copies,
        )
        what = f"model {opts.model}" + (f" with {copies} rates" if copies > 1 else "")
        check_fits(estimate, opts.memory_budget, what)

    def _check_separable(self) -> bool | None:
        """Linear classifiers without a penalty: are the training rows linearly separable?
        Then no minimum exists, and the user hears it before the run (see analysis/separation)."""
        opts, previous = self.opts, self.previous
        if (
            not opts.is_classifier
            or self.custom_model is not None
            or not self.spec.is_linear_in_parameters
            or opts.weight_decay > 0
            or opts.l1 > 0
            or self.classes is None
            or previous is not None
        ):
            return None
        from gdlab.analysis.separation import MAX_CELLS, linearly_separable

        rows, classes = self.train_rows, len(self.classes)
        if len(rows) * self.Z.shape[1] * max(classes - 1, 1) > MAX_CELLS:
            return None  # too large to ask: and the rows are not copied to find that out
        separable = linearly_separable(self.Z[rows], self.y[rows].astype(np.int64), classes)
        if separable:
            self._warn(
                "the classes are separable (a linear program finds weights that put every "
                "training row on its side): the loss falls forever and the weights grow, so "
                "no minimum exists; the run stops once the model separates the rows. For a "
                "finite optimum add weight_decay."
            )
        return separable

    @functools.cached_property
    def data_fingerprint(self) -> str:
        """The digest a saved run keeps to recognise its data; a whole pass, so only on saving."""
        return fingerprint(self.X, self.y_given)

    def least_squares(self, rows: IntArray, *, solve: bool = True) -> LeastSquaresStatistics:
        """XᵀX, Xᵀy and the optimum of those rows in training space, block by block."""
        features, target = RowSubset.of(self.Z, rows), RowSubset.of(self.y[:, None], rows)

        def blocks() -> Iterator[tuple[FloatArray, FloatArray]]:
            for block in features.blocks():
                part = self.y_scaler.transform(target.block(block))[:, 0]
                yield features.block(block), part

        scaler = None if self.x_scaler.is_identity else self.x_scaler
        return LeastSquaresStatistics.from_blocks(
            blocks, intercept=self.opts.intercept, scaler=scaler, solve=solve
        )

    def _to_raw_units(self, intercept: bool) -> FloatArray:
        """M with [x, 1] = [z, 1] M: the Gram matrix in the data's own units is Mᵀ G M."""
        scale = np.where(np.isfinite(self.x_scaler.scale), self.x_scaler.scale, 1.0)
        if not intercept:
            return np.diag(scale)
        width = len(scale)
        raw = np.zeros((width + 1, width + 1))
        raw[:width, :width] = np.diag(scale)
        raw[width, :width] = self.x_scaler.shift
        raw[width, width] = 1.0
        return raw

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        warnings.warn(message, GdlabWarning, stacklevel=4)

    def _device(self) -> torch.device:
        wanted = self.opts.device
        if wanted == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if wanted == "cuda" and not torch.cuda.is_available():
            raise GdlabError("`device=cuda`, but no CUDA device is available; use cpu or auto.")
        return torch.device(wanted)

    def _tensors(
        self, rows: np.ndarray[Any, Any], loss: Callable[..., torch.Tensor], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = getattr(torch, self.opts.dtype)
        X = self._features(rows, dtype).to(device)
        target = self.y_scaler.transform(self.y[rows, None])
        if wants_class_indices(loss):
            return X, torch.as_tensor(target[:, 0], dtype=torch.long, device=device)
        return X, torch.as_tensor(target, dtype=dtype, device=device)

    def _features(self, rows: IntArray, dtype: torch.dtype) -> torch.Tensor:
        """The training features of `rows`, written block by block into one tensor of `dtype`
        (no full-size float64 temporaries: on large data those cost more than the training)."""
        features = torch.empty(len(rows), self.Z.shape[1], dtype=dtype)
        out, source = features.numpy(), RowSubset.of(self.Z, rows)
        buffer = np.empty((min(len(rows), CHUNK_ROWS), self.Z.shape[1]))
        for block in source.blocks():
            work = buffer[: block.stop - block.start]
            self.x_scaler.transform_into(source.block(block), out[block], work)
        return features

    def run(
        self,
        custom_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
        on_epoch: Callable[[History], None] | None,
        stop: Callable[[], bool],
        checkpoint: Callable[[FitResult], object] | None = None,
        checkpoint_every: int = 0,
    ) -> FitResult:
        if isinstance(self.opts.lr, str):
            self._choose_rate()
        if isinstance(self.opts.epochs, str):
            self.opts = dataclasses.replace(self.opts, epochs=self._epoch_budget())
        opts, device, previous = self.opts, self._device(), self.previous
        loss_fn = custom_loss if custom_loss is not None else make_loss(opts.resolved_loss)
        if previous is not None and previous.optimizer and previous.generator:
            net, optimizer, generator = previous.model, previous.optimizer, previous.generator
            net.to(device=device, dtype=getattr(torch, opts.dtype))
            optimizer.load_state_dict(optimizer.state_dict())  # moves its state to the device
            state, history = previous.loop_state or LoopState(), previous.history.copy()
        else:
            net = self._build_model(device)
            optimizer = optimizer_for(opts, net.parameters())
            generator = torch.Generator().manual_seed(opts.seed)
            state, history = LoopState(), History()
        scale = self.loss_scale()
        exact = self._exact_gradient(net)
        split = self._split(loss_fn, device, shapes_only=exact is not None)
        analytic = self._analytic_gradient(net, split)

        path = "exact" if exact else "analytic" if analytic else "autograd"

        def result(verdict: Verdict, state: LoopState, history: History, message: str) -> FitResult:
            coef, intercept = self._coefficients(net)
            return FitResult(
                model=net,
                history=history,
                status=verdict.status,
                verdict=verdict,
                options=opts,
                feature_names=self.names,
                coef_=coef,
                intercept_=intercept,
                classes_=self.classes,
                message=message,
                warnings=self.warnings,
                curvature=self.curvature,
                x_scaler=self.x_scaler,
                y_scaler=self.y_scaler,
                optimizer=optimizer,
                generator=generator,
                custom_model=self.custom_model is not None,
                loop_state=state,
                fingerprint=self.data_fingerprint if checkpoint is not None else None,
                lr_choice=self.lr_choice,
                path=path,
            )

        def save_point(state: LoopState, history: History) -> None:
            if checkpoint is not None:
                checkpoint(result(Verdict("running"), state, history, ""))

        outcome = self._closed_form(exact, state, history, scale, net) if exact else None
        if outcome is not None:
            path = CLOSED_FORM
            if on_epoch is not None:  # the progress bar and log lines see every recorded row
                outcome.history = outcome.history.replay(on_epoch)
        else:
            outcome = train(
                net,
                loss_fn,
                optimizer,
                make_schedule(opts.schedule, opts.rate, opts.budget),
                split,
                self.stopping(exact, net, functools.partial(_separates, net, split)),
                batch_size=opts.batch_size,
                generator=generator,
                l1=opts.l1,
                loss_scale=scale,
                record=self._recorder(net),
                on_epoch=on_epoch,
                state=state,
                history=history,
                stop=stop,
                checkpoint=save_point,
                checkpoint_every=checkpoint_every,
                exact=exact,
                analytic=analytic,
            )
        message = self.explain(outcome, scale)
        final_loss = self._final_loss(net, loss_fn, split, exact) * scale
        if outcome.status in ("max_epochs", "stalled", "separable"):
            self._warn(f"{outcome.status}: {message}")
        return dataclasses.replace(
            result(outcome.verdict, outcome.state, outcome.history, message), loss=final_loss
        )

    @torch.no_grad()
    def _final_loss(
        self, net: nn.Module, loss_fn: LossFunction, split: Split, exact: ExactGradient | None
    ) -> float:
        """The training loss of the model the run keeps (history rows hold each epoch's loss
        before its step): from XᵀX on the exact path, else one pass over the rows in blocks."""
        if exact is not None:
            return exact.train.loss(exact.theta())
        n, total = len(split.X), 0.0
        for begin in range(0, n, CHUNK_ROWS):
            X, y = split.X[begin : begin + CHUNK_ROWS], split.y[begin : begin + CHUNK_ROWS]
            total += float(loss_fn(net(X), y)) * len(X)
        return total / n if n else math.nan

    def tolerances(self) -> Tolerances:
        opts = self.opts
        return Tolerances(opts.gtol, opts.xtol, opts.tol, opts.patience, opts.dtype)

    def stopping(
        self,
        exact: ExactGradient | None,
        net: nn.Module | None = None,
        separation: Callable[[], bool] | None = None,
    ) -> Stopping:
        """The stop tests and what this run knows about itself (see `gdlab.train.rules`)."""
        opts = self.opts
        # AdamW's decay is not the gradient of any penalty, and L1 has no gradient at 0: no
        # first-order test can hold for them, so such runs stall or run out of epochs.
        first_order = opts.l1 == 0 and (opts.optimizer != "adamw" or opts.weight_decay == 0)
        stopping = Stopping(
            opts.budget,
            self.tolerances(),
            weight_decay=opts.weight_decay if opts.optimizer != "adamw" else 0.0,
            first_order=first_order,
            separated=separation
            if opts.is_classifier and opts.weight_decay == 0 and opts.l1 == 0
            else None,
        )
        curvature = self.curvature
        if curvature is None or opts.batch_size is not None or self.custom_model is not None:
            return stopping  # not full-batch least squares: the gradient test
        # gd below 2/λmax and heavy-ball or Nesterov momentum below their limits converge on a
        # quadratic from any start, so a slow or oscillating approach is not a stall there;
        # above them the mode along λmax grows, so the run can only diverge.
        steady = opts.schedule == "constant" and opts.l1 == 0
        limit = self._stable_limit() or 0.0
        stopping = dataclasses.replace(
            stopping,
            assured=steady and opts.rate < limit,
            unstable=steady and 0 < limit < opts.rate,
            rise_diverges=steady and opts.optimizer in ("gd", "sgd") and 0 < limit < opts.rate,
        )
        # The data determine θ* only to about κ·ε: no test may claim more digits than that.
        if curvature.condition_number * EPSILON["float64"] > DETERMINED:
            self.undetermined = (
                f" The least-squares optimum is determined only to about "
                f"{curvature.condition_number * EPSILON['float64']:.1g} relative (condition "
                f"number {curvature.condition_number:.3g} × float64's ε), fewer than "
                f"{-math.log10(DETERMINED):.0f} digits, so no test can certify convergence: use "
                f"fewer or less correlated features."
            )
            return dataclasses.replace(stopping, first_order=False)
        if exact is None and isinstance(net, nn.Linear) and net.out_features == 1:
            assert self.statistics is not None  # full-batch least squares: θ* was solved
            exact = ExactGradient(net, self.statistics, None)  # to measure ‖θ - θ*‖ only
        if exact is None or not first_order:
            return stopping
        optimum = exact.optimum(stopping.weight_decay)
        return dataclasses.replace(
            stopping,
            distance=functools.partial(exact.distance, optimum),
            optimum_norm=float(torch.linalg.vector_norm(optimum)),
            condition=curvature.condition_number,
        )

    def _epoch_budget(self) -> int:
        """epochs='auto': for full-batch least squares, twice what plain gd at this rate needs
        to reach xtol from λmin (the closed form costs nothing per epoch; capped at 10^7),
        else AUTO_EPOCHS."""
        curvature, opts = self.curvature, self.opts
        if curvature is None or opts.batch_size is not None or curvature.lambda_min <= 0:
            return AUTO_EPOCHS
        needed = epochs_for_quadratic(
            opts.rate, curvature.lambda_min, curvature.lambda_max, max(opts.xtol, 1e-16)
        )
        return int(min(max(AUTO_EPOCHS, 2 * needed), MAX_AUTO_EPOCHS))

    def _stable_limit(self) -> float | None:
        """The optimizer's largest stable rate on the (L2-penalized) least-squares Hessian:
        2/λmax for gd, its momentum forms for momentum and nesterov, none for the others."""
        if self.curvature is None:
            return None
        opts = self.opts
        lambda_max = self.curvature.lambda_max + opts.weight_decay
        return quadratic_limit(opts.optimizer, opts.momentum, lambda_max) or None

    def explain(self, outcome: Outcome, scale: float) -> str:
        """One paragraph on why the run ended as it did, with the numbers and what to change."""
        verdict, opts, state = outcome.verdict, self.opts, outcome.state
        if verdict.status == "diverged":
            start = state.start_loss
            return explain_divergence(
                epoch=outcome.diverged_epoch or state.epoch,
                loss=(outcome.diverged_loss if outcome.diverged_loss is not None else math.inf)
                * scale,
                start_loss=None if start is None else start * scale,
                lr=opts.rate,
                optimizer=opts.optimizer,
                momentum=opts.momentum,
                curvature=self.curvature,
                raw_condition=self.raw_condition,
                standardized=opts.standardize,
                test=verdict.test,
                limit=self._stable_limit(),
            )
        if verdict.status == "converged":
            return ""
        if verdict.status == "separable":
            return (
                f"the classes are separable: at epoch {state.epoch} the model puts every "
                f"training row on its side, so the loss falls forever and the weights grow "
                f"without a minimum. The model separates the training rows; for a finite "
                f"optimum add a penalty (weight_decay)."
            )
        if verdict.status == "early_stopped":
            return (
                f"Early stopping: the validation loss has not improved by tol={opts.tol:g} "
                f"for {opts.patience} epochs; the model of epoch {state.best_epoch} (its best) is "
                f"kept."
            )
        first_order_note = (
            ""
            if outcome.verdict.measures and outcome.verdict.measures[0].name != "loss improvement"
            else self.undetermined
            or " No first-order test applies with an L1 penalty or AdamW's weight decay."
        )
        if verdict.status == "stalled":
            _, advice = stall_reason(
                state.recent,
                epsilon=self.tolerances().epsilon,
                mini_batch=opts.batch_size is not None,
            )
            return f"{advice}.{first_order_note}"
        if verdict.status == "max_epochs":
            separable = (
                " The classes are separable, so no minimum exists." if self.separable else ""
            )
            return (
                f"stopped at the epoch limit ({opts.budget}) before a stop test held.{separable}"
                f"{first_order_note}{self._epochs_needed()}"
            )
        return ""

    def _epochs_needed(self) -> str:
        """For plain gd on least squares: how many epochs the rate needs (from λmin), and the
        rate that needs fewest."""
        curvature, opts = self.curvature, self.opts
        if curvature is None or opts.optimizer not in ("gd", "sgd") or curvature.lambda_min <= 0:
            return " Raise the epochs, or the rate."

        def needed(lr: float) -> float:  # from a relative distance of 1 down to xtol
            return epochs_for_quadratic(lr, curvature.lambda_min, curvature.lambda_max, opts.xtol)

        best = 2.0 / (curvature.lambda_max + curvature.lambda_min)
        return (
            f" At lr={opts.rate:.3g} reaching xtol needs about {needed(opts.rate):.3g} epochs "
            f"(λmin = {curvature.lambda_min:.3g}); lr={best:.3g} = 2/(λmax+λmin) needs about "
            f"{needed(best):.3g}."
        )

    def _split(self, loss: LossFunction, device: torch.device, *, shapes_only: bool) -> Split:
        """The training (and validation) tensors; with `shapes_only` (the exact path, which
        never reads rows again) tensors on the meta device that hold no data."""
        if shapes_only:
            width = self.Z.shape[1]

            def tensors(rows: IntArray) -> tuple[torch.Tensor, torch.Tensor]:
                n = len(rows)
                return torch.empty(n, width, device="meta"), torch.empty(n, 1, device="meta")

        else:

            def tensors(rows: IntArray) -> tuple[torch.Tensor, torch.Tensor]:
                return self._tensors(rows, loss, device)

        split = Split(*tensors(self.train_rows))
        if len(self.val_rows):
            split.X_val, split.y_val = tensors(self.val_rows)
        return split

    def fast_linear(self, net: nn.Module) -> nn.Linear | None:
        """`net` when a path without autograd may train it (gdlab's own one-output linear or
        logistic model, fast paths not switched off), else None."""
        one_output = isinstance(net, nn.Linear) and net.out_features == 1
        if self.opts.exact_path == "off" or self.custom_model is not None or not one_output:
            return None
        assert isinstance(net, nn.Linear)
        return net

    def _analytic_gradient(self, net: nn.Module, split: Split) -> AnalyticGradient | None:
        """Mini-batch gradients by formula: one-output linear or logistic models, MSE or BCE."""
        linear, batch, loss = self.fast_linear(net), self.opts.batch_size, self.opts.resolved_loss
        if linear is None or batch is None or batch >= len(split.X) or loss not in ANALYTIC_LOSSES:
            return None
        return AnalyticGradient(linear, split.X, split.y, loss, batch)

    def _exact_gradient(self, net: nn.Module) -> ExactGradient | None:
        """The sufficient-statistics path: full-batch MSE on a model linear in its parameters."""
        linear = self.fast_linear(net)
        if linear is None or self.statistics is None or self.opts.batch_size is not None:
            return None
        validation = self.least_squares(self.val_rows) if len(self.val_rows) else None
        return ExactGradient(linear, self.statistics, validation)

    def _closed_form(
        self, exact: ExactGradient, state: LoopState, history: History, scale: float, net: nn.Module
    ) -> Outcome | None:
        """Plain gd at a constant, stable rate on a fresh least-squares run: every epoch at once."""
        opts = self.opts
        plain = (
            opts.exact_path == "auto"
            and opts.optimizer in ("gd", "sgd")
            and opts.schedule == "constant"
            and opts.weight_decay == 0
            and opts.l1 == 0
            and state.epoch == 0
            and state.position == 0
            and len(history) == 0
        )
        if not plain:
            return None
        theta0 = exact.theta().numpy()
        modes = closed_form.Modes.of(exact.train, theta0, opts.rate)
        if not modes.stable:
            return None  # the loop meets the divergence, stops it and explains it
        record = self._recorder(net)
        precision = np.float32 if opts.dtype == "float32" else np.float64
        rows = (
            None
            if record is None
            else closed_form.affine_columns(exact.assign, record, theta0, precision)
        )
        run = closed_form.run(
            exact.train,
            exact.validation,
            theta0,
            lr=opts.rate,
            epochs=opts.budget,
            tolerances=self.tolerances(),
            certify=self.stopping(exact).distance is not None,
            loss_scale=scale,
            record=rows,
            layers=exact.layers(),
        )
        exact.assign(run.last_theta)
        last = [p.detach().clone() for p in net.parameters()]
        if record is not None:  # the last row as the model holds it, digit for digit
            for name, value in record().items():
                run.history.params[name][-1] = value
        exact.assign(run.theta)
        state = LoopState(
            epoch=run.epochs_run,
            start_loss=run.history.train_loss[0] / scale if scale else None,
            best=run.rule.best if exact.validation is not None else run.recent[-1],
            best_epoch=run.rule.best_epoch if exact.validation is not None else run.epochs_run,
            lowest=run.recent[-1],
            waited=run.rule.waited,
            start_grad=run.history.grad_norm[0],
            recent=run.recent,
        )
        if exact.validation is not None:
            state.best_params = [p.detach().clone() for p in net.parameters()]
            state.current = last
        return Outcome(run.verdict, run.history, state)

    def _choose_rate(self) -> None:
        """lr='auto': the curvature's rate for least squares, else the range test's (capped)."""
        if self.custom_model is not None:
            raise GdlabError("lr 'auto' needs a named model; give a number for a custom module.")
        from gdlab.rates import advise_trainer

        began = time.perf_counter()
        advice = advise_trainer(self, unscaled=False)
        self.opts = dataclasses.replace(self.opts, lr=advice.recommended_lr)
        self.lr_choice = (
            f"lr auto: {advice.recommended_lr:.3g}, {advice.reason} [curvature: {advice.method}; "
            f"the choice took {time.perf_counter() - began:.2g} s]"
        )
        logger.info(self.lr_choice)

    def initial_parameters(self) -> dict[str, float]:
        """The recorded parameters (as in history.params) at the initial point."""
        net = self._build_model(torch.device("cpu"))
        record = self._recorder(net)
        return record() if record is not None else {}

    def initial_problem(
        self, seed: int | None = None
    ) -> tuple[nn.Module, Callable[[torch.Tensor, torch.Tensor], torch.Tensor], Split]:
        """The model at its initial point (from `seed`, default the options'), loss and data."""
        device = self._device()
        loss_fn = make_loss(self.opts.resolved_loss)
        net = self._build_model(device, self.opts.seed if seed is None else seed)
        return net, loss_fn, Split(*self._tensors(self.train_rows, loss_fn, device))

    def _build_model(self, device: torch.device, seed: int | None = None) -> nn.Module:
        opts = self.opts
        outputs = len(self.classes) if opts.resolved_loss == "cross-entropy" and self.classes else 1
        torch.manual_seed(opts.seed if seed is None else seed)  # the modules' initial draw
        net = self.custom_model or build_model(
            self.spec,
            self.Z.shape[1],
            outputs,
            intercept=opts.intercept,
            activation=opts.activation,
        )
        return net.to(device=device, dtype=getattr(torch, opts.dtype))

    def loss_scale(self) -> float:
        """Losses are reported in the target's units: MSE scales by sy², MAE by sy."""
        sy = float(self.y_scaler.scale[0])
        return {"mse": sy * sy, "mae": sy}.get(self.opts.resolved_loss, 1.0)  # inf, not an error

    def _coefficients(self, net: nn.Module) -> tuple[FloatArray | None, FloatArray | None]:
        if self.custom_model is not None or not isinstance(net, nn.Linear):
            return None, None
        weights = net.weight.detach().cpu().double().numpy()
        bias = (
            net.bias.detach().cpu().double().numpy()
            if net.bias is not None
            else np.zeros(weights.shape[0])
        )
        return original_units(weights, bias, self.x_scaler, self.y_scaler)

    def _recorder(self, net: nn.Module) -> Callable[[], dict[str, float]] | None:
        """Per-epoch parameter values for small models: coefficients in original units."""
        if sum(p.numel() for p in net.parameters()) > MAX_RECORDED_PARAMETERS:
            return None
        if isinstance(net, nn.Linear) and self.custom_model is None:
            names = power_names(self.names, self.spec.degree)

            def coefficients() -> dict[str, float]:
                coef, intercept = self._coefficients(net)
                assert coef is not None and intercept is not None
                row: dict[str, float] = {}
                for k in range(coef.shape[0]):
                    prefix = (
                        "" if coef.shape[0] == 1 else f"{self.classes[k] if self.classes else k}:"
                    )
                    row |= {
                        f"coef[{prefix}{name}]": float(v)
                        for name, v in zip(names, coef[k], strict=True)
                    }
                    if self.opts.intercept:
                        row[f"intercept{'' if not prefix else '[' + prefix[:-1] + ']'}"] = float(
                            intercept[k]
                        )
                return row

            return coefficients

        named = list(net.named_parameters())
        labels = [f"{name}[{i}]" for name, p in named for i in range(p.numel())]
        tensors = [p for _, p in named]

        def raw() -> dict[str, float]:  # one concatenation and one copy to the host per epoch
            values = torch.cat([p.detach().reshape(-1) for p in tensors]).tolist()
            return dict(zip(labels, values, strict=True))

        return raw
