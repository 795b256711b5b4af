"""Stopping and resuming: a run continued from any point equals one uninterrupted run, bit for bit.

"Any point" includes the middle of an epoch (a stop request is honoured after the next step),
and every piece of state: momentum and Adam buffers, the shuffling RNG, early-stopping counters.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import gdlab
from gdlab.data.builtin import DATASETS
from gdlab.data.columns import select
from gdlab.data.files import read_table
from gdlab.runs import load_run, save_run
from tests.conftest import CliRun

pytestmark = pytest.mark.filterwarnings("ignore::gdlab.GdlabWarning")


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    X, y, _ = select(read_table(DATASETS[name].path), name, DATASETS[name].target, None)
    return X, y


def after_steps(k: int) -> Callable[[], bool]:
    """A stop request that arrives after k optimisation steps, like a Ctrl-C would."""
    count = 0

    def stop() -> bool:
        nonlocal count
        count += 1
        return count >= k

    return stop


def assert_same_run(a: gdlab.FitResult, b: gdlab.FitResult) -> None:
    assert a.history.to_csv() == b.history.to_csv()  # repr of every float: exact
    assert a.history.epoch == list(range(1, len(a.history) + 1))
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert a.status == b.status


SETTINGS = {
    "full batch gd": {"lr": 0.05},
    "shuffled momentum": {"optimizer": "momentum", "lr": 0.01, "batch_size": 7},
    "adam with validation": {
        "optimizer": "adam",
        "lr": 0.01,
        "batch_size": 16,
        "val_fraction": 0.25,
        "tol": 1e-4,
        "patience": 3,
    },
    "mlp, cosine, weight decay": {
        "model": "mlp:5",
        "optimizer": "sgd",
        "lr": 0.05,
        "batch_size": 10,
        "schedule": "cosine",
        "weight_decay": 1e-3,
    },
}


@pytest.mark.parametrize("stop_after", [3, 58, 200])
@pytest.mark.parametrize("name", list(SETTINGS))
def test_a_stopped_and_resumed_run_equals_one_uninterrupted_run(name: str, stop_after: int) -> None:
    X, y = load("noisy-plane")
    options = {"epochs": 25, "seed": 4, **SETTINGS[name]}
    whole = gdlab.fit(X, y, stop=lambda: False, **options)
    first = gdlab.fit(X, y, stop=after_steps(stop_after), **options)
    if first.status == "interrupted":
        assert len(first.history) < len(whole.history)
    resumed = gdlab.fit(X, y, resume=first, stop=lambda: False, **options)
    assert_same_run(resumed, whole)


def test_resuming_through_the_checkpoint_file_is_exact(tmp_path: Path) -> None:
    X, y = load("noisy-plane")
    options = {"optimizer": "adam", "lr": 0.02, "batch_size": 9, "epochs": 10, "seed": 1,
               "val_fraction": 0.2}  # fmt: skip
    whole = gdlab.fit(X, y, stop=lambda: False, **options)
    first = gdlab.fit(X, y, stop=after_steps(31), **options)  # inside epoch 2
    assert first.status == "interrupted" and first.loop_state is not None
    assert first.loop_state.position > 0
    save_run(first, tmp_path, target="y", source="noisy-plane")
    loaded, _ = load_run(tmp_path)
    resumed = gdlab.fit(X, y, resume=loaded, stop=lambda: False, **options)
    assert_same_run(resumed, whole)


def test_checkpoints_are_written_every_n_epochs_and_each_one_resumes(tmp_path: Path) -> None:
    X, y = load("noisy-plane")
    seen: list[int] = []

    def checkpoint(result: gdlab.FitResult) -> None:
        seen.append(len(result.history))
        if len(result.history) == 6:
            save_run(result, tmp_path, target="y", source="noisy-plane")

    options = {"lr": 0.01, "batch_size": 20, "epochs": 13, "optimizer": "nesterov"}
    whole = gdlab.fit(X, y, stop=lambda: False, checkpoint=checkpoint, checkpoint_every=3,
                      **options)  # fmt: skip
    assert seen == [3, 6, 9, 12]
    loaded, state = load_run(tmp_path)
    assert state["status"] == "running" and len(loaded.history) == 6
    resumed = gdlab.fit(X, y, resume=loaded, stop=lambda: False, **options)
    assert_same_run(resumed, whole)


def test_cli_resume_to_more_epochs_matches_one_longer_run(
    gdlab_cli: Callable[..., CliRun], tmp_path: Path
) -> None:
    common = ["noisy-plane", "--optimizer", "momentum", "--batch-size", "8", "--lr", "0.01"]
    assert gdlab_cli("fit", *common, "--epochs", "7", "--out", str(tmp_path / "a")).code == 0
    run = gdlab_cli("fit", "--resume", str(tmp_path / "a"), "--epochs", "20")
    assert run.code == 0 and "resuming" in run.out
    assert gdlab_cli("fit", *common, "--epochs", "20", "--out", str(tmp_path / "b")).code == 0
    for name in ("history.csv", "summary.json"):
        a = (tmp_path / "a" / name).read_text().replace(str(tmp_path / "a"), "OUT")
        b = (tmp_path / "b" / name).read_text().replace(str(tmp_path / "b"), "OUT")
        assert a == b
    first, _ = load_run(tmp_path / "a")
    second, _ = load_run(tmp_path / "b")
    assert_same_run(first, second)


@pytest.fixture
def gdlab_cli(gdlab: Callable[..., CliRun]) -> Callable[..., CliRun]:
    return gdlab


@pytest.fixture
def finished_run(gdlab_cli, tmp_path: Path) -> Path:
    data = tmp_path / "d.csv"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2))
    np.savetxt(data, np.column_stack([x, x @ [1.0, -2.0] + 0.5]), delimiter=",",
               header="a,b,y", comments="")  # fmt: skip
    assert gdlab_cli("fit", str(data), "--target", "y", "--epochs", "5", "--lr", "0.01",
                     "--out", str(tmp_path / "run")).code == 0  # fmt: skip
    return tmp_path / "run"


def flip_tensor_bit(checkpoint: bytes) -> bytes:
    """One bit flipped inside the first tensor's stored bytes: the archive still opens and
    torch.load alone would load the wrong number."""
    import io
    import zipfile

    member = next(i for i in zipfile.ZipFile(io.BytesIO(checkpoint)).infolist()
                  if "/data/" in i.filename)  # fmt: skip
    header = member.header_offset
    name_length = int.from_bytes(checkpoint[header + 26 : header + 28], "little")
    extra_length = int.from_bytes(checkpoint[header + 28 : header + 30], "little")
    start = header + 30 + name_length + extra_length
    damaged = bytearray(checkpoint)
    damaged[start + 2] ^= 0x40
    return bytes(damaged)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda b: b[: len(b) // 2], ["model.pt", "damaged, truncated"]),
        (lambda b: b"\x00garbage" * 50, ["model.pt", "damaged"]),
        (lambda b: b"", ["model.pt"]),
        (lambda b: flip_tensor_bit(b), ["model.pt", "damaged"]),
    ],
)
def test_a_damaged_checkpoint_is_refused_and_nothing_changes(
    gdlab_cli, finished_run: Path, damage: Callable[[bytes], bytes], words: list[str]
) -> None:
    checkpoint = finished_run / "model.pt"
    checkpoint.write_bytes(damage(checkpoint.read_bytes()))
    before = snapshot(finished_run)
    run = gdlab_cli("fit", "--resume", str(finished_run), "--epochs", "10")
    assert run.code == 2 and run.err.count("\n") == 1 and "Traceback" not in run.err
    assert all(word in run.err for word in words)
    assert snapshot(finished_run) == before


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--model", "mlp:4"], ["--model linear", "mlp:4", "Drop --model"]),
        (["--lr", "0.5"], ["--lr 0.01", "0.5"]),
        (["--features", "a"], ["--features", "['a', 'b']"]),
        (["--target", "a"], ["--target y"]),
        (["--epochs", "3"], ["--epochs 3", "5 epochs"]),
    ],
)
def test_a_checkpoint_that_does_not_fit_the_options_is_refused(
    gdlab_cli, finished_run: Path, argv: list[str], words: list[str]
) -> None:
    before = snapshot(finished_run)
    run = gdlab_cli("fit", "--resume", str(finished_run), *argv)
    assert run.code == 2 and run.err.count("\n") == 1, run.err
    assert all(word in run.err for word in words), run.err
    assert snapshot(finished_run) == before


def test_other_data_is_refused_on_resume(gdlab_cli, finished_run: Path, tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    lines = data.read_text().splitlines()
    data.write_text("\n".join([*lines[:-1], "0,0,0"]) + "\n")  # one value changed
    before = snapshot(finished_run)
    run = gdlab_cli("fit", "--resume", str(finished_run), "--epochs", "9")
    assert run.code == 2 and "not the data" in run.err and str(data) in run.err
    assert snapshot(finished_run) == before
    extra = tmp_path / "e.csv"
    extra.write_text("a,y\n1,2\n2,3\n")
    run = gdlab_cli("fit", str(extra), "--resume", str(finished_run), "--epochs", "9")
    assert run.code == 2 and "'b'" in run.err
    assert snapshot(finished_run) == before


def test_a_finished_run_resumes_with_its_own_data_path_from_elsewhere(
    gdlab_cli, finished_run: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = gdlab_cli("fit", "--resume", str(finished_run), "--epochs", "8", "--json")
    assert run.code == 0, run.err
    summary = json.loads(run.out)
    assert summary["epochs"] == 8


def _crafted(state: dict, change: str) -> dict:
    import math as _math

    if change == "missing key":
        del state["history"]
    elif change == "wrong type":
        state["features"] = 3
    elif change == "unequal history":
        state["history"]["train_loss"] = state["history"]["train_loss"][:-1]
    elif change == "nan history":
        state["history"]["train_loss"][0] = _math.nan
    elif change == "scaler shape":
        state["x_scaler"]["shift"] = [0.0, 0.0, 0.0]
    return state


@pytest.mark.parametrize(
    "change", ["missing key", "wrong type", "unequal history", "nan history", "scaler shape"]
)
@pytest.mark.parametrize("command", ["resume", "predict", "plot", "report"])
def test_a_crafted_checkpoint_is_one_message_everywhere(
    gdlab_cli, finished_run: Path, tmp_path: Path, change: str, command: str
) -> None:
    import torch

    checkpoint = finished_run / "model.pt"
    state = torch.load(checkpoint, weights_only=True)
    torch.save(_crafted(state, change), checkpoint)  # valid CRCs: only the structure is wrong
    before = snapshot(finished_run)
    data = tmp_path / "d.csv"
    argv = {
        "resume": ["fit", "--resume", str(finished_run), "--epochs", "10"],
        "predict": ["predict", str(finished_run), str(data)],
        "plot": ["plot", str(finished_run)],
        "report": ["report", str(finished_run)],
    }[command]
    run = gdlab_cli(*argv)
    assert run.code == 2 and run.err.count("\n") == 1 and "Traceback" not in run.err, run.err
    assert "model.pt" in run.err and "damaged" in run.err
    assert snapshot(finished_run) == before


def test_a_damaged_summary_is_one_message(gdlab_cli, finished_run: Path) -> None:
    (finished_run / "summary.json").write_text('{"status": ')
    run = gdlab_cli("report", str(finished_run))
    assert run.code == 2 and run.err.count("\n") == 1 and "summary.json" in run.err
    assert not (finished_run / "report.html").exists()
