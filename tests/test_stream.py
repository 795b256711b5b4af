"""Streamed files (`gdlab.data.stream`, `gdlab.data.passes`, `gdlab.train.streamed`) give the
numbers the same data give in memory, in tiny blocks and row groups so that every pass spans
many of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import gdlab
from gdlab.config import make_options
from gdlab.data.stream import TableFile, held_out
from gdlab.errors import GdlabError
from gdlab.losses import make_loss
from gdlab.problem import Problem
from tests.conftest import CliRun

STRD = Path(__file__).parent / "data" / "strd"
warnings.filterwarnings("ignore", category=gdlab.GdlabWarning)


def frame(n: int = 1500, seed: int = 0) -> pd.DataFrame:
    """Three features on different scales and offsets (standardizing matters), a noisy
    linear target y and a class label k."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3)) * [1.0, 10.0, 100.0] + [0.0, 5.0, -3.0]
    y = X @ [1.0, 0.2, -0.01] + 0.5 + 0.3 * rng.standard_normal(n)
    return pd.DataFrame(X, columns=["a", "b", "c"]).assign(y=y, k=(y > 0.5).astype(int))


@pytest.fixture(params=["parquet", "csv"])
def files(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., TableFile]:
    """A function (target, features) -> the table streamed in many small blocks."""
    data = frame()
    path = tmp_path / f"data.{request.param}"
    if request.param == "parquet":
        data.to_parquet(path, row_group_size=200)
    else:
        data.to_csv(path, index=False)

    def table(target: str = "y", features: list[str] | None = None) -> TableFile:
        return TableFile(path, target, features or ["a", "b", "c"], block_bytes=3000,
                         batch_rows=97, shuffle_rows=400)  # fmt: skip

    return table


def in_memory(target: str = "y") -> tuple[np.ndarray, np.ndarray]:
    data = frame()
    return data[["a", "b", "c"]].to_numpy(), data[target].to_numpy(float)


def test_blocks_hold_every_row_once_in_order_with_their_row_numbers(files) -> None:
    table = files()
    blocks = list(table.blocks())
    assert len(blocks) > 5
    X, y = in_memory()
    np.testing.assert_array_equal(np.concatenate([b.X for b in blocks]), X)
    np.testing.assert_array_equal(np.concatenate([b.y for b in blocks]), y)
    assert [b.first for b in blocks] == np.cumsum([0] + [len(b) for b in blocks[:-1]]).tolist()


