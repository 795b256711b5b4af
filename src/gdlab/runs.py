"""A run's folder: model.pt (enough to predict and to continue), history.csv, summary.json.

model.pt is the checkpoint: options, data fingerprint, scalers, model, optimizer, RNG and loop
states, and the history itself, so that one atomic file always describes one consistent point
of the run; history.csv and summary.json are views of it for people and other tools. A lock
file keeps two processes out of one folder; the operating system drops it with its process, so
a killed run never blocks the next one.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import torch

from gdlab.atomic import write_bytes, write_text
from gdlab.checkpoint import check_archive, check_structure
from gdlab.config import PARSED, FitOptions, parse_value
from gdlab.data.scaling import Scaler
from gdlab.errors import GdlabError
from gdlab.history import History
from gdlab.models import ModelSpec, build_model
from gdlab.optim.registry import optimizer_for
from gdlab.result import FitResult
from gdlab.train.state import LoopState

FORMAT = 2
MODEL_FILE, HISTORY_FILE, SUMMARY_FILE = "model.pt", "history.csv", "summary.json"
# Options a resumed run may change; every other option is part of what was trained.
RESUMABLE_OPTIONS = ("epochs", "gtol", "xtol", "tol", "patience", "device")


RUN_FILES = (MODEL_FILE, HISTORY_FILE, SUMMARY_FILE)


def summary(result: FitResult, out: Path, *, target: str, source: str) -> dict[str, Any]:
    """The JSON summary: the fields of `--json` first, then the run's details."""
    history = result.history
    kept = kept_row(result)
    data: dict[str, Any] = {
        "status": result.status,
        "epochs": history.last_epoch,
        "loss": _loss(result, kept),
        "val_loss": _number(history.val_loss[kept]) if kept is not None else None,
    }
    if kept is not None and result.options.val_fraction > 0:
        data["kept_epoch"] = history.epoch[kept]
    if result.verdict is not None:
        data["stop"] = result.verdict.to_dict()
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
        "path": result.path,
        "reading": result.reading,
    }
    if result.ranks is not None:
        data["parallel"] = result.ranks
    if result.curvature is not None:
        data["curvature"] = {
            "lambda_max": result.curvature.lambda_max,
            "lambda_min": result.curvature.lambda_min,
            "condition_number": _number(result.curvature.condition_number),
            "max_stable_lr": result.curvature.max_stable_lr,
        }
    return data


def kept_row(result: FitResult) -> int | None:
    """The history row of the model the run keeps: the best validation epoch with a split (the
    losses reported are that model's), else the last."""
    history, state = result.history, result.loop_state
    if not len(history):
        return None
    if result.options.val_fraction > 0 and state is not None and state.best_epoch in history.epoch:
        return history.epoch.index(state.best_epoch)
    return len(history) - 1


def _loss(result: FitResult, kept: int | None) -> float | None:
    """The kept model's training loss: measured at the end, else its history row's."""
    if math.isfinite(result.loss):
        return result.loss
    return _number(result.history.train_loss[kept]) if kept is not None else None


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


def save_run(
    result: FitResult, out: Path, *, target: str, source: str, data_path: str | None = None
) -> dict[str, Any]:
    """Write the checkpoint, history and summary, each atomically, and return the summary."""
    loop = result.loop_state.to_dict() if result.loop_state is not None else None
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
        "epochs_done": result.history.last_epoch,
        "status": result.status,
        "verdict": result.verdict.to_dict() if result.verdict is not None else None,
        "loop_state": loop,
        "history": result.history.to_dict(),
        "fingerprint": result.fingerprint,
        "ranks": result.ranks["ranks"] if result.ranks else 1,
        "data": source,
        "data_path": data_path,
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = summary(result, out, target=target, source=source)
    write_bytes(out / MODEL_FILE, buffer.getvalue())  # first: the views never run ahead of it
    result.history.save(out / HISTORY_FILE)
    write_text(out / SUMMARY_FILE, json.dumps(data, indent=2) + "\n")
    return data


