"""The one pass over a streamed file that prepares a problem: everything `gdlab.problem`
computes from rows in memory (row counts of the split, finiteness, class labels, constant
columns, the scalers' moments and, for least squares, XᵀX and Xᵀy), read block by block
together.

The sums are taken about a provisional centre c, the first block's column means: the Gram
matrix K of [x - c, 1, y - c_y] holds the column sums, the sums of squares and products and the
row count, and since c lies near the mean, the centred moments taken from it lose no more
digits than a second pass about the exact mean would keep (the cancellation is of (mean - c)²
against the variance). Standardized statistics are then Tᵀ K T for the affine map T from
[x - c, 1, y - c_y] to [z, 1, t]: what the in-memory pass builds from the standardized rows,
to rounding. Without XᵀX (another model, or too many features) the pass keeps the sums and
sums of squares per column instead.

A column whose first block lies beyond 2^±256 of its centre (1e77: its squares, summed over
the rows, would overflow float64, or vanish below its smallest number) is taken in units of
a power of two that brings it near 1, `FirstPass.unit` (exact: a power of two changes no
digit); the scaler's mean and spread and T take it out again. Every other column's unit is 1
and costs nothing. Sums that still overflow (a column far larger further on) stop the run
with the column's name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gdlab.data.arrays import FloatArray
from gdlab.data.scaling import Scaler
from gdlab.data.stream import Block, TableFile
from gdlab.errors import GdlabError

if TYPE_CHECKING:
    from gdlab.train.parallel import World

Prepare = Callable[[Block], Block]  # raw file columns -> the model's features (poly:K)
STREAMED = "stream:"  # how a streamed run's data fingerprint begins


@dataclass
class Sums:
    """Sums of one part of the rows (training or validation) about the centre."""

    n: int = 0
    gram: FloatArray | None = None  # K of [x - c, 1, y - c_y], with `gram`
    linear: FloatArray | None = None  # Σ (x - c), Σ (y - c_y): without `gram`
    squares: FloatArray | None = None  # Σ (x - c)², Σ (y - c_y)²
    first: FloatArray | None = None  # the part's first row [x, y], as read
    same: np.ndarray[Any, Any] | None = None  # the columns equal to `first` in every row

    def observe(self, raw: FloatArray) -> None:
        """Follow the constant columns through rows [x, y] as read (before the centre is
        taken off), as `constant_columns` does in memory: a column that varies within the
        part's first block is settled there, only the others are compared further."""
        if not len(raw):
            return
        if self.first is None or self.same is None:
            self.first = raw[0].copy()
            self.same = (raw == self.first).all(axis=0)
        elif self.same.any():
            candidates = np.flatnonzero(self.same)
            self.same[candidates] = (raw[:, candidates] == self.first[candidates]).all(axis=0)

    def add(self, values: FloatArray, gram: bool, sums: FloatArray | None = None) -> None:
        """`values`: the block's [x - c, y - c_y]; `sums` its column sums when known."""
        if not len(values):
            return
        linear = values.sum(axis=0) if sums is None else sums
        if gram:  # K of [u, 1, v] from VᵀV (BLAS syrk) and the sums: no copy of the block
            width = values.shape[1] - 1
            inner = values.T @ values
            block = np.empty((width + 2, width + 2))
            index = [*range(width), width + 1]
            block[np.ix_(index, index)] = inner
            block[width, index] = block[index, width] = linear
            block[width, width] = len(values)
            self.add_gram(len(values), block)
        else:
            self.n += len(values)
            squares = np.einsum("ij,ij->j", values, values)
            self.linear = linear if self.linear is None else self.linear + linear
            self.squares = squares if self.squares is None else self.squares + squares

    def add_gram(self, n: int, block: FloatArray) -> None:
        """A block's K of [x - c, 1, y - c_y], taken by the caller."""
        self.n += n
        self.gram = block if self.gram is None else self.gram + block

    def merged(self, other: Sums) -> Sums:
        """The sums of both parts' rows (another rank's, in a data-parallel run)."""

        def plus(a: FloatArray | None, b: FloatArray | None) -> FloatArray | None:
            return b if a is None else a if b is None else a + b

        same = self.same if other.same is None else other.same
        if self.same is not None and other.same is not None:
            assert self.first is not None and other.first is not None
            same = self.same & other.same & (self.first == other.first)
        return Sums(
            self.n + other.n,
            plus(self.gram, other.gram),
            plus(self.linear, other.linear),
            plus(self.squares, other.squares),
            self.first if self.first is not None else other.first,
            same,
        )

    def moments(self) -> tuple[FloatArray, FloatArray]:
        """(Σ (v - c), Σ (v - c)²) of every column, features then target."""
        if self.gram is not None:
            width = len(self.gram) - 2
            index = [*range(width), width + 1]
            return self.gram[width, index], np.diag(self.gram)[index]
        assert self.linear is not None and self.squares is not None
        return self.linear, self.squares


