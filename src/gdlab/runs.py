"""A run's folder: model.pt (enough to predict and to continue), history.csv, summary.json."""

from __future__ import annotations

import io
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from gdlab.atomic import write_bytes, write_text
from gdlab.config import FitOptions
from gdlab.data.scaling import Scaler
from gdlab.errors import GdlabError
from gdlab.history import History
from gdlab.models import ModelSpec, build_model
from gdlab.result import FitResult

FORMAT = 1
MODEL_FILE, HISTORY_FILE, SUMMARY_FILE = "model.pt", "history.csv", "summary.json"


def default_out_dir(root: Path = Path("runs")) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate, k = root / stamp, 1
    while candidate.exists():
        k += 1
        candidate = root / f"{stamp}-{k}"
    return candidate


def check_out_dir(out: Path, *, overwrite: bool) -> None:
    """Refuse a folder that holds anything unless overwriting was asked for."""
    if out.exists() and not out.is_dir():
        raise GdlabError(f"--out {out} is a file; give a folder path.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise GdlabError(
            f"--out {out} exists and is not empty; choose another folder or pass --overwrite."
        )


def summary(result: FitResult, out: Path, *, target: str, source: str) -> dict[str, Any]:
    """The JSON summary: the fields of `--json` first, then the run's details."""
    history = result.history
    data: dict[str, Any] = {
        "status": result.status,
        "epochs": len(history),
        "loss": _number(history.train_loss[-1]) if len(history) else None,
        "val_loss": _number(history.val_loss[-1]) if len(history) else None,
    }
    data |= coefficients(result)
    data["out"] = str(out)
    data |= {
        "message": result.message,
        "warnings": result.warnings,
        "data": source,
        "target": target,
        "features": result.feature_names,
        "classes": result.classes_,
        "options": result.options.to_dict(),
    }
    if result.curvature is not None:
        data["curvature"] = {
            "lambda_max": result.curvature.lambda_max,
            "lambda_min": result.curvature.lambda_min,
            "condition_number": _number(result.curvature.condition_number),
            "max_stable_lr": result.curvature.max_stable_lr,
        }
    return data


def coefficients(result: FitResult) -> dict[str, Any]:
    """{'coef': {feature: value}, 'intercept': value}; per class for softmax; none for MLPs."""
    if result.coef_ is None or result.intercept_ is None:
        return {}
    names = result.expanded_names
    if result.coef_.shape[0] == 1:
        return {
            "coef": dict(zip(names, map(float, result.coef_[0]), strict=True)),
            "intercept": float(result.intercept_[0]),
        }
    labels = [str(c) for c in (result.classes_ or range(result.coef_.shape[0]))]
    return {
        "coef": {
            label: dict(zip(names, map(float, row), strict=True))
            for label, row in zip(labels, result.coef_, strict=True)
        },
        "intercept": dict(zip(labels, map(float, result.intercept_), strict=True)),
    }


def save_run(result: FitResult, out: Path, *, target: str, source: str) -> dict[str, Any]:
    """Write the three files atomically and return the summary."""
    state = {
        "format": FORMAT,
        "options": result.options.to_dict(),
        "features": result.feature_names,
        "target": target,
        "classes": result.classes_,
        "n_inputs": len(result.expanded_names),
        "n_outputs": _n_outputs(result),
        "x_scaler": result.x_scaler.to_dict() if result.x_scaler else None,
        "y_scaler": result.y_scaler.to_dict() if result.y_scaler else None,
        "model_state": result.model.state_dict(),
        "optimizer_state": result.optimizer.state_dict() if result.optimizer else None,
        "generator_state": result.generator.get_state() if result.generator else None,
        "epochs_done": len(result.history),
        "status": result.status,
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = summary(result, out, target=target, source=source)
    write_bytes(out / MODEL_FILE, buffer.getvalue())
    result.history.save(out / HISTORY_FILE)
    write_text(out / SUMMARY_FILE, json.dumps(data, indent=2) + "\n")
    return data


def load_run(run_dir: Path) -> tuple[FitResult, dict[str, Any]]:
    """Rebuild a run's model for prediction; a missing or damaged file names itself."""
    path = run_dir / MODEL_FILE
    if not path.is_file():
        raise GdlabError(f"{run_dir} is not a gdlab run folder: {MODEL_FILE} is missing.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        options = FitOptions(**state["options"])
        spec = ModelSpec.parse(options.model)
        model = build_model(
            spec,
            state["n_inputs"],
            state["n_outputs"],
            intercept=options.intercept,
            activation=options.activation,
        ).to(getattr(torch, options.dtype))
        model.load_state_dict(state["model_state"])
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, EOFError) as error:
        raise GdlabError(
            f"{path} is damaged or not a gdlab model ({type(error).__name__})."
        ) from None
    history_path = run_dir / HISTORY_FILE
    history = History.load(history_path) if history_path.is_file() else History()
    x_scaler = Scaler.from_dict(state["x_scaler"]) if state["x_scaler"] else None
    y_scaler = Scaler.from_dict(state["y_scaler"]) if state["y_scaler"] else None
    result = FitResult(
        model=model,
        history=history,
        status=state["status"],
        options=options,
        feature_names=list(state["features"]),
        coef_=None,
        intercept_=None,
        classes_=state["classes"],
        x_scaler=x_scaler,
        y_scaler=y_scaler,
    )
    return result, state


def _n_outputs(result: FitResult) -> int:
    last = [p for p in result.model.parameters()][-1]
    return int(last.shape[0])


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value
