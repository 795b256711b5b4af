"""Read a Parquet or CSV file a block of rows at a time, never holding the whole file.

`TableFile` names a file, its target and its feature columns, and hands out `Block`s: the
raw float64 features and target of consecutive rows with the file's row number of the first.
Parquet is read by record batch (`pyarrow.parquet.ParquetFile.iter_batches`, or a row group
at a time for a shuffled epoch); CSV in blocks of BLOCK_BYTES cut at line ends, each parsed by
pyarrow's CSV reader. Every block is checked as the in-memory reader checks the whole file:
when pyarrow's fast conversion fails, or a value is missing or not finite, the block is read
again by pandas and put through `gdlab.data.columns`, so the one-line messages (file, column,
row and line) are those of an in-memory run, with the row numbers of the whole file.

The validation split of a stream is by row number: row i is held out when a hash of (i, seed)
falls below the fraction (`held_out`), so the split is stable, seeded, and needs no second
copy or any memory beyond the block. It is not the in-memory split (a permutation of the rows):
the same fraction holds out other rows, and about, not exactly, that share of them.

A shuffled epoch (`TableFile.shuffled`) reads the row groups in a seeded order (a CSV file in
its own order: its blocks cannot be found without reading what comes before them) and
permutes the rows of a window of `shuffle_rows` (SHUFFLE_ROWS) at a time; the batches of
the epoch are cut from the windows in turn, the rows that do not fill a last batch carried
into the next window. It is reproducible from its seed alone. In memory, an epoch
is one permutation of all the rows, so a row can meet any other in a batch; streamed, a batch
holds rows of the same window only.
"""

from __future__ import annotations

import collections
import contextlib
import io
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from gdlab.data.arrays import FloatArray
from gdlab.data.columns import choose, feature_matrix, numeric_column
from gdlab.data.files import (
    MAX_LINE_BYTES,
    check_data_file,
    check_fields,
    delimiter_of,
    read_csv_quietly,
    unreadable_parquet,
)
from gdlab.errors import GdlabError, listed

if TYPE_CHECKING:
    import pyarrow as pa

BLOCK_BYTES = 8 << 20  # CSV bytes parsed at a time
BATCH_ROWS = 1 << 16  # Parquet rows per record batch
SHUFFLE_ROWS = 1 << 18  # rows permuted together in a shuffled epoch
SPARE = 2  # columns a block read by pyarrow keeps free after [X, y] (Block.room)
STREAMABLE = (".csv", ".tsv", ".txt", ".parquet", ".pq")
PARQUET = (".parquet", ".pq")
# How a Parquet file is opened to stream it. pre_buffer (pyarrow's default) reads ahead every
# row group that iter_batches will visit, the whole file: measured, 344 MB held for a 290 MB
# file. A page that carries a checksum is checked, as the in-memory reader checks it.
PARQUET_OPTIONS: dict[str, Any] = {
    "pre_buffer": False,
    "buffer_size": 1 << 20,
    "page_checksum_verification": True,
}
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class Block:
    """Consecutive rows of the file: raw features (rows, d), target (rows,), float64."""

    first: int  # the file's row number (from 0) of the first row
    X: FloatArray
    y: FloatArray
    values: FloatArray | None = None  # [X, y], when X and y are its views (column-major)
    room: FloatArray | None = None  # [X, y, SPARE columns], `values` its view: see `matrix`

    def __len__(self) -> int:
        return len(self.y)

    def matrix(self) -> FloatArray:
        """[X, y] as one (rows, d + 1) array: `values` itself (a pass may change it in
        place, and fill the SPARE columns of `room` after it, to have [X, y, ...] as one
        array without a copy), else a new array."""
        if self.values is not None:
            return self.values
        return np.column_stack([self.X, self.y])

    def where(self, keep: np.ndarray[Any, Any]) -> Block:
        """The rows where `keep` is true, with `first` kept (they are no longer consecutive
        unless `keep` keeps every row: then the block itself, not a copy)."""
        if keep.all():
            return self
        return Block(self.first, self.X[keep], self.y[keep])


