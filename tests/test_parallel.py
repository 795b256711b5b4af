"""Data-parallel runs (`gdlab.train.parallel`): N processes with a gloo group on 127.0.0.1,
started as torchrun starts them (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT in the
environment), against the one-process run they must equal."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow
PYTHON = [sys.executable, "-m", "gdlab", "fit"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(ranks: int, args: list[str], cwd: Path, per_rank: dict[int, list[str]] | None = None):
    port, processes = free_port(), []
    for rank in range(ranks):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(ranks),
                   LOCAL_WORLD_SIZE=str(ranks), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   OMP_NUM_THREADS="1")  # fmt: skip
        extra = (per_rank or {}).get(rank, [])
        processes.append(
            subprocess.Popen(
                [*PYTHON, *args, *extra],
                cwd=cwd,
                env=env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    return processes


def finish(
    processes: list[subprocess.Popen[str]], timeout: float = 120
) -> list[tuple[int, str, str]]:
    done = []
    for process in processes:
        out, err = process.communicate(timeout=timeout)
        done.append((process.returncode, out, err))
    return done


def parallel_run(ranks: int, args: list[str], cwd: Path) -> dict:
    """The JSON summary rank 0 prints; every rank must succeed, the others silently."""
    results = finish(start(ranks, [*args, "--json"], cwd))
    for rank, (code, out, err) in enumerate(results):
        assert code == 0, f"rank {rank}: {err[-2000:]}"
        if rank:
            assert out == "" and err == "", f"only rank 0 prints: {err[-500:]}"
    return json.loads(results[0][1])


def one_process(args: list[str], cwd: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    done = subprocess.run([*PYTHON, *args, "--json"], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def history(folder: Path) -> dict[str, list[float]]:
    with (folder / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows] for key in ("train_loss", "grad_norm")}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("parallel")
    rng = np.random.default_rng(3)
    n = 601  # not divisible by 2 or 3: the shares differ by a row
    X = rng.normal(size=(n, 4)) * [1.0, 3.0, 0.5, 2.0] + [0.0, 1.0, -2.0, 5.0]
    y = X @ [1.5, -0.5, 2.0, 0.25] + 0.7 + 0.3 * rng.normal(size=n)
    label = (X @ [1.0, -1.0, 0.5, 0.2] + rng.normal(size=n) > 0).astype(int)
    with (folder / "d.csv").open("w") as handle:
        handle.write("a,b,c,d,y,label\n")
        for row, target, cls in zip(X, y, label, strict=True):
            handle.write(",".join(f"{v:.17g}" for v in row) + f",{target:.17g},{cls}\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {name: X[:, i] for i, name in enumerate("abcd")} | {"y": y, "label": label * 1.0}
    pq.write_table(pa.table(columns), folder / "d.parquet", row_group_size=90)
    return folder


FEATURES = ["--features", "a,b,c,d"]
CASES = {
    "exact": ["--target", "y", "--optimizer", "momentum", "--lr", "0.05", "--epochs", "300"],
    "logistic": ["--target", "label", "--model", "logistic", "--lr", "0.5", "--epochs", "60"],
    "mlp": ["--target", "y", "--model", "mlp:5", "--lr", "0.05", "--epochs", "40"],
}


@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.parametrize("case", ["exact", "logistic", "mlp"])
def test_full_batch_runs_equal_one_process(
    data: Path, tmp_path: Path, case: str, ranks: int
) -> None:
    """Least squares sums XᵀX over the ranks' shares once; other models all-reduce each
    step's gradient weighted by rows: the history and the answer are one process's."""
    args = ["d.csv", *CASES[case], *FEATURES, "--dtype", "float64"]
    alone = one_process([*args, "--out", str(tmp_path / "one")], data)
    shared = parallel_run(ranks, [*args, "--out", str(tmp_path / "many")], data)
    assert shared["path"] == alone["path"] == ("exact" if case == "exact" else "autograd")
    assert shared["epochs"] == alone["epochs"]
    np.testing.assert_allclose(shared["loss"], alone["loss"], rtol=1e-12)
    one, many = history(tmp_path / "one"), history(tmp_path / "many")
    np.testing.assert_allclose(many["train_loss"], one["train_loss"], rtol=1e-12)
    scale = max(one["grad_norm"])  # (near the optimum the norm is a difference of rounding)
    np.testing.assert_allclose(many["grad_norm"], one["grad_norm"], rtol=1e-9, atol=1e-13 * scale)
    if "coef" in alone:
        coef = [shared["coef"][name] for name in "abcd"]
        np.testing.assert_allclose(coef, [alone["coef"][name] for name in "abcd"], rtol=1e-12)


@pytest.mark.parametrize(("ranks", "model"), [(2, "logistic"), (3, "logistic"), (2, "mlp:4")])
def test_a_mini_batch_step_is_the_one_process_step_of_the_global_batch(
    data: Path, tmp_path: Path, ranks: int, model: str
) -> None:
    """N ranks at batch b cut their slices from one seeded permutation: the run equals one
    process at batch N x b, step for step (the analytic path for logistic, autograd for mlp)."""
    args = ["d.csv", "--target", "label", "--model", model, "--lr", "0.3", "--epochs", "4",
            *FEATURES, "--dtype", "float64", "--val-fraction", "0.2"]  # fmt: skip
    alone = one_process([*args, "--batch-size", str(16 * ranks), "--out", str(tmp_path / "o")],
                        data)  # fmt: skip
    shared = parallel_run(ranks, [*args, "--batch-size", "16", "--out", str(tmp_path / "m")], data)
    assert shared["path"] == alone["path"]
    np.testing.assert_allclose(shared["loss"], alone["loss"], rtol=1e-12)
    np.testing.assert_allclose(shared["val_loss"], alone["val_loss"], rtol=1e-12)
    one, many = history(tmp_path / "o"), history(tmp_path / "m")
    np.testing.assert_allclose(many["train_loss"], one["train_loss"], rtol=1e-12)


@pytest.mark.parametrize("ranks", [2, 3])
def test_a_streamed_parquet_file_is_shared_out_by_row_groups(
    data: Path, tmp_path: Path, ranks: int
) -> None:
    """Each rank reads its row groups; the first pass's sums are added over the ranks: least
    squares (exact) and full-batch logistic equal the one-process stream."""
    for case in ("exact", "logistic"):
        args = ["d.parquet", *CASES[case], *FEATURES, "--stream", "--val-fraction", "0.1"]
        alone = one_process([*args, "--out", str(tmp_path / f"o{case}")], data)
        shared = parallel_run(ranks, [*args, "--out", str(tmp_path / f"m{case}")], data)
        np.testing.assert_allclose(shared["loss"], alone["loss"], rtol=1e-12)
        np.testing.assert_allclose(shared["val_loss"], alone["val_loss"], rtol=1e-12)
        one, many = history(tmp_path / f"o{case}"), history(tmp_path / f"m{case}")
        np.testing.assert_allclose(many["train_loss"], one["train_loss"], rtol=1e-12)


def test_a_streamed_mini_batch_epoch_is_seeded_and_visits_every_row(
    data: Path, tmp_path: Path
) -> None:
    """Streamed mini-batches come from each rank's own row groups: reproducible from the
    seed, another seed another path; the reported epoch loss averages every training row."""
    args = ["d.parquet", "--target", "label", "--model", "logistic", "--lr", "0.3",
            "--epochs", "3", "--batch-size", "20", *FEATURES, "--stream"]  # fmt: skip
    first = parallel_run(2, [*args, "--out", str(tmp_path / "a")], data)
    again = parallel_run(2, [*args, "--out", str(tmp_path / "b")], data)
    other = parallel_run(2, [*args, "--seed", "5", "--out", str(tmp_path / "c")], data)
    assert first["loss"] == again["loss"]
    assert history(tmp_path / "a") == history(tmp_path / "b")
    assert other["loss"] != first["loss"]
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["epochs"] == 3


def test_rank_zero_alone_writes_and_the_default_folder_is_shared(
    data: Path, tmp_path: Path
) -> None:
    results = finish(start(2, ["d.csv", *CASES["logistic"], *FEATURES], data))
    assert [code for code, _, _ in results] == [0, 0]
    assert results[1][1] == "" and "status" in results[0][1]
    written = [p for p in (data / "runs").iterdir()]
    assert len(written) == 1 and (written[0] / "model.pt").exists()


def test_ranks_given_other_options_or_data_are_refused_before_training(
    data: Path, tmp_path: Path
) -> None:
    args = ["d.csv", *CASES["logistic"], *FEATURES, "--out", str(tmp_path / "r")]
    results = finish(start(2, args, data, per_rank={1: ["--weight-decay", "0.1"]}))
    for code, _out, err in results:
        assert code == 2
        assert err.count("\n") == 1 and "was given other options" in err, err
    assert not (tmp_path / "r" / "model.pt").exists()


def test_a_streamed_csv_or_too_few_row_groups_cannot_be_shared_out(
    data: Path, tmp_path: Path
) -> None:
    results = finish(start(2, ["d.csv", *CASES["logistic"], *FEATURES, "--stream"], data))
    assert all(code == 2 for code, _, _ in results)
    assert "convert it to Parquet" in results[0][2] and "Traceback" not in results[0][2]


def test_a_killed_rank_stops_the_others_with_its_number_and_the_run_resumes(
    data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = ["d.csv", "--target", "y", "--model", "mlp:16,16", "--lr", "0.01", "--epochs",
            "200000", *FEATURES, "--checkpoint-every", "20", "--out", str(out)]  # fmt: skip
    processes = start(2, args, data)
    deadline = time.monotonic() + 60
    while not (out / "model.pt").exists():
        assert time.monotonic() < deadline, processes[0].stderr and "no checkpoint"
        time.sleep(0.2)
    processes[1].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    code, _, err = finish(processes[:1], timeout=30)[0]
    assert time.monotonic() - killed < 30
    processes[1].wait()
    assert code == 2
    assert "rank 1 stopped answering" in err and "Traceback" not in err, err
    # the last whole checkpoint continues in one process (full batch: any number of ranks)
    env = dict(os.environ)
    env.pop("WORLD_SIZE", None)
    resumed = subprocess.run(
        [*PYTHON, "--resume", str(out), "--epochs", str(_epochs(out) + 5), "--json"],
        cwd=data, env=env, text=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["epochs"] == _epochs(out)


def _epochs(folder: Path) -> int:
    return int(json.loads((folder / "summary.json").read_text())["epochs"])


def test_torchrun_restarts_a_failed_run_from_its_last_checkpoint(
    data: Path, tmp_path: Path
) -> None:
    """The real launcher: a worker killed mid-run, torchrun --max-restarts 1 starts the
    ranks again, and gdlab continues from the run folder's last checkpoint to the budget."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
               "2", "--max-restarts", "1", "-m", "gdlab", "fit", "d.csv", "--target", "y",
               "--model", "mlp:16,16", "--lr", "0.01", "--epochs", "1500", *FEATURES,
               "--checkpoint-every", "20", "--out", str(out)]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    launcher = subprocess.Popen(command, cwd=data, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 60
    while not (out / "model.pt").exists():
        assert time.monotonic() < deadline and launcher.poll() is None, "no checkpoint"
        time.sleep(0.2)
    workers = _children(launcher.pid)
    assert len(workers) == 2
    os.kill(workers[-1], signal.SIGKILL)
    stdout, stderr = launcher.communicate(timeout=180)
    assert launcher.returncode == 0, stderr[-3000:]
    assert "resuming" in stdout and "of 1500" in stdout
    assert _epochs(out) == 1500


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


@pytest.mark.parametrize("command", ["lr", "sweep", "descend"])
def test_commands_other_than_fit_refuse_to_run_as_several_ranks(data: Path, command: str) -> None:
    """N copies of `gdlab sweep` would race for one output: refused before anything runs."""
    env = dict(os.environ, WORLD_SIZE="2", RANK="1")
    done = subprocess.run(
        [sys.executable, "-m", "gdlab", command, "d.csv", "--target", "y"],
        cwd=data, env=env, text=True, capture_output=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert f"`gdlab {command}` does not run data-parallel" in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
