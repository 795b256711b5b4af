"""Row sources: the user's table as the prepared problem reads it, a block of rows at a time.

Everything the preparation computes from the data (column moments for the scalers, constant
columns, XᵀX and Xᵀy, the training tensors) is a pass over some rows in blocks of at most
CHUNK_ROWS. `Rows` is one such pass; `RowSource` hands out passes over the features and the
target for a set of rows, and gathers rows when a computation needs them together (the
separability test, a surface sample, the rate estimate's sample).

`ArrayRows` implements it over arrays in memory. A reader that streams a file implements the
same protocol (its passes read the file; its `take` reads the rows asked for), and the problem
built on it needs no other change.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from gdlab.data import arrays
from gdlab.data.arrays import FloatArray, IntArray
from gdlab.errors import GdlabError


class Rows(Protocol):
    """Some rows of a table with `width` columns, read in order a block at a time."""

    @property
    def width(self) -> int: ...

    def __len__(self) -> int: ...

    def parts(self) -> Iterator[FloatArray]:
        """The rows in blocks of at most CHUNK_ROWS, each (rows, width), in order."""
        ...


class RowSource(Protocol):
    """A table of feature columns and one target column (see the module docstring)."""

    @property
    def width(self) -> int: ...

    def __len__(self) -> int: ...

    def features(self, rows: IntArray) -> Rows:
        """A pass over the feature columns of `rows`."""
        ...

    def target(self, rows: IntArray) -> Rows:
        """A pass over the target of `rows`, as one column."""
        ...

    def take(self, rows: IntArray) -> tuple[FloatArray, FloatArray]:
        """The features (len(rows), width) and target (len(rows),) of `rows`, gathered."""
        ...


@dataclass(frozen=True)
class RowSubset:
    """Some rows of a 2-D array (all of them, in order, when `rows` is None), read a block at
    a time: a pass over the training rows never copies them all out of the data."""

    values: FloatArray
    rows: IntArray | None = None

    @classmethod
    def of(cls, values: FloatArray, rows: IntArray) -> RowSubset:
        """Rows `rows` of `values`; a plain view when they are all the rows in order."""
        whole = len(rows) == len(values) and np.array_equal(rows, np.arange(len(values)))
        return cls(values, None if whole else rows)

    def __len__(self) -> int:
        return len(self.values) if self.rows is None else len(self.rows)

    @property
    def width(self) -> int:
        return int(self.values.shape[1])

    def parts(self) -> Iterator[FloatArray]:
        for block in arrays.row_blocks(len(self)):  # a view when the rows are in order
            yield self.values[block] if self.rows is None else self.values[self.rows[block]]


@dataclass(frozen=True)
class ArrayRows:
    """A row source over arrays in memory: features (n, d) and target (n,)."""

    X: FloatArray
    y: FloatArray

    @property
    def width(self) -> int:
        return int(self.X.shape[1])

    def __len__(self) -> int:
        return len(self.X)

    def features(self, rows: IntArray) -> RowSubset:
        return RowSubset.of(self.X, rows)

    def target(self, rows: IntArray) -> RowSubset:
        return RowSubset.of(self.y[:, None], rows)

    def take(self, rows: IntArray) -> tuple[FloatArray, FloatArray]:
        return self.X[rows], self.y[rows]


def as_rows(values: FloatArray | Rows) -> Rows:
    """An array as a pass over all its rows; a pass as it is."""
    return RowSubset(values) if isinstance(values, np.ndarray) else values


def validation_split(n: int, fraction: float, seed: int) -> tuple[IntArray, IntArray]:
    """(validation rows, training rows): the first `fraction` of a seeded permutation."""
    n_val = round(n * fraction)
    if fraction > 0 and (n_val < 1 or n_val >= n):
        raise GdlabError(
            f"`val_fraction={fraction:g}` of {n} rows leaves no training or no validation "
            f"rows; choose a fraction between {1 / n:.2g} and {1 - 1 / n:.2g}."
        )
    order = np.random.default_rng(seed).permutation(n) if n_val else np.arange(n)
    return order[:n_val], order[n_val:]
