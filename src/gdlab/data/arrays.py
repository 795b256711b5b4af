"""Check arrays handed to the Python API: shapes, types, finiteness, class labels."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import numpy.typing as npt

from gdlab.errors import GdlabError, listed

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

CHUNK_ROWS = 16_384  # rows per block when a pass over the data must not copy all of it


def row_blocks(n: int, size: int = CHUNK_ROWS) -> list[slice]:
    """Consecutive row ranges covering 0..n: passes over large data touch one block at a time."""
    return [slice(begin, min(begin + size, n)) for begin in range(0, n, size)]


def as_matrix(X: Any) -> tuple[FloatArray, list[str]]:
    """X as a float64 (n, d) array and its column names (from a DataFrame, else x0, x1, ...)."""
    names: list[str] | None = None
    if hasattr(X, "columns") and hasattr(X, "to_numpy"):
        names = [str(column) for column in X.columns]
        X = X.to_numpy()
    array = _to_numpy(X, "X")
    if array.ndim != 2:
        hint = " (reshape with X.reshape(-1, 1) for one feature)" if array.ndim == 1 else ""
        raise GdlabError(f"X must be 2-D (n_samples, n_features); got shape {array.shape}{hint}.")
    if array.shape[1] == 0:
        raise GdlabError("X has zero features; give at least one feature column.")
    if array.shape[0] == 0:
        raise GdlabError("X has no rows; give at least one sample.")
    _check_finite(array, "X", names)
    return array, names or [f"x{i}" for i in range(array.shape[1])]


def as_vector(y: Any, n_rows: int) -> FloatArray:
    """y as a float64 (n,) array; a single column (n, 1) is accepted."""
    if hasattr(y, "to_numpy"):
        y = y.to_numpy()
    array = _to_numpy(y, "y")
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise GdlabError(f"y must be 1-D (n_samples,); got shape {array.shape}.")
    if len(array) != n_rows:
        raise GdlabError(
            f"X and y have different lengths ({n_rows} and {len(array)} rows); give one target "
            f"per row of X."
        )
    _check_finite(array[:, None], "y", None)
    return array


def fingerprint(X: FloatArray, y: FloatArray) -> str:
    """A digest of the training data, so that a resumed run can tell it got the same data."""
    digest = hashlib.sha256()
    for array in (X, y):
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array, dtype=np.float64).data.cast("B"))
    return digest.hexdigest()


def class_labels(
    y: FloatArray, source: str, known: list[int] | None = None
) -> tuple[IntArray, list[int]]:
    """Integer class labels mapped to 0..K-1, and the original labels in order.

    With `known` (a model trained before), labels map onto those classes and no others.
    """
    if not np.all(y == np.round(y)):
        row = int(np.flatnonzero(y != np.round(y))[0])
        raise GdlabError(
            f"{source}: a classification target needs integer class labels; row {row + 1} has "
            f"{float(y[row]):g}. Encode the classes as 0, 1, 2, ... (or use a regression loss)."
        )
    if known is not None:
        unseen = sorted(set(np.unique(y.astype(np.int64)).tolist()) - set(known))
        if unseen:
            raise GdlabError(
                f"{source}: class {unseen[0]} is not one of the model's classes "
                f"({listed(known)}); train a new model to add classes."
            )
        codes = np.searchsorted(np.asarray(known), y.astype(np.int64))
        return codes.astype(np.int64), list(known)
    classes, codes = np.unique(y.astype(np.int64), return_inverse=True)
    if len(classes) < 2:
        raise GdlabError(
            f"{source}: the target has only one class ({int(classes[0])}); a classifier needs "
            f"at least two."
        )
    return codes.astype(np.int64), [int(label) for label in classes]


def _to_numpy(values: Any, name: str) -> npt.NDArray[Any]:
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if np.iscomplexobj(array):
        raise GdlabError(f"{name} is complex; gdlab fits real numbers only (take .real or abs).")
    if array.dtype == object or array.dtype.kind in "USV":
        try:
            return array.astype(np.float64)
        except (TypeError, ValueError):
            raise GdlabError(
                f"{name} holds non-numeric values; convert it to numbers first."
            ) from None
    if array.dtype.kind not in "biuf":
        raise GdlabError(f"{name} has dtype {array.dtype}; give numeric values.")
    return np.asarray(array, dtype=np.float64)  # no copy when it is float64 already


def _check_finite(array: FloatArray, name: str, columns: list[str] | None) -> None:
    ones = np.ones(array.shape[1])
    for block in row_blocks(len(array)):
        # A NaN or an infinity makes its row's sum NaN or infinite (one BLAS call reads the
        # block): only then, or where finite values overflow, is the block searched.
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(array[block] @ ones).all():
                continue
        bad = ~np.isfinite(array[block])
        if bad.any():
            row, column = (int(i) for i in np.argwhere(bad)[0])
            label = columns[column] if columns else str(column)
            raise GdlabError(
                f"{name} has a NaN or infinite value at row {block.start + row + 1}, column "
                f"{label}; fill or drop it."
            )