class TableFile:
    """A CSV or Parquet file to stream: its columns, and its rows a block at a time."""

    def __init__(
        self,
        path: Path,
        target: str | None,
        features: list[str] | None = None,
        *,
        block_bytes: int = BLOCK_BYTES,
        batch_rows: int = BATCH_ROWS,
        shuffle_rows: int = SHUFFLE_ROWS,
    ) -> None:
        self.path, self.source = path, str(path)
        suffix = check_data_file(path)
        if suffix not in STREAMABLE:
            raise GdlabError(
                f"{path}: only CSV and Parquet files stream; load a {suffix} file in memory "
                f"(without --stream), or convert it to Parquet."
            )
        self.parquet = suffix in PARQUET
        self.delimiter = delimiter_of(suffix)
        self.block_bytes, self.batch_rows, self.shuffle_rows = block_bytes, batch_rows, shuffle_rows
        self.columns = self._parquet_columns() if self.parquet else self._csv_header()
        counts = collections.Counter(self.columns)  # (a file may have 10^6 columns)
        repeated = sorted(name for name, count in counts.items() if count > 1)
        if repeated or not all(name.strip() for name in self.columns):
            what = f"column name {repeated[0]!r} repeats" if repeated else "a column has no name"
            raise GdlabError(
                f"{path}: {what}; a streamed file needs a distinct name for every column "
                f"(rename it in the header)."
            )
        self.target = target
        if target is None:  # features only (to predict): named by the caller
            assert features is not None
            self.features = list(features)
        else:
            self.features = choose(self.columns, self.source, target, features)
        missing = [name for name in self.features if name not in counts]
        if missing:
            hint = (
                f"the columns are: {listed(self.columns)}"
                if target is not None
                else f"the model was trained on {listed(self.features)}"
            )
            raise GdlabError(f"{path}: feature column {missing[0]!r} not found; {hint}.")
        self.wanted = [*self.features, *([] if target is None else [target])]
        # (rank, ranks) of a data-parallel run: this rank reads row groups rank, rank + ranks, ...
        self.share = (0, 1)
        # called after each block read, with (amount, total, unit): rows of a Parquet file,
        # bytes of a CSV file (its rows are not known before a pass), for a progress bar
        self.on_read: Callable[[int, int, str], None] | None = None

    # -- what is known before reading the rows

    def _parquet_columns(self) -> list[str]:
        import pyarrow.parquet as pq

        try:
            self._file = pq.ParquetFile(self.path, **PARQUET_OPTIONS)
        except Exception as error:  # pyarrow raises several unrelated types for a bad file
            raise GdlabError(unreadable_parquet(self.path, error)) from None
        return [str(name) for name in self._file.schema_arrow.names]

    def _csv_header(self) -> list[str]:
        parts: list[bytes] = []
        read = 0
        with self.path.open("rb") as handle:  # the first line, ended by \n, \r\n or \r
            while read <= MAX_LINE_BYTES and (data := handle.read(1 << 16)):
                ends = [at for at in (data.find(b"\n"), data.find(b"\r")) if at >= 0]
                if ends:  # (a \r\n split between two reads leaves a blank line: skipped)
                    end = min(ends) + 1
                    end += data[end - 1 : end + 1] == b"\r\n"
                    parts.append(data[:end])
                    break
                parts.append(data)
                read += len(data)
        first = b"".join(parts)
        if len(first) > MAX_LINE_BYTES:
            raise GdlabError(
                f"{self.path}, line 1: longer than {MAX_LINE_BYTES >> 20} MiB without a line "
                f"break; a CSV file has one row per line."
            )
        try:
            text = first.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise GdlabError(
                f"{self.path} is not UTF-8 text (byte {error.start}); save it as UTF-8 CSV."
            ) from None
        self._header_bytes = len(first)
        return check_fields(self.path, [text], self.delimiter)

    @property
    def row_groups(self) -> list[int]:
        """Rows in each Parquet row group ([] for CSV, whose blocks are found by reading)."""
        if not self.parquet:
            return []
        metadata = self._file.metadata
        return [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]

    # -- the rows

    def blocks(self, groups: list[int] | None = None) -> Iterator[Block]:
        """Every row in order, a block at a time; with `groups`, those Parquet row groups in
        that order. A file without data rows is refused when the pass ends."""
        rows = 0
        rank, ranks = self.share
        if groups is None and ranks > 1:
            groups = list(range(rank, len(self.row_groups), ranks))
        reader = self._csv_blocks() if not self.parquet else self._parquet_blocks(groups)
        for block in read_ahead(reader):
            rows += len(block)
            yield block
        if not rows:
            raise GdlabError(f"{self.path} has a header but no data rows; add rows of data.")

    def _parquet_blocks(self, groups: list[int] | None) -> Iterator[Block]:
        total = self._file.metadata.num_rows
        try:
            batches = self._numbered_batches(groups)
            if groups is None:  # record batches, decoded ahead (not whole row groups)
                batches = read_ahead(batches)
            for first, batch in batches:
                yield self._checked(first, batch)
                if self.on_read is not None:
                    self.on_read(batch.num_rows, total, "row")
        except GdlabError:
            raise
        except MemoryError:  # pyarrow's ArrowMemoryError is one
            raise GdlabError(
                f"{self.path}: out of memory reading a block of {self.batch_rows} rows; free "
                f"memory for the process."
            ) from None
        except Exception as error:  # a damaged page deep in the file
            raise GdlabError(unreadable_parquet(self.path, error)) from None

    def _numbered_batches(self, groups: list[int] | None) -> Iterator[tuple[int, Any]]:
        """(file row number of its first row, record batch), in file order or by row group."""
        if groups is None:
            first = 0
            for batch in self._file.iter_batches(batch_size=self.batch_rows, columns=self.wanted):
                yield first, batch
                first += batch.num_rows
            return
        starts = np.cumsum([0, *self.row_groups]).tolist()
        for group in groups:
            first = starts[group]
            table = self._file.read_row_group(group, columns=self.wanted)
            for batch in table.to_batches(self.batch_rows):
                yield first, batch
                first += batch.num_rows

    def shuffled(self, seed: int, keep: Callable[[Block], Block]) -> Iterator[Block]:
        """The rows `keep` keeps of each block, once each, in the order of a shuffled epoch
        (see the module docstring): one block of permuted rows per window."""
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(self.row_groups)).tolist() if self.parquet else None
        rank, ranks = self.share
        if order is not None and ranks > 1:  # each rank its own row groups, in that order
            order = [group for group in order if group % ranks == rank]
        held: list[Block] = []
        rows = 0
        for block in self.blocks(order):
            kept = keep(block)
            held.append(kept)
            rows += len(kept)
            if rows >= self.shuffle_rows:
                yield _permuted(held, rng)
                held, rows = [], 0
        if rows:
            yield _permuted(held, rng)

    def _csv_blocks(self) -> Iterator[Block]:
        import pyarrow as pa
        import pyarrow.csv as pcsv

        first_row, line = 0, 2  # the file's line of the block's first line
        names = self.columns
        read = pcsv.ReadOptions(column_names=names, use_threads=True)
        parse = pcsv.ParseOptions(delimiter=self.delimiter)
        convert = pcsv.ConvertOptions(
            include_columns=self.wanted,
            column_types={name: pa.float64() for name in self.wanted},
        )
        size = self.path.stat().st_size - self._header_bytes
        for data in self._csv_chunks():
            try:
                table = pcsv.read_csv(io.BytesIO(data), read, parse, convert)
                batch = table.combine_chunks().to_batches()
                fast = batch[0] if len(batch) == 1 else None
            except (pa.ArrowInvalid, UnicodeDecodeError):
                fast = None
            block = self._fast(first_row, fast) if fast is not None else None
            if block is None:
                block = self._csv_slow(first_row, line, data)
            if len(block):
                yield block
            if self.on_read is not None:
                self.on_read(len(data), size, "B")
            first_row += len(block)
            line += data.count(b"\n") if b"\n" in data else data.count(b"\r")

    def _csv_chunks(self) -> Iterator[bytes]:
        """The data lines after the header in pieces of about `block_bytes`, each ending at a
        line end (the last one at the file's end)."""
        with self.path.open("rb") as handle:
            handle.seek(self._header_bytes)
            rest = b""
            while True:
                data = handle.read(self.block_bytes)
                if not data:
                    break
                data = rest + data
                cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
                if cut == 0:
                    if len(data) > MAX_LINE_BYTES:
                        raise GdlabError(
                            f"{self.path}: a line longer than {MAX_LINE_BYTES >> 20} MiB "
                            f"without a line break; a CSV file has one row per line."
                        )
                    rest = data
                    continue
                rest = data[cut:]
                if data[:cut].strip():
                    yield data[:cut]
            if rest.strip():
                yield rest

    def _csv_slow(self, first_row: int, line: int, data: bytes) -> Block:
        """A block pyarrow's conversion refused (or found a missing value in), read as the
        in-memory reader reads a whole file: field counts, then pandas, then the columns."""
        import pandas as pd

        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            bad_line = line + data[: error.start].count(b"\n")
            raise GdlabError(
                f"{self.path} is not UTF-8 text (line {bad_line}); save it as UTF-8 CSV."
            ) from None
        check_fields(self.path, text.splitlines(keepends=True), self.delimiter,
                     first_line=line, header=self.columns)  # fmt: skip
        try:
            frame = read_csv_quietly(io.StringIO(text), sep=self.delimiter, names=self.columns,
                                     header=None, skip_blank_lines=True)  # fmt: skip
        except (pd.errors.ParserError, ValueError) as error:
            raise GdlabError(
                f"{self.path} could not be parsed as CSV: {error}".replace("\n", " ")
            ) from None
        return self._from_frame(first_row, frame)

    def _checked(self, first: int, batch: pa.RecordBatch) -> Block:
        block = self._fast(first, batch)
        return block if block is not None else self._from_frame(first, batch.to_pandas())

    def _fast(self, first: int, batch: pa.RecordBatch) -> Block | None:
        """The block from numeric Arrow columns without nulls, all finite; else None."""
        import pyarrow as pa

        columns = [batch.column(name) for name in self.wanted]
        for column in columns:
            kind = column.type
            if column.null_count or not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
                return None
        room = np.empty((batch.num_rows, len(columns) + SPARE), order="F")  # columns contiguous
        values = room[:, : len(columns)]
        for k, column in enumerate(columns):
            values[:, k] = column.to_numpy(zero_copy_only=False)
        if not np.isfinite(values.sum(axis=0)).all() and not np.isfinite(values).all():
            return None  # (a finite sum is the common case: one pass, no boolean copy)
        if self.target is None:
            return Block(first, values, np.zeros(len(values)))
        return Block(first, values[:, :-1], values[:, -1], values, room)

    def _from_frame(self, first: int, frame: Any) -> Block:
        """The checks of `gdlab.data.columns` on a block read by pandas, with file row numbers."""
        hint = f"the columns are: {listed(self.columns)}"
        X = feature_matrix(frame, self.source, self.features, hint=hint, first_row=first)
        y = (
            np.zeros(len(frame))
            if self.target is None
            else numeric_column(frame, self.target, self.source, first_row=first)
        )
        return Block(first, X.reshape(len(frame), len(self.features)), y)


