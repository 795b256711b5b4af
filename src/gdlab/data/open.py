"""A data file read whole, or streamed when it would not fit (`data/stream.py`).

A CSV or Parquet file streams when asked (`stream=True`, `--stream`), or when `stream` is None
and reading it whole would take more than the memory budget (`memory_budget`, else
MEMORY_FRACTION of the available memory). Every other file, and a built-in set, is read whole.
"""

from __future__ import annotations

from pathlib import Path

from gdlab.data.arrays import FloatArray
from gdlab.data.stream import STREAMABLE, TableFile, in_memory_bytes
from gdlab.memory import MEMORY_FRACTION, available_bytes


def open_data(
    path: Path,
    target: str,
    features: list[str] | None,
    *,
    stream: bool | None,
    budget: float | None,
) -> tuple[FloatArray, FloatArray, list[str]] | TableFile:
    """(X, y, feature names) read whole, or the file to stream."""
    table = streamed(path, target, features, stream=stream, budget=budget)
    if table is not None:
        return table
    from gdlab.data.columns import select
    from gdlab.data.files import read_table

    return select(read_table(path), str(path), target, features)


def streamed(
    path: Path,
    target: str | None,
    features: list[str] | None,
    *,
    stream: bool | None,
    budget: float | None,
) -> TableFile | None:
    """The file to stream, or None where it is read whole (see the module docstring). The
    choice comes from the file's size, before its columns are read: a file read whole is
    checked by the whole-file reader alone."""
    if stream is False or (stream is None and path.suffix.lower() not in STREAMABLE):
        return None
    if stream is None:
        needed = in_memory_bytes(path)
        limit = budget if budget is not None else MEMORY_FRACTION * available_bytes()
        if needed is None or needed <= limit:
            return None
    return TableFile(path, target, features)
