"""Nothing the user had is overwritten without --overwrite, and an input never, even with it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import filelock
import numpy as np
import pytest

from tests.conftest import CliRun


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 1))
    path = tmp_path / "data.csv"
    np.savetxt(path, np.column_stack([x, 2 * x[:, 0] + 1]), delimiter=",", header="x,y",
               comments="")  # fmt: skip
    return path


@pytest.fixture
def run_dir(gdlab: Callable[..., CliRun], tmp_path: Path, data_file: Path) -> Path:
    out = tmp_path / "run"
    assert gdlab("fit", str(data_file), "--target", "y", "--out", str(out)).code == 0
    return out


def snapshot(*paths: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in paths}


def refused(run: CliRun, *words: str) -> bool:
    one_line = run.err.count("\n") == 1 and "Traceback" not in run.err
    return run.code == 2 and one_line and all(word in run.err for word in words)


def test_report_refuses_an_existing_file_without_overwrite(gdlab, run_dir: Path, tmp_path):
    mine = tmp_path / "notes.html"
    mine.write_text("my notes")
    run = gdlab("report", str(run_dir), "--out", str(mine))
    assert refused(run, "exists", "--overwrite") and mine.read_text() == "my notes"
    assert gdlab("report", str(run_dir), "--out", str(mine), "--overwrite").code == 0
    assert "plotly" in mine.read_text()


@pytest.mark.parametrize("name", ["model.pt", "history.csv", "summary.json"])
def test_report_never_replaces_the_runs_own_files(gdlab, run_dir: Path, name: str) -> None:
    before = snapshot(*sorted(run_dir.iterdir()))
    run = gdlab("report", str(run_dir), "--out", str(run_dir / name), "--overwrite")
    assert refused(run, "which this command reads") and snapshot(*before) == before


def test_report_never_replaces_the_input_data(gdlab, run_dir: Path, data_file: Path) -> None:
    before = data_file.read_bytes()
    link = data_file.parent / "link.csv"
    link.symlink_to(data_file)  # another spelling of the same file
    run = gdlab("report", str(run_dir), "--out", str(link), "--overwrite")
    assert refused(run, "which this command reads") and data_file.read_bytes() == before


def test_fit_never_writes_its_run_over_the_input(gdlab, run_dir: Path) -> None:
    history = run_dir / "history.csv"
    before = snapshot(*sorted(run_dir.iterdir()))
    run = gdlab("fit", str(history), "--target", "train_loss", "--out", str(run_dir),
                "--overwrite")  # fmt: skip
    assert refused(run, "would replace", "history.csv") and snapshot(*before) == before


def test_predict_never_writes_over_its_input(gdlab, run_dir: Path, data_file: Path) -> None:
    before = data_file.read_bytes()
    run = gdlab("predict", str(run_dir), str(data_file), "--out", str(data_file), "--overwrite")
    assert refused(run, "which this command reads") and data_file.read_bytes() == before


@pytest.mark.parametrize("command", ["lr", "descend"])
def test_lr_and_descend_respect_a_folder_in_use(gdlab, tmp_path: Path, command: str) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    holder = filelock.FileLock(out / ".gdlab.lock", timeout=0)
    argv = ["lr", "noisy-plane"] if command == "lr" else ["descend", "(3+3*a)**2"]
    with holder:
        run = gdlab(*argv, "--out", str(out), "--overwrite")
    assert refused(run, "in use by another gdlab process")
    assert [p.name for p in out.iterdir()] == [".gdlab.lock"]
