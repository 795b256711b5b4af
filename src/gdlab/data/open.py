"""A data file as arrays in memory, or as a stream when it would not fit (`data/stream.py`)."""

from __future__ import annotations

from pathlib import Path

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
    """(X, y, feature names) read whole, or the file to stream: when `stream` is True, or when
    it is None and reading the file whole would take more than the memory budget
    (`memory_budget`, else MEMORY_FRACTION of the available memory)."""
    if stream or (stream is None and path.suffix.lower() in STREAMABLE):
        table = TableFile(path, target, features)
        limit = budget if budget is not None else MEMORY_FRACTION * available_bytes()
        if stream or table.in_memory_bytes() > limit:
            return table
    from gdlab.data.columns import select
    from gdlab.data.files import read_table

    return select(read_table(path), str(path), target, features)