def in_memory_bytes(path: Path) -> float | None:
    """About what reading a CSV or Parquet file whole would take, from its size alone: the
    table as pandas holds it and the float64 matrix made of it (Parquet: every column of
    every row, from its metadata; CSV: about one byte per byte of text for each). None where
    the file cannot tell (missing, damaged): the reader that reads it whole says why."""
    try:
        if path.suffix.lower() in PARQUET:
            import pyarrow.parquet as pq

            metadata = pq.read_metadata(path)
            return float(metadata.num_rows * metadata.num_columns * 8 * 2)
        return float(path.stat().st_size) * 2
    except Exception:  # pyarrow raises several unrelated types for a bad file
        return None


AHEAD = 2  # blocks read ahead while the caller works on the last
T = TypeVar("T")


def read_ahead(blocks: Iterator[T]) -> Iterator[T]:
    """`blocks`, read and checked by a thread of their own up to AHEAD blocks ahead, so that
    reading the file (pyarrow, and numpy's conversions, release the GIL) goes on while the
    caller computes. An error in the reader is raised here, in order; a caller that stops
    early stops the reader. A Parquet file read in order goes through two: pyarrow decodes
    the next record batch while the last is converted and checked (measured: the first pass
    of a 4.8 GB file 6.3 s -> 5.0 s on 2 cores); read by row group (a shuffled epoch), it
    goes through one, since a row group read ahead is a whole row group more in memory."""
    ready: queue.Queue[tuple[str, Any]] = queue.Queue(AHEAD)
    stop = threading.Event()

    def read() -> None:
        try:
            for block in blocks:
                while not stop.is_set():
                    try:
                        ready.put(("block", block), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(("end", None))
        except BaseException as error:  # handed to the caller, who raises it
            ready.put(("error", error))

    reader = threading.Thread(target=read, daemon=True, name="gdlab-read-ahead")
    reader.start()
    try:
        while True:
            kind, item = ready.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        while reader.is_alive():  # let a reader blocked on a full queue see the stop
            with contextlib.suppress(queue.Empty):
                ready.get(timeout=0.1)
        reader.join()


def held_out(first: int, count: int, fraction: float, seed: int) -> np.ndarray[Any, Any]:
    """Which of the rows first..first+count-1 are validation rows: a splitmix64 hash of the
    row number and the seed, below `fraction` of its range."""
    if fraction <= 0:
        return np.zeros(count, dtype=bool)
    rows = np.arange(first, first + count, dtype=np.uint64)
    key = _mix(np.array([seed], dtype=np.uint64))[0]
    return _mix(rows ^ key) < np.uint64(min(int(fraction * 2.0**64), 2**64 - 1))


def _mix(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """splitmix64's finalizer, element by element (uint64 arithmetic wraps)."""
    with np.errstate(over="ignore"):
        z = values + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _permuted(blocks: list[Block], rng: np.random.Generator) -> Block:
    X = np.concatenate([block.X for block in blocks])
    y = np.concatenate([block.y for block in blocks])
    order = rng.permutation(len(y))
    return Block(blocks[0].first, X[order], y[order])