WEIGHTS = 9973  # the digest weighs row i by i mod WEIGHTS


@dataclass
class FirstPass:
    """What the pass found (see the module docstring)."""

    centre: FloatArray  # c: features then target
    unit: FloatArray  # each column's power of two, 1 but for a column near 2^±256 (see above)
    train: Sums
    validation: Sums
    labels: list[int] | None
    fingerprint: str
    rows: int = 0
    local: tuple[int, int] = (0, 0)  # this rank's (training, validation) rows

    def scaler(self, *, center: bool, enabled: bool, target: bool) -> Scaler:
        """The scaler `Scaler.fit` finds on the training rows, from the moments."""
        index = slice(-1, None) if target else slice(0, -1)
        width = len(self.centre[index])
        if not enabled:
            return Scaler(np.zeros(width), np.ones(width))
        n, unit = self.train.n, self.unit[index]
        linear, squares = (part[index] for part in self.train.moments())
        offset = linear / n  # in the column's unit, as the sums
        mean = self.centre[index] + offset / unit
        variance = np.maximum(squares / n - offset * offset, 0.0)
        spread = np.sqrt(variance if center else variance + (mean * unit) ** 2) / unit
        assert self.train.same is not None
        constant = self.train.same[index]
        return Scaler.of_moments(mean, spread, constant, center=center, target=target)

    def constant(self) -> np.ndarray[Any, Any]:
        assert self.train.same is not None
        return self.train.same[:-1]


_WEIGHT_TABLE: list[FloatArray] = []  # [1, arange(m) % WEIGHTS], grown to the largest block


def _sum_weights(first: int, n: int) -> FloatArray:
    """Two rows over the block's rows: ones, and (first + i) mod WEIGHTS; a slice of one
    table, not a pass. Times the block, one BLAS call gives the column sums and the digest's
    weighted sums together (half the time of numpy's column sum alone)."""
    if not _WEIGHT_TABLE or _WEIGHT_TABLE[0].shape[1] < n + WEIGHTS:
        width = n + WEIGHTS
        _WEIGHT_TABLE[:] = [np.vstack([np.ones(width), np.arange(width) % WEIGHTS])]
    start = first % WEIGHTS
    return _WEIGHT_TABLE[0][:, start : start + n]


def _gram_in_room(room: FloatArray, width: int, first: int) -> tuple[FloatArray, FloatArray]:
    """(K of [x - c, 1, y - c_y], [Σ v, Σ weight·v]) of a block whose centred [x, y] are the
    first `width` columns of `room`: its two spare columns take the ones and the digest's
    weights, and one BLAS call (syrk, WᵀW) gives the Gram matrix, the column sums, the row
    count and the weighted sums together."""
    n = len(room)
    room[:, width : width + 2] = _sum_weights(first, n).T
    G = room.T @ room  # [x, y, 1, weight]
    features = width - 1
    index = [*range(features), width, features]  # [x, 1, y]
    return G[np.ix_(index, index)], G[width : width + 2, :width]


@np.errstate(over="ignore")  # an overflow is said once, by _check_finite
def first_pass(
    table: TableFile,
    prepare: Prepare,
    *,
    held_out: Callable[[Block], np.ndarray[Any, Any]],
    gram: bool,
    classifier: bool,
    world: World | None = None,
    names: list[str] | None = None,
) -> FirstPass:
    """One pass over `table` (see the module docstring). `held_out(block)` marks the
    validation rows of a block; `classifier` collects the target's integer labels.

    In a data-parallel run (`world`, the table reading this rank's row groups) every rank
    takes its sums about rank 0's centre, the first block of the file, and the ranks' sums
    are then added in rank order, so every rank holds the same numbers, and the fingerprint,
    taken block by block in the file's order, is the one a single process finds. `names`: the
    model's features (the table's by default), for a message."""
    train, validation = Sums(), Sums()
    centre: FloatArray | None = None
    unit = np.ones(0)
    labels: set[int] = set()
    rows = 0
    parts: list[tuple[int, bytes]] = []  # (first row, the block's digest input)
    for raw in table.blocks():
        block = prepare(raw)
        if classifier:
            labels |= _labels(block, table.source)
        values = block.matrix()  # changed in place below: the block is not read again
        if centre is None:
            centre = values.mean(axis=0)
            unit = _units(values, centre)
            if world is not None:
                centre, unit = world.broadcast((centre, unit))
        first, mask = block.first, held_out(raw)
        rows += len(values)
        if not mask.any():
            train.observe(values)
            _centre(values, centre, unit)
            if gram and block.room is not None:  # a block as read: K with no copy
                K, both = _gram_in_room(block.room, values.shape[1], first)
                train.add_gram(len(values), K)
            else:
                both = _sum_weights(first, len(values)) @ values  # [Σ v, Σ weight·v]
                train.add(values, gram, both[0])
        else:
            held, kept = values[mask], values[~mask]
            validation.observe(held)
            train.observe(kept)
            for part, sums in ((held, validation), (kept, train)):
                _centre(part, centre, unit)
                sums.add(part, gram)
            _centre(values, centre, unit)
            both = _sum_weights(first, len(values)) @ values
        # the digest: the pass's own numbers, with a row-weighted sum so that order counts
        parts.append((first, both.tobytes()))
    assert centre is not None, "TableFile.blocks refuses a file without rows"
    local = (train.n, validation.n)
    if world is not None and world.parallel:
        train, validation, rows, every, parts = _combined(
            world.gather((train, validation, rows, labels, parts))
        )
        labels = set().union(*every)
    digest = hashlib.sha256(b"gdlab stream 3")  # 3: a block's sums from its syrk
    for _, part in sorted(parts, key=lambda item: item[0]):
        digest.update(part)
    digest.update(str(rows).encode())
    _check_finite(table.source, [*(names or table.features), str(table.target)], train)
    return FirstPass(centre, unit, train, validation, sorted(labels) if classifier else None,
                     STREAMED + digest.hexdigest(), rows, local)  # fmt: skip


