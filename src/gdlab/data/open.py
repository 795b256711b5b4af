"""A data file read whole, or streamed when it would not fit (`data/stream.py`).

A CSV or Parquet file streams when asked (`stream=True`, `--stream`), or when `stream` is None
and reading it whole would take more than the memory budget (`memory_budget`, else
MEMORY_FRACTION of the available memory). Every other file, and a built-in set, is read whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gdlab.data.arrays import FloatArray
from gdlab.data.stream import STREAMABLE, TableFile
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
    table = _streamed(path, target, features, stream, budget)
    if table is not None:
        return table
    from gdlab.data.columns import select
    from gdlab.data.files import read_table

    return select(read_table(path), str(path), target, features)


def open_features(
    data: str, features: list[str], *, stream: bool | None, budget: float | None
) -> tuple[str, Any] | TableFile:
    """(source, table) of a file or built-in set read whole, or the file to stream (its
    `features` only: predictions need no target)."""
    from gdlab.data.builtin import DATASETS
    from gdlab.data.files import read_table

    if data in DATASETS and not Path(data).exists():
        return DATASETS[data].name, read_table(DATASETS[data].path)
    table = _streamed(Path(data), None, features, stream, budget)
    return table if table is not None else (data, read_table(Path(data)))


def _streamed(
    path: Path,
    target: str | None,
    features: list[str] | None,
    stream: bool | None,
    budget: float | None,
) -> TableFile | None:
    """The file to stream, or None where it is read whole (see the module docstring)."""
    if stream is False or (stream is None and path.suffix.lower() not in STREAMABLE):
        return None
    table = TableFile(path, target, features)
    limit = budget if budget is not None else MEMORY_FRACTION * available_bytes()
    return table if stream or table.in_memory_bytes() > limit else None
