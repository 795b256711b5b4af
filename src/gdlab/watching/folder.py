"""A watcher's run folder read back (history.csv and summary.json), for `gdlab plot` and
`gdlab report`; no torch needed.

history.csv holds a row a step: step, loss, the global gradient norm, the first group's lr and
momentum, then `grad_norm:<layer>` and `update_ratio:<layer>` for each layer in depth order
(an update ratio is blank, nan, on the steps that did not measure it). summary.json holds the
diagnoses, the probes (sharpness against the optimizer's threshold) and what was skipped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gdlab.errors import GdlabError

SOURCE = "gdlab.watch"  # summary.json's "source": what wrote the folder
HISTORY, SUMMARY = "history.csv", "summary.json"
LEADING = ("step", "loss", "grad_norm", "lr", "momentum")


@dataclass
class WatchedRun:
    path: Path
    step: np.ndarray  # (n,)
    loss: np.ndarray
    grad_norm: np.ndarray  # the global norm, unscaled, before clipping
    lr: np.ndarray
    layers: list[str]
    grad: np.ndarray  # (n, layers)
    ratio: np.ndarray  # (n, layers), nan where not measured
    summary: dict[str, Any]

    @property
    def diagnoses(self) -> list[dict[str, Any]]:
        return list(self.summary.get("diagnoses", []))

    @property
    def probes(self) -> list[dict[str, Any]]:
        return list(self.summary.get("probes", []))

    @property
    def estimates(self) -> list[dict[str, Any]]:
        """The probes that found a finite sharpness: the ones a figure draws."""
        return [p for p in self.probes if finite(p.get("sharpness"))]


def finite(value: object) -> bool:
    """A finite number (summary.json may hold nan, null or nothing)."""
    return isinstance(value, float | int) and math.isfinite(value)


def in_memory(watcher: Any) -> WatchedRun:
    """A running watcher's steps as a WatchedRun (what the folder would hold), for charts."""
    steps = watcher.recorded()
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = steps.update / steps.weight
    lr = np.array([rate[0] for rate in watcher.rates[: len(steps.step)]])
    return WatchedRun(
        path=Path("."), step=steps.step.astype(float), loss=steps.loss,
        grad_norm=np.sqrt((steps.grad**2).sum(1)), lr=lr, layers=list(watcher.layers),
        grad=steps.grad, ratio=ratio, summary=watcher.summary(),
    )  # fmt: skip


def is_watch_folder(path: Path) -> bool:
    """Whether `path` was written by `gdlab.watch`: its summary.json says so, or, that file
    damaged, its history.csv has the watcher's columns (`read` then names the damage)."""
    try:
        summary = json.loads((path / SUMMARY).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        try:
            with (path / HISTORY).open() as history:
                header = history.readline().strip().split(",")
        except (OSError, UnicodeDecodeError):
            return False
        return tuple(header[: len(LEADING)]) == LEADING
    return isinstance(summary, dict) and summary.get("source") == SOURCE


def read(path: Path) -> WatchedRun:
    """The folder's history and summary; a damaged or foreign file is one line naming it."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    try:
        summary = json.loads((path / SUMMARY).read_text())
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise GdlabError(
            f"{path / SUMMARY} is missing or damaged ({type(error).__name__}); the watcher "
            f"rewrites it when the `with gdlab.watch(...)` block ends."
        ) from None
    history = path / HISTORY
    try:
        header = history.open().readline().strip().split(",")
        if tuple(header[: len(LEADING)]) != LEADING:
            raise ValueError("header")
        table = pacsv.read_csv(history, convert_options=pacsv.ConvertOptions(
            column_types={name: pa.float64() for name in header}))  # fmt: skip
    except (OSError, ValueError, UnicodeDecodeError, pa.ArrowException) as error:
        raise GdlabError(
            f"{history} is missing or damaged ({type(error).__name__}); the watcher rewrites "
            f"it when the `with gdlab.watch(...)` block ends."
        ) from None
    columns = {name: table[name].to_numpy(zero_copy_only=False) for name in header}
    layers = [name.split(":", 1)[1] for name in header if name.startswith("grad_norm:")]
    empty = np.empty((len(table), 0))

    def stacked(prefix: str) -> np.ndarray:
        found = [columns[f"{prefix}:{layer}"] for layer in layers if f"{prefix}:{layer}" in columns]
        return np.column_stack(found) if found else empty

    return WatchedRun(
        path=path, step=columns["step"], loss=columns["loss"], grad_norm=columns["grad_norm"],
        lr=columns["lr"], layers=layers, grad=stacked("grad_norm"), ratio=stacked("update_ratio"),
        summary=summary,
    )  # fmt: skip
