"""What a run records of its model: the coefficients in the data's own units, each epoch's
parameter values for small models (the history's params columns), and the FitResult."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from gdlab.data.arrays import FloatArray
from gdlab.data.scaling import original_units
from gdlab.train.record import RawRecord

if TYPE_CHECKING:
    from gdlab.history import History
    from gdlab.problem import Problem
    from gdlab.result import FitResult
    from gdlab.train.rules import Verdict
    from gdlab.train.state import LoopState

MAX_RECORDED_PARAMETERS = 20


def coefficients(problem: Problem, net: nn.Module) -> tuple[FloatArray | None, FloatArray | None]:
    """gdlab's linear models: (coefficients (outputs, d), intercepts) in original units."""
    if problem.custom_model is not None or not isinstance(net, nn.Linear):
        return None, None
    weights = net.weight.detach().cpu().double().numpy()
    bias = (
        net.bias.detach().cpu().double().numpy()
        if net.bias is not None
        else np.zeros(weights.shape[0])
    )
    return original_units(weights, bias, problem.x_scaler, problem.y_scaler)


def recorder(problem: Problem, net: nn.Module) -> Callable[[], dict[str, float]] | None:
    """Per-epoch parameter values for models of at most MAX_RECORDED_PARAMETERS: gdlab's
    linear models by coefficient in original units, any other by raw parameter entry."""
    if sum(p.numel() for p in net.parameters()) > MAX_RECORDED_PARAMETERS:
        return None
    if isinstance(net, nn.Linear) and problem.custom_model is None:
        names = problem.model_names
        intercept_kept, classes = problem.opts.intercept, problem.classes

        def in_original_units() -> dict[str, float]:
            coef, intercept = coefficients(problem, net)
            assert coef is not None and intercept is not None
            row: dict[str, float] = {}
            for k in range(coef.shape[0]):
                prefix = "" if coef.shape[0] == 1 else f"{classes[k] if classes else k}:"
                row |= {
                    f"coef[{prefix}{name}]": float(v)
                    for name, v in zip(names, coef[k], strict=True)
                }
                if intercept_kept:
                    label = "intercept" if not prefix else f"intercept[{prefix[:-1]}]"
                    row[label] = float(intercept[k])
            return row

        return in_original_units

    named = list(net.named_parameters())
    labels = [f"{name}[{i}]" for name, p in named for i in range(p.numel())]
    return RawRecord(labels, [p for _, p in named])


def result_of(
    problem: Problem,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    path: str,
    verdict: Verdict,
    state: LoopState,
    history: History,
    message: str,
    *,
    keep_fingerprint: bool,
) -> FitResult:
    """The result of a run on `problem` (resumable: model, optimizer, RNG and loop state)."""
    from gdlab.result import FitResult

    coef, intercept = coefficients(problem, net)
    return FitResult(
        model=net,
        history=history,
        status=verdict.status,
        verdict=verdict,
        options=problem.opts,
        feature_names=problem.names,
        coef_=coef,
        intercept_=intercept,
        classes_=problem.classes,
        message=message,
        warnings=problem.warnings,
        curvature=problem.curvature,
        x_scaler=problem.x_scaler,
        y_scaler=problem.y_scaler,
        optimizer=optimizer,
        generator=generator,
        custom_model=problem.custom_model is not None,
        loop_state=state,
        fingerprint=problem.data_fingerprint if keep_fingerprint else None,
        lr_choice=problem.lr_choice,
        path=path,
        reading=problem.reading,
    )
