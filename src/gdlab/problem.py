"""The prepared problem: the user's rows made ready to train on, without training anything.

One object holds the rows, the validation split, class codes, the feature expansion (poly:K),
the scalers, the least-squares statistics XᵀX and the curvature, and hands out tensors for a
set of rows on a device. `gdlab.training` trains on it; `gdlab lr`, the sweep, the surface and
the figures of a run folder use it as it is.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from gdlab.analysis.curvature import ILL_CONDITIONED, Curvature, hessian_curvature
from gdlab.analysis.separation import separable_training_rows
from gdlab.config import FitOptions
from gdlab.data.arrays import (
    CHUNK_ROWS,
    FloatArray,
    IntArray,
    as_matrix,
    as_vector,
    class_labels,
    fingerprint,
)
from gdlab.data.passes import STREAMED, Sums, first_pass, standardized_gram
from gdlab.data.rows import ArrayRows, RowSource, validation_split
from gdlab.data.scaling import Scaler, constant_columns, expand_checked, power_names
from gdlab.data.stream import SHUFFLE_ROWS, Block, TableFile, held_out
from gdlab.errors import GdlabError, GdlabWarning, caller_level, listed
from gdlab.losses import make_loss, wants_class_indices
from gdlab.memory import check_problem_fits
from gdlab.models import ModelSpec, build_model
from gdlab.recording import recorder
from gdlab.result import FitResult
from gdlab.train import parallel
from gdlab.train.exact import LeastSquaresStatistics, residual_squares
from gdlab.train.state import LossFunction, Split
from gdlab.train.streamed import StreamedRows, TensorStream

EXACT_MAX_WIDTH = 2000  # parameters up to which least squares builds and solves XᵀX
CURVATURE_ROWS = 1 << 17


def _on_gpu(opts: FitOptions) -> bool:
    return opts.device == "cuda" or (opts.device == "auto" and torch.cuda.is_available())


def given_data(
    X: Any, y: Any, feature_names: list[str] | None
) -> tuple[FloatArray | TableFile, FloatArray | None, list[str]]:
    """(X, y, names) for a Problem: arrays checked (`data.arrays`), or a file to stream."""
    if isinstance(X, TableFile):
        return X, None, X.features
    matrix, names = as_matrix(X)
    names = list(feature_names) if feature_names is not None else names
    return matrix, as_vector(y, len(matrix)), names


class Problem:
    """A data set prepared for one set of options (see the module docstring)."""

    def __init__(
        self,
        opts: FitOptions,
        X: FloatArray | TableFile,
        y: FloatArray | None,
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
        self.curvature: Curvature | None = None
        self.raw_condition: float | None = None
        self.raw_curvature: Curvature | None = None  # of the loss in the data's own units
        self.statistics: LeastSquaresStatistics | None = None
        self.table: TableFile | None = None
        if isinstance(X, TableFile):
            self._prepare_stream(X, classes, copies)
            return
        assert y is not None
        self.X = X
        self.y = self.y_given = y
        if opts.is_classifier and custom_model is None:
            self.y = self._class_codes(y, previous.classes_ if previous is not None else classes)
        check_problem_fits(self, X.shape, copies)
        # Every later read of the rows goes through the source (see data/rows.py).
        self.source: RowSource = ArrayRows(expand_checked(X, names, self.spec.degree), self.y)
        self.width = self.source.width
        self.val_rows, self.train_rows = validation_split(
            len(self.source), opts.val_fraction, opts.seed
        )
        n_train = len(self.train_rows)
        if opts.batch_size is not None and opts.batch_size > n_train:
            raise GdlabError(
                f"`batch_size={opts.batch_size}` is above the {n_train} training rows; use a "
                f"value from 1 to {n_train}, or full."
            )
        self._fit_scalers()
        self.separable = separable_training_rows(self)
        if self.separable:
            self._warn(
                "the classes are separable (a linear program finds weights that put every "
                "training row on its side): the loss falls forever and the weights grow, so "
                "no minimum exists; the run stops once the model separates the rows. For a "
                "finite optimum add weight_decay."
            )
        self._warn_constant(constant_columns(self.source.features(self.train_rows)))
        if self._least_squares_statistics_fit(X.shape[1]):
            self._least_squares_curvature()

    def _prepare_stream(self, table: TableFile, classes: list[int] | None, copies: int) -> None:
        """The same preparation from one pass over a file (`gdlab.data.passes`): nothing
        of the file is kept but its statistics; training reads it again block by block."""
        opts, degree, self.table = self.opts, self.spec.degree, table
        self.names = table.features

        def prepare(block: Block) -> Block:
            if degree == 1:
                return block
            return Block(block.first, expand_checked(block.X, self.names, degree), block.y)

        def held(block: Block) -> np.ndarray[Any, Any]:
            return held_out(block.first, len(block), opts.val_fraction, opts.seed)

        self.prepare, self.held = prepare, held
        gram = self._least_squares_statistics_fit(len(self.names))
        classify = opts.is_classifier and self.custom_model is None
        world = parallel.current()
        if world.parallel:
            self._share_out(table, world)
        found = first_pass(
            table, prepare, held_out=held, gram=gram, classifier=classify, world=world,
            names=self.model_names,
        )  # fmt: skip
        self.first_pass = found
        saved = self.previous.fingerprint if self.previous is not None else None
        if saved is not None and saved.startswith(STREAMED) and saved != found.fingerprint:
            raise GdlabError(
                f"{table.source} is not the data the run was trained on (its rows or values "
                f"differ); resume with the original data, or start a new run."
            )
        if found.train.n == 0 or (opts.val_fraction > 0 and found.validation.n == 0):
            raise GdlabError(
                f"`val_fraction={opts.val_fraction:g}` of {found.rows} rows leaves no training "
                f"or no validation rows; choose a fraction between 0 and 1 that leaves both."
            )
        self.train_rows = StreamedRows(found.train.n)  # type: ignore[assignment]
        self.val_rows = StreamedRows(found.validation.n)  # type: ignore[assignment]
        if found.labels is not None:
            labels = self.previous.classes_ if self.previous is not None else classes
            self._class_codes(np.asarray(found.labels, dtype=np.float64), labels)
        if opts.batch_size is not None and opts.batch_size > found.train.n:
            raise GdlabError(
                f"`batch_size={opts.batch_size}` is above the {found.train.n} training rows; "
                f"use a value from 1 to {found.train.n}, or full."
            )
        check_problem_fits(self, (min(found.train.n, 2 * SHUFFLE_ROWS), len(self.names)), copies)
        previous = self.previous
        if previous is not None and previous.x_scaler and previous.y_scaler:
            self.x_scaler, self.y_scaler = previous.x_scaler, previous.y_scaler
        else:
            self.x_scaler = found.scaler(center=opts.intercept, enabled=opts.standardize,
                                         target=False)  # fmt: skip
            self.y_scaler = found.scaler(
                center=opts.intercept,
                enabled=opts.standardize and not opts.is_classifier and self.custom_model is None,
                target=True,
            )
        self._warn_constant(found.constant())
        self.width = len(found.centre) - 1
        if gram:
            self.statistics = self._streamed_statistics(found.train, solve=opts.batch_size is None)
            self._least_squares_curvature()

    @staticmethod
    def _share_out(table: TableFile, world: parallel.World) -> None:
        """Give this rank its row groups of a Parquet file (a CSV file's rows are found
        only by reading it in order, so it cannot be shared out)."""
        if not table.parquet:
            raise GdlabError(
                f"{table.source}: a streamed CSV file cannot be shared out among "
                f"{world.size} ranks (its rows are found only by reading it in order); "
                f"convert it to Parquet, or let it load in memory (--no-stream)."
            )
        groups = len(table.row_groups)
        if groups < world.size:
            raise GdlabError(
                f"{table.source} has {groups} row group(s) for {world.size} ranks; write it "
                f"with at least {world.size} (pyarrow.parquet.write_table(..., "
                f"row_group_size=ROWS)), or start fewer ranks."
            )
        table.share = (world.rank, world.size)

    @property
    def model_names(self) -> list[str]:
        """The model's features: the columns, and with poly:K their powers."""
        return power_names(self.names, self.spec.degree)

    @property
    def reading(self) -> str:
        """How the data were read, in the words of the summary."""
        return "in memory" if self.table is None else f"streamed from {self.table.source}"

    def _part(self, validation: bool) -> Callable[[Block], Block]:
        """A streamed file's block -> its training (or validation) rows, as the model's
        features (the hashed split, then poly:K)."""
        held, prepare = self.held, self.prepare

        def keep(raw: Block) -> Block:
            mask = held(raw)
            return prepare(raw.where(mask if validation else ~mask))

        return keep

    def _streamed_statistics(self, sums: Sums, *, solve: bool) -> LeastSquaresStatistics:
        """Least-squares statistics of the training or validation rows from the first pass."""
        assert self.table is not None and self.first_pass is not None
        table, keep = self.table, self._part(sums is self.first_pass.validation)
        full = standardized_gram(self.first_pass, sums, self.x_scaler, self.y_scaler)

        def blocks() -> Iterator[tuple[FloatArray, FloatArray]]:
            for block in map(keep, table.blocks()):
                yield block.X, self.y_scaler.transform(block.y[:, None])[:, 0]

        scaler = None if self.x_scaler.is_identity else self.x_scaler
        return LeastSquaresStatistics.from_full(
            full, sums.n, intercept=self.opts.intercept, solve=solve,
            residuals=lambda theta: residual_squares(blocks, theta, self.opts.intercept, scaler),
            names=self.model_names,
        )  # fmt: skip

    def _class_codes(self, y: FloatArray, known: list[int] | None) -> FloatArray:
        """Class labels as codes 0..K-1 (`self.classes` keeps the labels)."""
        codes, self.classes = class_labels(y, "target", known)
        if self.opts.resolved_loss == "bce" and len(self.classes) != 2:
            raise GdlabError(
                f"loss bce needs exactly two classes; the target has {len(self.classes)} "
                f"({listed(self.classes)}). Use `model=softmax`."
            )
        return codes.astype(np.float64)

    def _fit_scalers(self) -> None:
        """The scalers of the training rows (a resumed run keeps its own), in blocks."""
        opts, previous = self.opts, self.previous
        if previous is not None and previous.x_scaler and previous.y_scaler:
            self.x_scaler, self.y_scaler = previous.x_scaler, previous.y_scaler
            return
        features = self.source.features(self.train_rows)
        self.x_scaler = Scaler.fit(features, center=opts.intercept, enabled=opts.standardize)
        self.y_scaler = Scaler.fit(
            self.source.target(self.train_rows),
            center=opts.intercept,
            enabled=opts.standardize and not opts.is_classifier and self.custom_model is None,
            target=True,
        )

    def _warn_constant(self, same: np.ndarray[Any, Any]) -> None:
        constant = [name for name, fixed in zip(self.model_names, same, strict=True) if fixed]
        if constant:
            self._warn(
                f"feature {listed(constant)} is constant in the training rows; it cannot "
                f"explain the target and gets coefficient 0 (or shares the intercept)."
            )

    def _least_squares_curvature(self) -> None:
        """XᵀX of the training rows, the loss Hessian's spectrum, and its condition number in
        the data's own units. θ* and loss* only serve the exact path (full batch); the
        curvature needs G alone, and a mini-batch run (which never uses G to train) takes it
        from evenly spaced rows, at most CURVATURE_ROWS of them: λ to a few percent, in a
        fraction of a pass."""
        opts, rows = self.opts, self.train_rows
        if self.table is None:
            if opts.batch_size is not None and len(rows) > CURVATURE_ROWS:
                rows = rows[:: -(-len(rows) // CURVATURE_ROWS)]
            self.statistics = self.least_squares(rows, solve=opts.batch_size is None, shared=True)
        assert self.statistics is not None
        gram, n = self.statistics.gram.numpy(), self.statistics.n
        self.curvature = hessian_curvature(2.0 * gram / n)
        raw = self._to_raw_units(opts.intercept)
        with np.errstate(over="ignore", invalid="ignore"):
            self.raw_curvature = hessian_curvature(2.0 * raw.T @ gram @ raw / n)
        self.raw_condition = self.raw_curvature.condition_number
        if self.curvature.condition_number > ILL_CONDITIONED:
            self._warn(
                f"the least-squares problem is ill-conditioned (condition number "
                f"{self.curvature.condition_number:.3g} of the loss Hessian"
                f"{' after standardization' if opts.standardize else ''}): gradient descent "
                f"needs about that many epochs per digit and the coefficients are poorly "
                f"determined. Use fewer or less correlated features, or a lower degree."
            )

    def _least_squares_statistics_fit(self, features: int) -> bool:
        """Whether XᵀX (d² numbers, O(d³) to solve) serves this run: least squares on a model
        linear in its parameters with at most EXACT_MAX_WIDTH of them. Wider problems iterate
        with autograd and take their curvature from Hessian-vector products instead."""
        opts = self.opts
        if self.custom_model is not None or not self.spec.is_linear_in_parameters:
            return False
        if opts.resolved_loss != "mse":
            return False
        width = features * self.spec.degree + opts.intercept
        if width > EXACT_MAX_WIDTH:
            self._warn(
                f"{width} parameters: the least-squares statistics XᵀX ({width}² numbers, "
                f"O(d³) to solve) are skipped above {EXACT_MAX_WIDTH}; training iterates "
                f"with autograd and the curvature comes from Hessian-vector products."
            )
            return False
        return True

    @functools.cached_property
    def data_fingerprint(self) -> str:
        """The digest a saved run keeps to recognise its data; a whole pass, so only on saving
        (a stream's comes from its first pass)."""
        if self.table is not None:
            return self.first_pass.fingerprint
        return fingerprint(self.X, self.y_given)

    def least_squares(
        self, rows: IntArray, *, solve: bool = True, shared: bool = False
    ) -> LeastSquaresStatistics:
        """XᵀX, Xᵀy and the optimum of those rows in training space, block by block; `shared`
        (every rank calls it) sums each rank's share of the rows over the ranks of a
        data-parallel run (`train/parallel.py`)."""
        if isinstance(rows, StreamedRows):
            assert self.statistics is not None
            if rows is self.train_rows:
                return self.statistics
            return self._streamed_statistics(self.first_pass.validation, solve=solve)
        world = parallel.current()
        total = world.sum if shared and world.parallel else None
        if total is not None:
            rows = rows[world.share(len(rows))]
        features, target = self.source.features(rows), self.source.target(rows)

        def blocks() -> Iterator[tuple[FloatArray, FloatArray]]:
            for part, column in zip(features.parts(), target.parts(), strict=True):
                yield part, self.y_scaler.transform(column)[:, 0]

        scaler = None if self.x_scaler.is_identity else self.x_scaler
        return LeastSquaresStatistics.from_blocks(
            blocks, intercept=self.opts.intercept, scaler=scaler, solve=solve, total=total,
            width=self.source.width, names=self.model_names,
        )  # fmt: skip

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
        warnings.warn(message, GdlabWarning, stacklevel=caller_level())

    def _device(self) -> torch.device:
        """The training device; CUDA is the rank's own GPU in a data-parallel run."""
        wanted = self.opts.device
        if wanted == "auto":
            wanted = "cuda" if torch.cuda.is_available() else "cpu"
        if wanted == "cuda" and not torch.cuda.is_available():
            raise GdlabError("`device=cuda`, but no CUDA device is available; use cpu or auto.")
        if wanted == "cuda" and parallel.current().parallel:
            return torch.device("cuda", parallel.current().local_rank)
        return torch.device(wanted)

    def tensors(
        self, rows: np.ndarray[Any, Any], loss: Callable[..., torch.Tensor], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = getattr(torch, self.opts.dtype)
        X = self._features(rows, dtype).to(device)
        target = self.y_scaler.transform(np.concatenate(list(self.source.target(rows).parts())))
        if wants_class_indices(loss):
            return X, torch.as_tensor(target[:, 0], dtype=torch.long, device=device)
        return X, torch.as_tensor(target, dtype=dtype, device=device)

    def _features(self, rows: IntArray, dtype: torch.dtype) -> torch.Tensor:
        """The training features of `rows`, written block by block into one tensor of `dtype`
        (no full-size float64 temporaries: on large data those cost more than the training)."""
        width = self.source.width
        features = torch.empty(len(rows), width, dtype=dtype)
        out, begin = features.numpy(), 0
        buffer = np.empty((min(len(rows), CHUNK_ROWS), width))
        for part in self.source.features(rows).parts():
            end = begin + len(part)
            self.x_scaler.transform_into(part, out[begin:end], buffer[: len(part)])
            begin = end
        return features

    def stream(
        self, loss: LossFunction, device: torch.device, *, validation: bool = False
    ) -> TensorStream:
        """The training (or validation) rows of a streamed file as tensors, block by block."""
        assert self.table is not None
        x_scaler, y_scaler = self.x_scaler, self.y_scaler
        classes = np.asarray(self.classes) if self.classes is not None else None
        if classes is not None and np.array_equal(classes, np.arange(len(classes))):
            classes = None  # labels 0, 1, ... are their own codes: no lookup
        dtype = getattr(torch, self.opts.dtype)
        long_target = wants_class_indices(loss)

        def tensors(block: Block) -> tuple[torch.Tensor, torch.Tensor]:
            X = torch.from_numpy(x_scaler.transform_as(block.X, self.opts.dtype)).to(device)
            y = block.y if classes is None else np.searchsorted(classes, block.y).astype(float)
            target = y_scaler.transform(y[:, None])
            if long_target:
                return X, torch.as_tensor(target[:, 0], dtype=torch.long, device=device)
            return X, torch.as_tensor(target, dtype=dtype, device=device)

        train, held = self.first_pass.local if parallel.current().parallel else (
            len(self.train_rows), len(self.val_rows))  # fmt: skip
        rows = held if validation else train  # (this rank's, in a data-parallel run)
        return TensorStream(self.table, self._part(validation), tensors, rows, self.table.share)

    def _split(self, loss: LossFunction, device: torch.device, *, shapes_only: bool) -> Split:
        """The training (and validation) tensors; with `shapes_only` (the exact path, which
        never reads rows again) tensors on the meta device that hold no data. A streamed
        file's tensors are meta too, with the streams that read their rows."""
        if shapes_only or self.table is not None:
            width = self.width

            def tensors(rows: IntArray) -> tuple[torch.Tensor, torch.Tensor]:
                n = len(rows)
                return torch.empty(n, width, device="meta"), torch.empty(n, 1, device="meta")

        else:

            def tensors(rows: IntArray) -> tuple[torch.Tensor, torch.Tensor]:
                return self.tensors(rows, loss, device)

        split = Split(*tensors(self.train_rows))
        if len(self.val_rows):
            split.X_val, split.y_val = tensors(self.val_rows)
        if self.table is not None and not shapes_only:
            split.stream = self.stream(loss, device)
            if len(self.val_rows):
                split.val_stream = self.stream(loss, device, validation=True)
        return split

    def fast_linear(self, net: nn.Module) -> nn.Linear | None:
        """`net` when a path without autograd may train it (gdlab's own one-output linear or
        logistic model, fast paths not switched off), else None."""
        one_output = isinstance(net, nn.Linear) and net.out_features == 1
        if self.opts.fast_paths == "off" or self.custom_model is not None or not one_output:
            return None
        assert isinstance(net, nn.Linear)
        return net

    def initial_parameters(self) -> dict[str, float]:
        """The recorded parameters (as in history.params) at the initial point."""
        net = self._build_model(torch.device("cpu"))
        record = recorder(self, net)
        return record() if record is not None else {}

    def initial_problem(
        self, seed: int | None = None
    ) -> tuple[nn.Module, Callable[[torch.Tensor, torch.Tensor], torch.Tensor], Split]:
        """The model at its initial point (from `seed`, default the options'), loss and data."""
        device = self._device()
        loss_fn = make_loss(self.opts.resolved_loss)
        net = self._build_model(device, self.opts.seed if seed is None else seed)
        if self.table is not None:  # a stream: its first rows, CURVATURE_ROWS at most
            return net, loss_fn, Split(*self.stream(loss_fn, device).head(CURVATURE_ROWS))
        return net, loss_fn, Split(*self.tensors(self.train_rows, loss_fn, device))

    def _build_model(self, device: torch.device, seed: int | None = None) -> nn.Module:
        opts = self.opts
        outputs = len(self.classes) if opts.resolved_loss == "cross-entropy" and self.classes else 1
        torch.manual_seed(opts.seed if seed is None else seed)  # the modules' initial draw
        net = self.custom_model or build_model(
            self.spec,
            self.width,
            outputs,
            intercept=opts.intercept,
            activation=opts.activation,
            init=opts.init,
        )
        if self.custom_model is None and isinstance(net, nn.Linear):  # linear in its parameters
            with torch.no_grad():  # a constant feature is 0 in training space: its weight's
                vanished = torch.from_numpy(np.isinf(self.x_scaler.scale))  # gradient is 0,
                net.weight[:, vanished] = 0.0  # so it starts where θ* has it, and stays
        return net.to(device=device, dtype=getattr(torch, opts.dtype))

    def loss_scale(self) -> float:
        """Losses are reported in the target's units: MSE scales by sy², MAE by sy."""
        sy = float(self.y_scaler.scale[0])
        return {"mse": sy * sy, "mae": sy}.get(self.opts.resolved_loss, 1.0)  # inf, not an error
