"""A saved checkpoint checked before and after torch.load reads it, so that a crafted or
damaged model.pt is one message, never a traceback or an unbounded allocation."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Any

from gdlab.data.scaling import Scaler
from gdlab.history import History
from gdlab.memory import Estimate, check_fits


def check_archive(path: Path) -> None:
    """The checkpoint's zip archive, before torch.load reads a byte of it.

    torch.save stores every member uncompressed, so a compressed member is foreign, and is
    refused before it is inflated: 2 MB of deflated zeros would declare 2 GB of tensor. With
    every member stored, what torch.load allocates is bounded by the file's own size (it
    checks each declared storage against its record's size), which the memory budget must
    hold. Then every member against the CRC-32 torch.save stored: a flipped bit in a tensor
    would otherwise load silently.
    """
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        packed = [m.filename for m in members if m.compress_type != zipfile.ZIP_STORED]
        if packed:
            raise ValueError(f"compressed member {packed[0]}")
        check_fits(
            Estimate({"checkpoint tensors": float(sum(m.file_size for m in members))}),
            None,
            f"loading {path}",
        )
        bad = archive.testzip()
    if bad is not None:
        raise ValueError(f"CRC mismatch in {bad}")


def check_structure(
    state: dict[str, Any],
    history: History,
    x_scaler: Scaler | None,
    y_scaler: Scaler | None,
    degree: int,
) -> None:
    """What the views of a run rely on, checked once here so that a crafted or damaged
    checkpoint is one message, never a traceback later in predict, plot or report."""
    rows = len(history.epoch)
    columns = [history.train_loss, history.val_loss, history.lr, history.grad_norm,
               *history.params.values(), *history.grad_norms.values(),
               *history.update_ratios.values(), history.lambda_max]  # fmt: skip
    if any(len(column) != rows for column in columns):
        raise ValueError("history columns of unequal length")
    if not all(isinstance(e, int) for e in history.epoch) or history.epoch != sorted(
        set(history.epoch)
    ):
        raise ValueError("history epochs are not increasing integers")
    if not all(math.isfinite(float(v)) for v in history.train_loss):
        raise ValueError("non-finite training loss in the history")
    features, inputs = state["features"], int(state["n_inputs"])
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise ValueError("feature names")
    if len(features) * degree != inputs:
        raise ValueError("feature count")
    if x_scaler is not None and (x_scaler.shift.shape != (inputs,) or
                                 x_scaler.scale.shape != (inputs,)):  # fmt: skip
        raise ValueError("feature scaler shape")
    if y_scaler is not None and (y_scaler.shift.shape != (1,) or y_scaler.scale.shape != (1,)):
        raise ValueError("target scaler shape")
    classes = state["classes"]
    if classes is not None and not all(isinstance(c, int) for c in classes):
        raise ValueError("class labels")
    if not isinstance(state["status"], str) or not isinstance(state["target"], str):
        raise ValueError("status or target")