@pytest.mark.parametrize(
    "options",
    [
        {"optimizer": "momentum"},
        {"optimizer": "adam", "intercept": False},
        {"optimizer": "adam", "model": "poly:2"},
        {"optimizer": "gd"},  # the closed form
    ],
    ids=["momentum", "no-intercept", "poly2", "closed-form"],
)
def test_least_squares_streamed_equals_in_memory_to_1e12(files, options) -> None:
    opts = {"epochs": 300, "lr": 0.05} | options
    memory = gdlab.fit(*in_memory(), **opts)
    streamed = gdlab.fit(files(), None, **opts)
    assert streamed.path == memory.path and streamed.path in ("exact", "closed-form")
    assert streamed.reading.startswith("streamed from") and memory.reading == "in memory"
    np.testing.assert_allclose(streamed.coef_, memory.coef_, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(streamed.intercept_, memory.intercept_, rtol=1e-12, atol=1e-14)
    assert streamed.loss == pytest.approx(memory.loss, rel=1e-12)
    assert len(streamed.history) == len(memory.history) and streamed.status == memory.status


def test_a_stream_is_read_by_one_pass_before_the_exact_path(files, monkeypatch) -> None:
    """Least squares reads the file once (statistics, checks and moments together); no epoch
    reads it again."""
    table, passes = files(), []
    blocks = table.blocks
    monkeypatch.setattr(table, "blocks", lambda *a: passes.append(1) or blocks(*a))
    result = gdlab.fit(table, None, epochs=500, lr=0.05, optimizer="momentum")
    assert result.path == "exact" and len(result.history) > 10 and passes == [1]


def test_nist_longley_streamed_reaches_the_same_coefficients(tmp_path: Path) -> None:
    """Longley (condition number about 10^7 before standardizing): the pass about a
    provisional centre keeps the digits a second pass about the mean would."""
    data = pd.read_csv(STRD / "Longley.csv")
    path = tmp_path / "longley.parquet"
    data.to_parquet(path, row_group_size=3)
    features = [f"x{i}" for i in range(1, 7)]
    memory = gdlab.fit(data[features].to_numpy(), data["y"].to_numpy(float), lr=0.1)
    streamed = gdlab.fit(TableFile(path, "y", features, batch_rows=2), None, lr=0.1)
    np.testing.assert_allclose(streamed.coef_, memory.coef_, rtol=1e-9)
    assert streamed.status == memory.status == "converged"


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
@pytest.mark.parametrize("val_fraction", [0.0, 0.25])
def test_a_stream_finds_the_constant_columns_in_memory_finds(
    tmp_path: Path, suffix: str, val_fraction: float
) -> None:
    """`fixed` holds one value in every row; `late` holds one value through the first blocks
    and another in the last rows, so it is not constant."""
    data = frame()
    data["fixed"], data["late"] = 7.25, -3.0
    data.loc[1400:, "late"] = -2.0
    path = tmp_path / f"data.{suffix}"
    data.to_parquet(path, row_group_size=200) if suffix == "parquet" else data.to_csv(
        path, index=False)  # fmt: skip
    features = ["a", "fixed", "late"]
    options = {"epochs": 50, "lr": 0.05, "val_fraction": val_fraction}
    found = []
    table = TableFile(path, "y", features, block_bytes=3000, batch_rows=97)
    for source in ((data[features], data["y"].to_numpy(float)), (table, None)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = gdlab.fit(*source, **options)
        found.append([str(w.message) for w in caught if "constant" in str(w.message)])
        assert result.coef_[0][1] == 0.0 and result.coef_[0][2] != 0.0
    assert found[0] == found[1] and len(found[1]) == 1
    assert found[1][0].startswith("feature fixed is constant")


@pytest.mark.parametrize(("model", "target"), [("logistic", "k"), ("mlp:4", "y")])
def test_full_batch_gradient_summed_over_blocks_equals_in_memory(files, model, target) -> None:
    opts = make_options(model=model, lr=0.1)
    memory = Problem(opts, *in_memory(target), ["a", "b", "c"], custom_model=None)
    streamed = Problem(opts, files(target), None, ["a", "b", "c"], custom_model=None)
    loss = make_loss(opts.resolved_loss)
    net, _, data = memory.initial_problem()
    loss(net(data.X), data.y).backward()
    expected = [p.grad.clone() for p in net.parameters()]
    from gdlab.train.streamed import StreamedGradient

    net.zero_grad()
    value = StreamedGradient(net, loss, streamed.stream(loss, torch.device("cpu"))).step_gradient(
        None
    )
    for p, grad in zip(net.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, grad, rtol=1e-12, atol=1e-15)
    assert value == pytest.approx(float(loss(net(data.X), data.y)), rel=1e-12)


def test_full_batch_logistic_run_streamed_equals_in_memory(files) -> None:
    opts = {"model": "logistic", "epochs": 60, "lr": 0.5}
    memory = gdlab.fit(*in_memory("k"), **opts)
    streamed = gdlab.fit(files("k"), None, **opts)
    np.testing.assert_allclose(streamed.history.train_loss, memory.history.train_loss, rtol=1e-12)
    np.testing.assert_allclose(streamed.coef_, memory.coef_, rtol=1e-11)


def parameters(result) -> list[torch.Tensor]:
    return [p.detach().clone() for p in result.model.parameters()]


def test_mini_batch_stream_is_reproducible_and_resumes_bit_for_bit(files) -> None:
    opts = {"model": "mlp:3", "epochs": 3, "lr": 0.01, "batch_size": 64, "val_fraction": 0.1}
    first, again = gdlab.fit(files(), None, **opts), gdlab.fit(files(), None, **opts)
    assert all(map(torch.equal, parameters(first), parameters(again)))
    calls = iter(range(10**6))
    stopped = gdlab.fit(files(), None, stop=lambda: next(calls) == 30, **opts)
    assert stopped.status == "interrupted" and stopped.loop_state.position > 0  # mid-epoch
    resumed = gdlab.fit(files(), None, resume=stopped, **opts)
    assert all(map(torch.equal, parameters(first), parameters(resumed)))
    assert resumed.history.val_loss == first.history.val_loss


def test_a_shuffled_epoch_visits_every_training_row_once_in_batches(files) -> None:
    table = files()
    problem = Problem(make_options(batch_size=50, val_fraction=0.2), table, None, [],
                      custom_model=None)  # fmt: skip
    stream = problem.stream(make_loss("mse"), torch.device("cpu"))
    order = torch.tensor([7])
    seen, begin = [], 0
    while begin < len(stream):
        batch = stream.batch(order, begin, 50)
        seen.append(batch.y)
        begin += len(batch)
    y = torch.cat(seen)[:, 0]
    assert [len(b) for b in seen[:-1]] == [50] * (len(seen) - 1)
    train = np.concatenate([b.y[~held_out(b.first, len(b), 0.2, 0)] for b in table.blocks()])
    expected = np.sort(problem.y_scaler.transform(train[:, None])[:, 0])
    np.testing.assert_allclose(np.sort(y.numpy()), expected, rtol=1e-15)
    assert not np.array_equal(y.numpy(), problem.y_scaler.transform(train[:, None])[:, 0])


def test_the_validation_split_is_by_hashed_row_number_and_the_loss_is_its_own() -> None:
    first = held_out(0, 100_000, 0.2, seed=3)
    assert abs(first.mean() - 0.2) < 0.01
    np.testing.assert_array_equal(held_out(500, 1000, 0.2, seed=3), first[500:1500])
    assert not np.array_equal(held_out(0, 1000, 0.2, seed=4), first[:1000])
    assert not held_out(0, 1000, 0.0, seed=3).any()


def test_validation_loss_of_a_stream_is_the_loss_on_its_held_out_rows(files) -> None:
    table = files()
    result = gdlab.fit(table, None, epochs=50, lr=0.05, optimizer="adam", val_fraction=0.25)
    rows = np.concatenate([b.first + np.flatnonzero(held_out(b.first, len(b), 0.25, 0))
                           for b in table.blocks()])  # fmt: skip
    X, y = in_memory()
    predicted = result.predict(X[rows])
    kept = result.loop_state.best_epoch - 1
    assert result.history.val_loss[kept] == pytest.approx(np.mean((predicted - y[rows]) ** 2),
                                                           rel=1e-10)  # fmt: skip


def bad_file(tmp_path: Path, suffix: str, row: int) -> Path:
    data = frame()
    data.loc[row, "b"] = np.nan
    path = tmp_path / f"bad{suffix}"
    data.to_parquet(path, row_group_size=100) if suffix == ".parquet" else data.to_csv(
        path, index=False
    )
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_bad_row_deep_in_the_file_stops_before_training_writing_nothing(
    gdlab: Callable[..., CliRun], tmp_path: Path, suffix: str
) -> None:
    path = bad_file(tmp_path, suffix, 1400)
    out = tmp_path / "run"
    run = gdlab("fit", str(path), "--target", "y", "--features", "a,b,c", "--stream",
                "--out", str(out), "--epochs", "5")  # fmt: skip
    line = " (line 1402)" if suffix == ".csv" else ""
    assert run.code == 2 and run.err.count("\n") == 1
    assert f"column 'b', row 1401{line}: value is missing (NaN)" in run.err
    assert not out.exists() or not any(out.iterdir())


def test_a_stream_names_a_missing_or_non_numeric_column(tmp_path: Path) -> None:
    data = frame().astype({"c": object})
    data.loc[900, "c"] = "abc"
    path = tmp_path / "text.csv"
    data.to_csv(path, index=False)
    with pytest.raises(GdlabError, match=r"column 'c', row 901 \(line 902\): non-numeric value"):
        gdlab.fit(TableFile(path, "y", ["a", "b", "c"], block_bytes=2000), None)
    with pytest.raises(GdlabError, match="feature column 'z' not found; the columns are"):
        TableFile(path, "y", ["a", "z"])
    with pytest.raises(GdlabError, match="only CSV and Parquet files stream"):
        np.save(tmp_path / "a.npy", np.ones((3, 2)))
        TableFile(tmp_path / "a.npy", "c0")


@pytest.mark.parametrize("stream", [[], ["--stream"]], ids=["memory", "streamed"])
def test_an_unreadable_parquet_file_says_why_and_what_to_do(
    gdlab: Callable[..., CliRun], tmp_path: Path, stream: list[str]
) -> None:
    whole = tmp_path / "whole.parquet"  # values that compress: snappy can tell its damage
    pd.DataFrame({"x": np.arange(20000.0) % 7, "y": np.arange(20000.0) % 5}).to_parquet(whole)
    data = whole.read_bytes()
    cases = {
        "text.parquet": frame().to_csv(index=False).encode(),  # a CSV named .parquet
        "cut.parquet": data[: len(data) // 2],  # a copy cut off
        "damaged.parquet": data[:4] + b"\x07" * 996 + data[1000:],  # pages overwritten
    }
    said = {}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        run = gdlab("fit", str(tmp_path / name), "--target", "y", *stream)
        assert run.code == 2 and "Traceback" not in run.err
        (said[name],) = run.err.strip().splitlines()
        assert (tmp_path / name).read_bytes() == content
    footer = "does not end with a Parquet footer: it was cut off, or is in another format"
    assert footer in said["text.parquet"] and footer in said["cut.parquet"]
    assert said["text.parquet"].endswith("or if it holds CSV text, name it .csv.")
    assert f"{tmp_path / 'damaged.parquet'} is not a readable Parquet file (" in said[
        "damaged.parquet"]  # fmt: skip
    assert said["damaged.parquet"].endswith("); write it again from its source.")


@pytest.mark.parametrize("stream", [[], ["--stream"]], ids=["memory", "streamed"])
def test_a_page_whose_checksum_fails_is_refused_not_read_as_wrong_values(
    gdlab: Callable[..., CliRun], tmp_path: Path, stream: list[str]
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = np.arange(2000.0)
    table = pa.table({"x": x, "y": 3 * x + 1})
    path, plain = tmp_path / "checked.parquet", tmp_path / "unchecked.parquet"
    for name, checksum in ((path, True), (plain, False)):  # raw pages: every byte is a value
        pq.write_table(table, name, compression="none", use_dictionary=False,
                       write_page_checksum=checksum)  # fmt: skip
    for name in (path, plain):  # eight values of x's page set to zero
        data = bytearray(name.read_bytes())
        data[2000:2064] = bytes(64)
        name.write_bytes(bytes(data))
    unchecked = pq.read_table(plain)["x"].to_numpy()
    assert (unchecked != x).sum() == 8  # what a file without checksums reads, silently
    run = gdlab("fit", str(path), "--target", "y", *stream)
    assert run.code == 2 and "Traceback" not in run.err
    assert run.err.strip() == (
        f"gdlab: error: {path} is damaged: a page's bytes do not match the checksum written "
        f"with them (a disk or a copy changed them); write it again from its source."
    )


def test_the_command_line_streams_when_asked_or_when_over_the_budget(
    gdlab: Callable[..., CliRun], tmp_path: Path
) -> None:
    path = tmp_path / "data.parquet"
    frame().to_parquet(path, row_group_size=200)
    common = ["--target", "y", "--features", "a,b,c", "--json", "--epochs", "50"]
    runs = {}
    for name, flags in {"memory": [], "asked": ["--stream"],
                        "budget": ["--memory-budget", "50000"]}.items():  # fmt: skip
        run = gdlab("fit", str(path), *common, *flags, "--out", str(tmp_path / name))
        assert run.code == 0, run.err
        runs[name] = json.loads((tmp_path / name / "summary.json").read_text())
    assert runs["memory"]["reading"] == "in memory"
    assert runs["asked"]["reading"] == runs["budget"]["reading"] == f"streamed from {path}"
    assert runs["asked"]["coef"] == pytest.approx(runs["memory"]["coef"], rel=1e-12)
    text = gdlab("fit", str(path), *common[:-3], "--stream", "--out", str(tmp_path / "t"))
    assert f"data: streamed from {path}" in text.out


def test_predict_streamed_writes_what_it_writes_in_memory(
    gdlab: Callable[..., CliRun], tmp_path: Path
) -> None:
    path = tmp_path / "data.csv"
    frame().to_csv(path, index=False)
    run_dir = tmp_path / "run"
    assert gdlab("fit", str(path), "--target", "k", "--features", "a,b,c", "--model",
                 "logistic", "--out", str(run_dir), "--epochs", "20").code == 0  # fmt: skip
    for flag in ("--stream", "--no-stream"):
        assert gdlab("predict", str(run_dir), str(path), flag, "--out",
                     str(tmp_path / f"p{flag}.csv")).code == 0  # fmt: skip
    streamed = pd.read_csv(tmp_path / "p--stream.csv")
    whole = pd.read_csv(tmp_path / "p--no-stream.csv")
    assert list(streamed.columns) == ["prediction", "proba_0", "proba_1"] and len(streamed) == 1500
    np.testing.assert_array_equal(streamed["prediction"], whole["prediction"])
    # (a block's matrix product may round the last bit otherwise than the whole matrix's)
    np.testing.assert_allclose(streamed.to_numpy(), whole.to_numpy(), rtol=1e-13, atol=1e-15)


def test_resuming_a_streamed_run_checks_its_data(
    gdlab: Callable[..., CliRun], tmp_path: Path
) -> None:
    path = tmp_path / "data.parquet"
    frame().to_parquet(path)
    run_dir = tmp_path / "run"
    args = ["--target", "y", "--features", "a,b,c", "--stream", "--batch-size", "100"]
    assert gdlab("fit", str(path), *args, "--out", str(run_dir), "--epochs", "2").code == 0
    assert gdlab("fit", "--resume", str(run_dir), "--epochs", "3").code == 0
    frame(seed=1).to_parquet(path)
    run = gdlab("fit", "--resume", str(run_dir), "--epochs", "4")
    assert run.code == 2 and "is not the data the run was trained on" in run.err


def test_lr_advice_from_a_stream_equals_in_memory_for_least_squares(files) -> None:
    from gdlab.tools.rates import advise

    memory = advise(*in_memory(), seeds=0)
    streamed = advise(files(), None, seeds=0)
    assert streamed.curvature.lambda_max == pytest.approx(memory.curvature.lambda_max, rel=1e-12)
    assert streamed.raw_curvature.lambda_max == pytest.approx(
        memory.raw_curvature.lambda_max, rel=1e-9
    )
    assert streamed.recommended_lr == pytest.approx(memory.recommended_lr, rel=1e-12)


@pytest.mark.slow
def test_a_stream_trains_under_a_memory_limit_well_below_the_data(tmp_path: Path) -> None:
    """A child process limits its address space (RLIMIT_AS) to what it holds after its
    imports plus 400 MiB, then fits least squares (1000 epochs) and one mini-batch epoch on
    a file of 6,000,000 x 9 float64 (432 MB of rows, twice that to read whole); reading it
    whole under the same limit is refused, in one line."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "big.parquet"
    rng = np.random.default_rng(0)
    schema = pa.schema([(f"x{i}", pa.float64()) for i in range(8)] + [("y", pa.float64())])
    with pq.ParquetWriter(path, schema) as writer:
        for _ in range(60):
            block = rng.standard_normal((100_000, 9))
            writer.write_table(pa.table(dict(zip(schema.names, block.T, strict=True))))
    script = textwrap.dedent(f"""
        import resource, sys, warnings
        import numpy, pandas, pyarrow.parquet, torch, gdlab
        warnings.simplefilter("ignore")
        size = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status")
                    if line.startswith("VmSize"))
        resource.setrlimit(resource.RLIMIT_AS, (size + (400 << 20),) * 2)
        try:
            if sys.argv[1] == "memory":
                gdlab.fit("{path}", "y", stream=False, epochs=10)
            else:
                exact = gdlab.fit("{path}", "y", stream=True, epochs=1000, optimizer="momentum")
                mini = gdlab.fit("{path}", "y", stream=True, epochs=1, batch_size=4096)
                print(exact.path, exact.reading.split()[0], mini.history.epoch[-1])
        except gdlab.GdlabError as error:
            print(error)
    """)
    # pyarrow's own allocators reserve address space ahead; the system allocator does not
    env = os.environ | {"ARROW_DEFAULT_MEMORY_POOL": "system", "MALLOC_ARENA_MAX": "2",
                        "OMP_NUM_THREADS": "1"}  # fmt: skip
    for mode, expected in (("memory", "does not fit in the memory"),
                           ("stream", "exact streamed 1")):  # fmt: skip
        run = subprocess.run([sys.executable, "-c", script, mode], capture_output=True,
                             text=True, env=env, timeout=300)  # fmt: skip
        assert expected in run.stdout, (mode, run.stdout, run.err[-2000:])


@pytest.mark.parametrize(
    "error",
    [MemoryError(), RuntimeError("DefaultCPUAllocator: can't allocate memory: 19417088 bytes")],
)
def test_running_out_of_memory_is_one_line(
    gdlab: Callable[..., CliRun], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error
) -> None:
    from gdlab.training import Training

    def exhausted(*args, **kwargs):
        raise error

    monkeypatch.setattr(Training, "run", exhausted)
    run = gdlab("fit", "noisy-plane", "--out", str(tmp_path / "run"))
    assert run.code == 2 and run.err.count("\n") == 1 and "out of memory; stream" in run.err


def test_the_choice_to_stream_reads_no_columns_so_a_file_read_whole_keeps_its_checks(
    gdlab: Callable[..., CliRun], tmp_path: Path
) -> None:
    """Under the budget a file is read whole, by the whole-file reader alone: repeated names
    (which pandas renames x.1, and a stream refuses) load as they always did."""
    path = tmp_path / "repeated.csv"
    path.write_text("x,x,y\n1,2,3\n2,3,5\n3,5,8\n4,4,8\n")
    run = gdlab("fit", str(path), "--target", "y", "--out", str(tmp_path / "run"))
    assert run.code == 0 and "x.1" in run.out and "data: in memory" in run.out
    refused = gdlab("fit", str(path), "--target", "y", "--stream", "--out", str(tmp_path / "s"))
    assert refused.code == 2 and "column name 'x' repeats" in refused.err


def test_predict_checks_the_columns_before_it_prints_a_line(
    gdlab: Callable[..., CliRun], tmp_path: Path
) -> None:
    path = tmp_path / "data.csv"
    frame().to_csv(path, index=False)
    run_dir = tmp_path / "run"
    assert gdlab("fit", str(path), "--target", "y", "--features", "a,b,c", "--out",
                 str(run_dir), "--epochs", "5").code == 0  # fmt: skip
    other = tmp_path / "other.csv"
    frame()[["a", "b"]].to_csv(other, index=False)
    for flag in ("--stream", "--no-stream"):
        run = gdlab("predict", str(run_dir), str(other), flag)
        assert run.code == 2 and run.out == "" and "feature column 'c' not found" in run.err


@pytest.mark.parametrize("rows", [1, 63, 4097])
def test_the_pass_digest_weights_and_the_gram_in_a_blocks_spare_columns(rows: int) -> None:
    from gdlab.data.passes import _gram_in_room, _sum_weights

    rng = np.random.default_rng(rows)
    values = rng.standard_normal((rows, 3))  # [x0, x1, y]
    for first in (0, 9972, 123_456_789):
        expected = np.arange(first, first + rows, dtype=np.float64) % 9973.0
        np.testing.assert_array_equal(_sum_weights(first, rows), [np.ones(rows), expected])
    room = np.empty((rows, 5), order="F")
    room[:, :3] = values
    K, both = _gram_in_room(room, 3, 5)
    A = np.column_stack([values[:, :2], np.ones(rows), values[:, 2]])  # [x, 1, y]
    np.testing.assert_allclose(K, A.T @ A, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(both[0], values.sum(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(both[1], (np.arange(5, 5 + rows) % 9973.0) @ values, rtol=1e-12)


def test_a_block_whose_rows_are_all_kept_is_not_copied(files) -> None:
    block = next(files().blocks())
    assert block.where(np.ones(len(block), dtype=bool)) is block
    some = block.where(np.arange(len(block)) % 2 == 0)
    np.testing.assert_array_equal(some.X, block.X[::2])
    np.testing.assert_array_equal(some.y, block.y[::2])


def test_a_streamed_run_trains_with_one_torch_thread_fewer_and_gives_them_back(
    files,
) -> None:
    """The file's reader needs a core: torch's threads, one fewer during the run, are the
    caller's again after it."""
    before, during = torch.get_num_threads(), []
    try:
        torch.set_num_threads(2)
        gdlab.fit(files("k"), None, model="logistic", epochs=3, lr=0.5,
                  on_epoch=lambda history: during.append(torch.get_num_threads()))  # fmt: skip
        assert during == [1, 1, 1] and torch.get_num_threads() == 2
        gdlab.fit(*in_memory("k"), model="logistic", epochs=2, lr=0.5,
                  on_epoch=lambda history: during.append(torch.get_num_threads()))  # fmt: skip
        assert during[3:] == [2, 2]
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("scale", [1e160, 1e-170], ids=["huge", "tiny"])
@pytest.mark.parametrize("options", [{"optimizer": "gd"}, {"optimizer": "momentum"},
                                     {"model": "logistic", "target": "k"}],
                         ids=["closed-form", "exact", "logistic"])  # fmt: skip
def test_a_column_near_the_ends_of_float64_streams_as_it_fits_in_memory(
    tmp_path: Path, scale: float, options: dict[str, str]
) -> None:
    """Column b scaled by 1e160 (its squares overflow) or 1e-170 (they vanish): the pass takes
    it in a power of two, so the streamed fit is the in-memory one, coefficients in the
    column's own units."""
    data = frame().assign(b=lambda f: f["b"] * scale)
    path = tmp_path / "far.parquet"
    data.to_parquet(path, row_group_size=200)
    target = options.get("target", "y")
    opts = {"epochs": 200, "lr": 0.05} | {k: v for k, v in options.items() if k != "target"}
    memory = gdlab.fit(data[["a", "b", "c"]].to_numpy(), data[target].to_numpy(float), **opts)
    table = TableFile(path, target, ["a", "b", "c"], block_bytes=3000, batch_rows=97)
    streamed = gdlab.fit(table, None, **opts)
    assert np.isfinite(memory.coef_).all() and np.abs(memory.coef_).max() > 0
    np.testing.assert_allclose(streamed.coef_, memory.coef_, rtol=1e-9)
    assert streamed.loss == pytest.approx(memory.loss, rel=1e-9)


def test_a_column_that_outgrows_float64_further_on_is_one_line_naming_it(tmp_path: Path) -> None:
    data = frame()
    data.loc[1200:, "c"] *= 1e200  # ordinary in the first blocks; its squares overflow later
    path = tmp_path / "grows.parquet"
    data.to_parquet(path, row_group_size=200)
    table = TableFile(path, "y", ["a", "b", "c"], block_bytes=3000, batch_rows=97)
    with pytest.raises(GdlabError) as error:
        gdlab.fit(table, None)
    line = str(error.value)
    assert "\n" not in line and "'c' overflow float64" in line and "rescale" in line


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "in memory"])
def test_squares_that_overflow_without_standardizing_are_one_line(
    gdlab: Callable[..., CliRun], tmp_path: Path, stream: bool
) -> None:
    data = frame().assign(b=lambda f: f["b"] * 1e160)
    path = tmp_path / "far.csv"
    data.to_csv(path, index=False)
    reading = "--stream" if stream else "--no-stream"
    run = gdlab("fit", str(path), "--target", "y", "--features", "a,b,c", "--no-standardize",
                reading, "--out", str(tmp_path / "run"))  # fmt: skip
    assert run.code != 0 and "Traceback" not in run.err
    line = run.err.strip()
    assert "\n" not in line and "squares of b overflow float64" in line
    assert "drop --no-standardize" in line and not (tmp_path / "run").exists()
