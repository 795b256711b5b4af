"""Writes are atomic: a failure in the middle of one leaves the old file and no partial file."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from gdlab import atomic
from tests.conftest import CliRun


def failing_fsync(fd: int) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "summary.json"
    atomic.write_text(target, "old contents\n")
    monkeypatch.setattr(atomic.os, "fsync", failing_fsync)  # the data is written, not yet durable
    with pytest.raises(OSError, match="No space") as raised:
        atomic.write_text(target, "new contents, half written\n")
    assert raised.value.filename == str(target)  # the message a user sees names the file
    assert target.read_text() == "old contents\n"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_an_interrupted_rename_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "model.pt"
    atomic.write_bytes(target, b"old")

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1


def test_a_new_file_gets_the_permissions_of_a_plain_write(tmp_path: Path) -> None:
    atomic.write_text(tmp_path / "a.csv", "x\n")
    (tmp_path / "b.csv").write_text("x\n")
    assert (tmp_path / "a.csv").stat().st_mode == (tmp_path / "b.csv").stat().st_mode
    os.chmod(tmp_path / "a.csv", 0o600)
    atomic.write_text(tmp_path / "a.csv", "y\n")
    assert (tmp_path / "a.csv").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("failing_write", [1, 2, 3])
def test_a_run_whose_disk_fails_keeps_every_earlier_file(
    gdlab: Callable[..., CliRun],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    failing_write: int,
) -> None:
    """Overwrite a finished run; the n-th file write fails: every file is old or new, whole."""
    out = tmp_path / "run"
    assert gdlab("fit", "tutorial-line", "--epochs", "5", "--out", str(out)).code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = 0
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        nonlocal calls
        calls += 1
        if calls == failing_write:
            failing_fsync(fd)
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    run = gdlab("fit", "tutorial-line", "--epochs", "9", "--lr", "0.02", "--out", str(out),
                "--overwrite")  # fmt: skip
    assert run.code == 2 and "No space left on device" in run.err
    assert run.err.count("\n") == 1 and "Traceback" not in run.err
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(after) == set(before)  # no temporary file left behind
    written = ["model.pt", "history.csv", "summary.json"]
    for k, name in enumerate(written, start=1):
        if k >= failing_write:
            assert after[name] == before[name], name
        else:
            assert after[name] != before[name], name


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path: Path) -> None:
    from gdlab.outputs import claim_default_out_dir

    folders = [claim_default_out_dir(tmp_path / "runs") for _ in range(3)]
    assert len(set(folders)) == 3 and all(folder.is_dir() for folder in folders)


def test_a_run_without_out_that_fails_leaves_no_folder(
    gdlab: Callable[..., CliRun], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run = gdlab("fit", "tutorial-line", "--batch-size", "1000")  # fails after the folder is made
    assert run.code == 2 and "--batch-size 1000" in run.err
    assert list((tmp_path / "runs").iterdir()) == []


def _wide_csv(path: Path, cells: list[list[str]]) -> None:
    width = len(cells[0])
    header = [f"c{i}" for i in range(width - 1)] + ["y"]
    path.write_text("\n".join(",".join(row) for row in [header, *cells]) + "\n")


def test_a_wide_numeric_csv_reads_as_pandas_reads_it(tmp_path: Path) -> None:
    """Above WIDE_COLUMNS, numbers are parsed by numpy as one block: same frame as pandas'."""
    import numpy as np
    import pandas as pd

    from gdlab.data.files import WIDE_COLUMNS, read_table

    rng = np.random.default_rng(0)
    values = rng.normal(size=(4, WIDE_COLUMNS + 1)).round(6)
    values[1, 3] = 7  # an integer-looking cell in a float column
    path = tmp_path / "wide.csv"
    _wide_csv(path, [[repr(float(v)) for v in row] for row in values])
    frame = read_table(path)
    assert frame.shape == (4, WIDE_COLUMNS + 1)
    pd.testing.assert_frame_equal(frame, pd.read_csv(path))


def test_a_wide_csv_with_a_bad_cell_names_it(gdlab: Callable[..., CliRun], tmp_path: Path) -> None:
    from gdlab.data.files import WIDE_COLUMNS

    cells = [["1"] * (WIDE_COLUMNS + 1) for _ in range(3)]
    cells[2][5] = "abc"
    path = tmp_path / "wide.csv"
    _wide_csv(path, cells)
    run = gdlab("fit", str(path), "--target", "y", "--out", str(tmp_path / "out"))
    assert run.code == 2 and run.err.count("\n") == 1, run.err
    assert "'c5'" in run.err and "line 4" in run.err and "'abc'" in run.err