def load_run(run_dir: Path) -> tuple[FitResult, dict[str, Any]]:
    """Rebuild a run (model, optimizer, RNG, loop state, history) to predict with or continue.

    A missing, truncated or foreign file is refused with a message naming it.
    """
    path = run_dir / MODEL_FILE
    if not path.is_file():
        raise GdlabError(f"{run_dir} is not a gdlab run folder: {MODEL_FILE} is missing.")
    try:
        check_archive(path)  # sizes and CRCs: torch.load checks neither before allocating
        # weights_only: a checkpoint holds tensors and plain values, never code to run
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError("format")
        options = FitOptions(**state["options"])
        spec = ModelSpec.parse(options.model)
        model = build_model(
            spec,
            state["n_inputs"],
            state["n_outputs"],
            intercept=options.intercept,
            activation=options.activation,
            init=options.init,
        ).to(getattr(torch, options.dtype))
        model.load_state_dict(state["model_state"])
        optimizer = optimizer_for(options, model.parameters())
        if state["optimizer_state"] is not None:
            optimizer.load_state_dict(state["optimizer_state"])
        generator = torch.Generator()
        if state["generator_state"] is not None:
            generator.set_state(state["generator_state"])
        loop = LoopState.from_dict(state["loop_state"]) if state["loop_state"] else None
        history = History.from_dict(state["history"])
        x_scaler = Scaler.from_dict(state["x_scaler"]) if state["x_scaler"] else None
        y_scaler = Scaler.from_dict(state["y_scaler"]) if state["y_scaler"] else None
        check_structure(state, history, x_scaler, y_scaler, spec.degree)
    except GdlabError:
        raise
    except Exception as error:  # any unpickling failure means the same thing to the user
        raise GdlabError(
            f"{path} is damaged, truncated or not a gdlab {FORMAT} checkpoint "
            f"({type(error).__name__}); nothing was changed. Start a new run in another folder."
        ) from None
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
        optimizer=optimizer,
        generator=generator,
        loop_state=loop,
        fingerprint=state["fingerprint"],
    )
    return result, state


def read_summary(run_dir: Path) -> dict[str, Any]:
    """summary.json as a dict, or the damaged-file message."""
    path = run_dir / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text())
        if not isinstance(summary, dict) or not isinstance(summary.get("options", {}), dict):
            raise ValueError("not a summary")
        if not isinstance(summary.get("warnings", []), list):
            raise ValueError("warnings")
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise GdlabError(
            f"{path} is missing or damaged ({type(error).__name__}); rerun the fit, or "
            f"`gdlab fit --resume {run_dir}` rewrites it."
        ) from None
    return summary


def resume_options(
    state: dict[str, Any], given: dict[str, Any], path: Path
) -> tuple[FitOptions, list[str]]:
    """The saved options with the resumable ones the command gives; any other change refused.

    Returns the options and notes for the user (e.g. a schedule that depends on --epochs).
    """
    saved = dict(state["options"])
    given = {name: parse_value(name, v) if isinstance(v, str) and name in PARSED else v
             for name, v in given.items()}  # fmt: skip
    for name, value in given.items():
        if name in RESUMABLE_OPTIONS or value == saved[name]:
            continue
        raise GdlabError(
            f"{path} was trained with `{name}={saved[name]}`, this command gives {value}; only "
            f"{', '.join(f'`{o}`' for o in RESUMABLE_OPTIONS)} may change on `resume`. Drop "
            f"`{name}`, or start a new run."
        )
    options = FitOptions(**(saved | {k: v for k, v in given.items() if k in RESUMABLE_OPTIONS}))
    done = int(state["epochs_done"])
    if state["status"] == "diverged":
        raise GdlabError(
            f"{path} is from a diverged run; resuming would diverge again. Start a new run with a "
            f"lower `lr`."
        )
    if isinstance(options.epochs, int) and options.epochs < done:
        raise GdlabError(
            f"`epochs={options.epochs}` is below the {done} epochs {path.parent} has done; give "
            f"`epochs` above {done} to train further."
        )
    notes = []
    if options.schedule == "cosine" and options.epochs != saved["epochs"] and done:
        notes.append(
            f"the cosine schedule now spans {options.epochs} epochs; the {done} epochs already "
            f"done followed a {saved['epochs']}-epoch schedule."
        )
    return options, notes


def _n_outputs(result: FitResult) -> int:
    last = [p for p in result.model.parameters()][-1]
    return int(last.shape[0])


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value
