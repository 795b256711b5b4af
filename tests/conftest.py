"""Shared helpers: run the command line in-process and capture what a user would see."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import pytest

matplotlib.use("Agg")

DATA = Path(__file__).resolve().parent / "data"
STRD = DATA / "strd"  # NIST StRD certified linear regression sets (public domain)
# Playwright drives Debian's chromium (it cannot download its own browser here); `.ci/run`
# installs chromium when it is missing.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


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


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        yield launched
        launched.close()
