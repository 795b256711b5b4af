"""Turn a table into numeric features and a target, naming the column and row of any problem."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from gdlab.data.files import NumericTable
from gdlab.errors import GdlabError, listed

if TYPE_CHECKING:
    import pandas as pd

    from gdlab.data.arrays import FloatArray


def select(
    frame: pd.DataFrame | NumericTable, source: str, target: str, features: Sequence[str] | None
) -> tuple[FloatArray, FloatArray, list[str]]:
    """Return X (n, d), y (n,) as float64 and the feature names, or raise naming the problem."""
    names = [str(column) for column in frame.columns]
    if not isinstance(frame, NumericTable):
        frame = frame.set_axis(names, axis=1)
    features = choose(names, source, target, features)
    X = feature_matrix(frame, source, features, hint=f"the columns are: {listed(names)}")
    return X, numeric_column(frame, target, source), list(features)


def choose(names: list[str], source: str, target: str, features: Sequence[str] | None) -> list[str]:
    """The feature columns (default: every column but the target), or raise naming the problem;
    a feature that is no column is named by `feature_matrix` (or by the streaming reader)."""
    if target not in names:
        raise GdlabError(
            f"{source}: target column {target!r} not found; the columns are: {listed(names)}. "
            f"Pass one of them as `target`."
        )
    if features is None:
        features = [name for name in names if name != target]
    elif target in features:
        raise GdlabError(f"{source}: {target!r} is the target; remove it from `features`.")
    if not features:
        raise GdlabError(
            f"{source}: no feature columns (only the target {target!r}); add a feature column."
        )
    return list(features)


def feature_matrix(
    frame: pd.DataFrame | NumericTable,
    source: str,
    features: Sequence[str],
    *,
    hint: str,
    first_row: int = 0,
) -> FloatArray:
    """The named columns as an (n, d) float64 matrix; a missing column is named with `hint`.
    `first_row` is the file's row number of the frame's first row (a block of a stream)."""
    missing = [name for name in features if name not in frame.columns]
    if missing:
        raise GdlabError(f"{source}: feature column {missing[0]!r} not found; {hint}.")
    if isinstance(frame, NumericTable):  # every cell is a finite number already
        return frame.matrix(list(features))
    import pandas as pd

    if frame.columns.is_unique:  # every feature is there (checked above): one position each
        positions = frame.columns.get_indexer(pd.Index(features))
        if all(dtype.kind in "iufb" for dtype in frame.dtypes.iloc[positions]):
            # one conversion for the whole matrix (a file may have 10^6 columns); the column
            # by column path below is only for finding and naming a bad cell
            matrix = frame.iloc[:, positions].to_numpy(dtype=np.float64)
            if np.isfinite(matrix).all():
                return matrix
    return np.column_stack(
        [numeric_column(frame, name, source, first_row=first_row) for name in features]
    )


def numeric_column(
    frame: pd.DataFrame | NumericTable, name: str, source: str, *, first_row: int = 0
) -> FloatArray:
    """One column as finite float64 values; the first bad cell is quoted with its row."""
    if isinstance(frame, NumericTable):
        return frame.column(name)
    import pandas as pd

    column = frame[name]
    if column.dtype.kind in "mM" or isinstance(column.dtype, pd.DatetimeTZDtype):
        raise GdlabError(
            f"{source}: column {name!r} holds dates or times ({column.dtype}), which would be "
            f"fitted as integer time counts; convert it to a number with a meaning (days since "
            f"a date, the year) or leave it out of `features`."
        )
    if column.dtype.kind == "c":
        raise GdlabError(
            f"{source}: column {name!r} is complex; gdlab fits real numbers only "
            f"(take .real or abs)."
        )
    try:
        values = pd.to_numeric(column, errors="coerce")
    except Exception as error:  # e.g. damaged text in an Arrow-backed column of a Parquet file
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise GdlabError(
            f"{source}: column {name!r} cannot be read as numbers ({reason}); check the file, "
            f"or rewrite the column as numbers."
        ) from None
    bad = values.isna() & column.notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise GdlabError(
            f"{source}: column {name!r}, {_where(source, first_row + row)}: non-numeric value "
            f"{column.iloc[row]!r}; replace it with a number or drop the row."
        )
    array = values.to_numpy(dtype=np.float64, na_value=np.nan)
    finite = np.isfinite(array)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        what = "missing (NaN)" if np.isnan(array[row]) else "infinite"
        raise GdlabError(
            f"{source}: column {name!r}, {_where(source, first_row + row)}: value is {what}; "
            f"fill or drop such rows before fitting."
        )
    return array


def _where(source: str, row: int) -> str:
    """Row in the words a user can find it by: CSV line number (header is line 1) or row index."""
    if source.lower().endswith((".csv", ".tsv", ".txt")):
        return f"row {row + 1} (line {row + 2})"
    return f"row {row + 1}"
