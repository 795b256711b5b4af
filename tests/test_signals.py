"""Real processes and real signals: Ctrl-C and SIGTERM save a resumable run; locks and races.

Each test starts `python -m gdlab fit` and waits for its first log line before signalling, so
the signal always lands during training. Mini-batches of one row make epochs long, so most
signals land inside an epoch, the hardest place to stop and resume exactly.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from gdlab.runs import load_run
from tests.conftest import CliRun

pytestmark = pytest.mark.slow

COMMON = ["--target", "y", "--batch-size", "1", "--lr", "0.001", "--optimizer", "momentum",
          "--log-every", "1", "--checkpoint-every", "5"]  # fmt: skip


@pytest.fixture
def data(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 3))
    path = tmp_path / "data.csv"
    np.savetxt(path, np.column_stack([x, x @ [1.0, 2.0, -1.0] + rng.normal(size=3000)]),
               delimiter=",", header="a,b,c,y", comments="")  # fmt: skip
    return path


def start(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gdlab", "fit", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_training(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("epoch"):
            return
    raise AssertionError(f"the run ended before training: {process.communicate()}")


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    _, err = process.communicate(timeout=60)
    return process.returncode, err


@pytest.mark.parametrize(("number", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_an_interrupted_run_that_resumes_exactly(
    data: Path, tmp_path: Path, gdlab: Callable[..., CliRun], number: int, code: int
) -> None:
    out = tmp_path / "run"
    process = start(str(data), *COMMON, "--epochs", "100000", "--out", str(out))
    wait_for_training(process)
    process.send_signal(number)
    returncode, err = finish(process)
    assert returncode == code, err
    assert f"gdlab fit --resume {out}" in err and "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    interrupted, state = load_run(out)
    done = len(interrupted.history)
    assert state["epochs_done"] == done == summary["epochs"]

    assert gdlab("fit", "--resume", str(out), "--epochs", str(done + 2)).code == 0
    assert gdlab("fit", str(data), *COMMON, "--epochs", str(done + 2), "--out",
                 str(tmp_path / "whole")).code == 0  # fmt: skip
    resumed, _ = load_run(out)
    whole, _ = load_run(tmp_path / "whole")
    assert resumed.history.to_csv() == whole.history.to_csv()
    for p, q in zip(resumed.model.parameters(), whole.model.parameters(), strict=True):
        assert p.tolist() == q.tolist()


def test_repeated_ctrl_c_during_the_save_corrupts_nothing(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    process = start(str(data), *COMMON, "--epochs", "100000", "--out", str(out))
    wait_for_training(process)
    process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 10
    while process.poll() is None and time.monotonic() < deadline:
        process.send_signal(signal.SIGINT)  # a user hammering Ctrl-C through the whole save
        time.sleep(0.002)
    returncode, err = finish(process)
    assert returncode == 130, err
    assert "still saving" in err and "Traceback" not in err
    result, state = load_run(out)  # loads: not truncated, not half-written
    assert state["status"] == "interrupted"
    assert json.loads((out / "summary.json").read_text())["epochs"] == len(result.history)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_folder_in_use_is_refused_and_a_killed_process_leaves_no_block(
    data: Path, tmp_path: Path, gdlab: Callable[..., CliRun]
) -> None:
    out = tmp_path / "run"
    holder = start(str(data), *COMMON, "--epochs", "100000", "--out", str(out))
    wait_for_training(holder)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    run = gdlab("fit", str(data), "--target", "y", "--out", str(out), "--overwrite")
    assert run.code == 2 and "in use by another gdlab process" in run.err
    resume = gdlab("fit", "--resume", str(out))
    assert resume.code == 2 and "in use" in resume.err
    holder.kill()  # SIGKILL: no handler runs, the lock file stays behind
    holder.communicate(timeout=30)
    assert (out / ".gdlab.lock").exists()
    assert {p.name for p in out.iterdir()} >= set(before)
    again = gdlab("fit", str(data), "--target", "y", "--epochs", "3", "--out", str(out),
                  "--overwrite")  # fmt: skip
    assert again.code == 0, again.err


def test_parallel_runs_into_different_folders_all_finish_intact(data: Path, tmp_path: Path) -> None:
    folders = [tmp_path / f"run{k}" for k in range(4)]
    processes = [
        start(
            str(data),
            "--target",
            "y",
            "--epochs",
            "30",
            "--patience",
            "100",
            "--batch-size",
            "100",
            "--seed",
            str(k),
            "--checkpoint-every",
            "1",
            "--out",
            str(folder),
        )
        for k, folder in enumerate(folders)
    ]
    for process in processes:
        returncode, err = finish(process)
        assert returncode == 0, err
    for k, folder in enumerate(folders):
        result, state = load_run(folder)
        assert len(result.history) == 30 and state["options"]["seed"] == k
        assert json.loads((folder / "summary.json").read_text())["epochs"] == 30


@pytest.mark.parametrize(("number", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_the_rate_is_chosen_is_answered_within_a_second(
    tmp_path: Path, number: int, code: int
) -> None:
    """The rate choice (curvature by Lanczos, range tests) takes tens of seconds for this
    network; a signal in it ends the process at once, with nothing written."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8000, 40))
    data = tmp_path / "net.npz"
    np.savez(data, **{f"x{i}": x[:, i] for i in range(40)}, y=np.tanh(x @ rng.normal(size=40)))
    out = tmp_path / "run"
    process = start(str(data), "--target", "y", "--model", "mlp:256,256", "--out", str(out))
    deadline = time.monotonic() + 60
    while not (out / ".gdlab.lock").exists():  # the folder is claimed just before the choice
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    time.sleep(2.0)  # well inside the choice, which takes over 10 s here
    process.send_signal(number)
    signalled = time.monotonic()
    assert process.stderr is not None
    line = ""
    while not line.strip():  # the answer: its line on stderr (the exit itself then unloads torch)
        line = process.stderr.readline()
        assert line or process.poll() is None, "stderr closed without an answer"
    answered = time.monotonic() - signalled
    returncode, rest = finish(process)
    assert returncode == code and line.strip() == "gdlab: interrupted; nothing was written"
    assert not rest.strip(), rest
    assert answered < 1.0, f"{answered:.2f} s"
    assert not out.exists()