LIMIT = 2.0**256  # beyond 2^±256 of its centre, a column's sums are taken in a power of two


def _units(values: FloatArray, centre: FloatArray) -> FloatArray:
    """Each column's power of two: 2^-e for a column whose first block's largest distance
    from the centre, m = f·2^e, lies beyond 2^±256; 1 for every other column."""
    reach = np.abs(values - centre).max(axis=0)
    far = np.isfinite(reach) & ((reach > LIMIT) | ((reach > 0) & (reach < 1 / LIMIT)))
    unit = np.ones(len(centre))
    unit[far] = np.ldexp(1.0, -np.frexp(reach[far])[1])
    return unit


def _centre(values: FloatArray, centre: FloatArray, unit: FloatArray) -> None:
    """(v - c) in each column's unit, in place (the multiply only where a unit is not 1)."""
    np.subtract(values, centre, out=values)
    if (unit != 1.0).any():
        np.multiply(values, unit, out=values)


def _check_finite(source: str, names: list[str], sums: Sums) -> None:
    """Sums that overflowed (every value read was finite) stop the run, naming the column:
    `names` are the model's features, then its target."""
    _, squares = sums.moments()
    if np.isfinite(squares).all():
        return
    k = int(np.flatnonzero(~np.isfinite(squares))[0])
    raise GdlabError(
        f"{source}: the sums of squares of column {names[k]!r} overflow float64 (its values "
        f"reach 1e150 times those of its first block); rescale the column, or read the file in "
        f"memory (--no-stream)."
    )


def _combined(
    ranks: list[tuple[Sums, Sums, int, set[int], list[tuple[int, bytes]]]],
) -> tuple[Sums, Sums, int, list[set[int]], list[tuple[int, bytes]]]:
    """Every rank's sums added in rank order: the same numbers on every rank."""
    train, validation, rows, labels, parts = Sums(), Sums(), 0, [], []
    for rank_train, rank_validation, rank_rows, rank_labels, rank_parts in ranks:
        train, validation = train.merged(rank_train), validation.merged(rank_validation)
        rows += rank_rows
        labels.append(rank_labels)
        parts.extend(rank_parts)
    return train, validation, rows, labels, parts


def _labels(block: Block, source: str) -> set[int]:
    whole = block.y == np.round(block.y)
    if not whole.all():
        row = int(np.flatnonzero(~whole)[0])
        raise GdlabError(
            f"{source}: a classification target needs integer class labels; row "
            f"{block.first + row + 1} has {float(block.y[row]):g}. Encode the classes as 0, 1, "
            f"2, ... (or use a regression loss)."
        )
    return set(np.unique(block.y).astype(np.int64).tolist())


@np.errstate(over="ignore")  # an overflow is said once, by _check_finite
def standardized_gram(
    found: FirstPass, sums: Sums, x_scaler: Scaler, y_scaler: Scaler
) -> FloatArray:
    """Tᵀ K T: the Gram matrix of [z, 1, t] (standardized features, a column of ones, the
    target in training units) from the pass's K about the centre."""
    assert sums.gram is not None
    width = len(sums.gram) - 2
    centre_x, centre_y = found.centre[:-1], found.centre[-1]
    T = np.zeros((width + 2, width + 2))
    unit_x, unit_y = found.unit[:-1], found.unit[-1]
    T[np.arange(width), np.arange(width)] = 1.0 / (x_scaler.scale * unit_x)
    T[width, :width] = (centre_x - x_scaler.shift) / x_scaler.scale
    T[width, width] = 1.0
    T[width + 1, width + 1] = 1.0 / (y_scaler.scale[0] * unit_y)
    T[width, width + 1] = (centre_y - y_scaler.shift[0]) / y_scaler.scale[0]
    return T.T @ sums.gram @ T
