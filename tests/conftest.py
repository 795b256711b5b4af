"""Shared helpers: run the command line in-process and capture what a user would see."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

DATA = Path(__file__).resolve().parent / "data"
STRD = DATA / "strd"  # NIST StRD certified linear regression sets (public domain)


@dataclass
class CliRun:
    code: int
    out: str
    err: str


@pytest.fixture
def gdlab(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliRun]:
    """Call `gdlab ARGS...` through the real entry point; exit codes come back, not raised."""
    from gdlab.cli import main

    def run(*args: str) -> CliRun:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        captured = capsys.readouterr()
        return CliRun(code, captured.out, captured.err)

    return run
