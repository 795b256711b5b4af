"""Least squares against NIST StRD certified values, through the command line in float64."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import STRD, CliRun


def certified(name: str) -> dict[str, float]:
    values: dict[str, float] = {}
    section = None
    for line in (STRD / f"{name}.txt").read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "certified" and line and not line.startswith("#"):
            key, estimate, *_ = line.split()
            if key.startswith("B"):
                values[key] = float(estimate)
    return values


def log_relative_error(estimate: float, exact: float) -> float:
    """NIST's LRE: the number of correct significant digits."""
    if estimate == exact:
        return 16.0
    return -math.log10(abs(estimate - exact) / abs(exact))


def fit_json(gdlab: Callable[..., CliRun], tmp_path: Path, name: str, *args: str) -> dict:
    run = gdlab(
        "fit", str(STRD / f"{name}.csv"), "--target", "y", "--dtype", "float64",
        "--out", str(tmp_path / name), "--json", *args,
    )  # fmt: skip
    assert run.code == 0, run.err
    return dict(json.loads(run.out))


# Each set with its model options and a rate near 2/(λmax + λmin) of its standardized Hessian.
CASES = {
    "Norris": ("--lr", "0.4", "--epochs", "60"),
    "Pontius": ("--model", "poly:2", "--lr", "0.45", "--epochs", "1500"),
    "NoInt1": ("--no-intercept", "--lr", "0.4", "--epochs", "60"),
    "NoInt2": ("--no-intercept", "--lr", "0.4", "--epochs", "60"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_reaches_certified_values_to_nine_digits(gdlab, tmp_path: Path, name: str) -> None:
    summary = fit_json(gdlab, tmp_path, name, *CASES[name], "--patience", "100000", "--xtol", "0")
    expected = certified(name)
    coef = list(summary["coef"].values())
    estimates = ([summary["intercept"]] if "B0" in expected else []) + coef
    keys = sorted(expected)
    assert len(estimates) == len(keys)
    for key, estimate in zip(keys, estimates, strict=True):
        assert log_relative_error(estimate, expected[key]) >= 9, (key, estimate, expected[key])


@pytest.mark.parametrize("name", ["Filip", *(f"Wampler{i}" for i in range(1, 6))])
def test_ill_conditioned_sets_finish_with_a_warning(gdlab, tmp_path: Path, name: str) -> None:
    degree = 10 if name == "Filip" else 5
    summary = fit_json(
        gdlab, tmp_path, name, "--model", f"poly:{degree}", "--lr", "0.05", "--epochs", "300"
    )
    assert summary["status"] in ("converged", "max_epochs")
    assert all(math.isfinite(v) for v in summary["coef"].values())
    saved = json.loads((tmp_path / name / "summary.json").read_text())
    assert any("ill-conditioned" in warning for warning in saved["warnings"])
    assert saved["curvature"]["condition_number"] > 1e5
