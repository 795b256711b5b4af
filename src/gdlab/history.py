"""What a run recorded, one row per epoch, and its CSV form."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gdlab.atomic import write_text

FIXED_COLUMNS = ("epoch", "train_loss", "val_loss", "lr", "grad_norm")
GRAD_PREFIX = "grad_norm["  # per-layer columns: grad_norm[0.weight], ...
LAMBDA_MAX = "lambda_max"  # the loss Hessian's largest eigenvalue, on the epochs it is tracked
UPDATE_PREFIX = "update_ratio["  # per-layer ‖Δθ‖/‖θ‖ over the epoch: update_ratio[0.weight]


@dataclass
class History:
    """Per epoch: the mean training loss over its steps, the validation loss after it, the rate,
    the gradient norm of its last step, and (small models) each parameter's value after it."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    params: dict[str, list[float]] = field(default_factory=dict)
    grad_norms: dict[str, list[float]] = field(default_factory=dict)  # per parameter tensor
    update_ratios: dict[str, list[float]] = field(default_factory=dict)  # ‖Δθ‖/‖θ‖ per tensor
    lambda_max: list[float] = field(default_factory=list)  # the Hessian's, where tracked (NaN)

    def append(
        self,
        epoch: int,
        train_loss: float,
        val_loss: float,
        lr: float,
        grad_norm: float,
        params: dict[str, float] | None = None,
        grad_norms: dict[str, float] | None = None,
        update_ratios: dict[str, float] | None = None,
    ) -> None:
        self.epoch.append(epoch)
        self.train_loss.append(train_loss)
        self.val_loss.append(val_loss)
        self.lr.append(lr)
        self.grad_norm.append(grad_norm)
        self.lambda_max.append(math.nan)  # set afterwards on the epochs it is estimated
        _append(self.params, params)
        _append(self.grad_norms, grad_norms)
        _extend(self.update_ratios, update_ratios or {}, len(self.epoch))

    def replay(self, on_epoch: Callable[[History], None]) -> History:
        """Rebuild this history row by row, calling `on_epoch` after each (as training would)."""
        growing = History()
        for k, epoch in enumerate(self.epoch):
            growing.append(
                epoch,
                self.train_loss[k],
                self.val_loss[k],
                self.lr[k],
                self.grad_norm[k],
                {name: values[k] for name, values in self.params.items()},
                {name: values[k] for name, values in self.grad_norms.items()},
                {name: values[k] for name, values in self.update_ratios.items()},
            )
            growing.lambda_max[-1] = self.lambda_max[k] if k < len(self.lambda_max) else math.nan
            on_epoch(growing)
        return growing

    def copy(self) -> History:
        return History.from_dict(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """Plain lists (what a checkpoint stores)."""
        return {
            "epoch": list(self.epoch),
            "train_loss": list(self.train_loss),
            "val_loss": list(self.val_loss),
            "lr": list(self.lr),
            "grad_norm": list(self.grad_norm),
            "params": {name: list(values) for name, values in self.params.items()},
            "grad_norms": {name: list(values) for name, values in self.grad_norms.items()},
            "update_ratios": {name: list(v) for name, v in self.update_ratios.items()},
            "lambda_max": list(self.lambda_max),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        fields = {name: list(data[name]) for name in ("epoch", *FIXED_COLUMNS[1:])}
        params = {name: list(values) for name, values in data["params"].items()}
        norms = {name: list(values) for name, values in data.get("grad_norms", {}).items()}
        ratios = {name: list(v) for name, v in data.get("update_ratios", {}).items()}
        tracked = list(data.get("lambda_max", [])) or [math.nan] * len(fields["epoch"])
        return cls(**fields, params=params, grad_norms=norms, update_ratios=ratios,
                   lambda_max=tracked)  # fmt: skip

    @property
    def last_epoch(self) -> int:
        """Epochs run: the last row's epoch (rows may be sampled, as in a closed-form run)."""
        return self.epoch[-1] if self.epoch else 0

    def __len__(self) -> int:
        return len(self.epoch)

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        layers = [f"{GRAD_PREFIX}{name}]" for name in self.grad_norms]
        updates = [f"{UPDATE_PREFIX}{name}]" for name in self.update_ratios]
        tracked = [LAMBDA_MAX] if any(map(math.isfinite, self.lambda_max)) else []
        writer.writerow([*FIXED_COLUMNS, *tracked, *layers, *updates, *self.params])
        for i in range(len(self)):
            row = [
                self.epoch[i],
                self.train_loss[i],
                self.val_loss[i],
                self.lr[i],
                self.grad_norm[i],
            ]
            columns = [*([self.lambda_max] if tracked else []), *self.grad_norms.values(),
                       *self.update_ratios.values(), *self.params.values()]  # fmt: skip
            writer.writerow([_format(v) for v in row] + [_format(v[i]) for v in columns])
        return buffer.getvalue()

    def save(self, path: Path) -> None:
        write_text(path, self.to_csv())

    @classmethod
    def load(cls, path: Path) -> History:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        history = cls()
        for row in rows:
            history.append(
                int(row["epoch"]),
                _parse(row["train_loss"]),
                _parse(row["val_loss"]),
                _parse(row["lr"]),
                _parse(row["grad_norm"]),
                {
                    name: _parse(v)
                    for name, v in row.items()
                    if name not in (*FIXED_COLUMNS, LAMBDA_MAX)
                    and not name.startswith((GRAD_PREFIX, UPDATE_PREFIX))
                },
                _columns(row, GRAD_PREFIX),
                _columns(row, UPDATE_PREFIX),
            )
            history.lambda_max[-1] = _parse(row.get(LAMBDA_MAX))
        return history


def _append(columns: dict[str, list[float]], values: dict[str, float] | None) -> None:
    """Append a row to columns every row has (one append per value: a tiny model's epoch
    lasts microseconds, and setdefault would build a list for each)."""
    for name, value in (values or {}).items():
        try:
            columns[name].append(value)
        except KeyError:
            columns[name] = [value]


def _extend(columns: dict[str, list[float]], values: dict[str, float], rows: int) -> None:
    """Append a row to optional columns: NaN where a column has no value (a closed-form
    stretch records no update ratios; a run resumed from it does), so none is ragged."""
    if not values and not columns:
        return  # the common case: a run that records none of them
    for name, value in values.items():
        columns.setdefault(name, [math.nan] * (rows - 1)).append(value)
    for column in columns.values():
        if len(column) < rows:
            column.append(math.nan)


def _columns(row: dict[str, str], prefix: str) -> dict[str, float]:
    """The row's `prefix[name]` columns, by name."""
    return {name[len(prefix) : -1]: _parse(v) for name, v in row.items() if name.startswith(prefix)}


def _format(value: float) -> str:
    """repr round-trips floats exactly; an empty cell means 'not measured'."""
    return "" if isinstance(value, float) and math.isnan(value) else repr(value)


def _parse(text: str | None) -> float:
    return float(text) if text else math.nan
