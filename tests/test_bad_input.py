"""Every bad input gets one line on stderr naming the problem, exit code 2, and nothing written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import gdlab
from tests.conftest import CliRun

GOOD = "x1,x2,y\n1,2,3\n2,1,4\n3,5,2\n4,4,8\n5,0,1\n"

# name: (files to create {name: text or array}, argv after `fit`, words the message must contain)
CASES: dict[str, tuple[dict[str, object], list[str], list[str]]] = {
    "missing file": ({}, ["nope.csv", "--target", "y"], ["nope.csv", "no such file"]),
    "empty file": ({"d.csv": ""}, ["d.csv", "--target", "y"], ["d.csv", "empty"]),
    "header only": ({"d.csv": "x,y\n"}, ["d.csv", "--target", "y"], ["no data rows"]),
    "target not found": ({"d.csv": GOOD}, ["d.csv", "--target", "z"], ["'z'", "x1, x2, y"]),
    "feature not found": (
        {"d.csv": GOOD},
        ["d.csv", "--target", "y", "--features", "x1,q"],
        ["'q'", "not found"],
    ),
    "non-numeric feature": (
        {"d.csv": "x,y\n1,2\nabc,3\n"},
        ["d.csv", "--target", "y"],
        ["'x'", "'abc'", "line 3"],
    ),
    "nan value": (
        {"d.csv": "x,y\n1,2\n,3\n"},
        ["d.csv", "--target", "y"],
        ["'x'", "line 3", "NaN"],
    ),
    "infinite value": (
        {"d.csv": "x,y\n1,2\n2,inf\n"},
        ["d.csv", "--target", "y"],
        ["'y'", "line 3", "infinite"],
    ),
    "ragged row": (
        {"d.csv": "x,y\n1,2\n2,3,4\n"},
        ["d.csv", "--target", "y"],
        ["line 3", "3 fields"],
    ),
    "short row": ({"d.csv": "x,y\n1,2\n5\n"}, ["d.csv", "--target", "y"], ["line 3", "1 fields"]),
    "zero features": ({"d.csv": "y\n1\n2\n"}, ["d.csv", "--target", "y"], ["no feature columns"]),
    "one class": (
        {"d.csv": "x,c\n1,1\n2,1\n"},
        ["d.csv", "--target", "c", "--model", "logistic"],
        ["only one class"],
    ),
    "non-integer labels": (
        {"d.csv": "x,c\n1,0\n2,0.5\n"},
        ["d.csv", "--target", "c", "--model", "logistic"],
        ["integer class labels", "0.5"],
    ),
    "three classes for logistic": (
        {"d.csv": "x,c\n1,0\n2,1\n3,2\n"},
        ["d.csv", "--target", "c", "--model", "logistic"],
        ["two classes", "softmax"],
    ),
    "1-D npy": ({"d.npy": np.arange(4.0)}, ["d.npy", "--target", "c0"], ["1-D", "2-D"]),
    "complex npy": (
        {"d.npy": np.ones((3, 2), dtype=complex)},
        ["d.npy", "--target", "c1"],
        ["complex"],
    ),
    "not parquet": ({"d.parquet": "hello"}, ["d.parquet", "--target", "y"], ["Parquet"]),
    "lr zero": ({"d.csv": GOOD}, ["d.csv", "--target", "y", "--lr", "0"], ["--lr", "(0, inf)"]),
    "lr nan": ({"d.csv": GOOD}, ["d.csv", "--target", "y", "--lr", "nan"], ["--lr", "nan"]),
    "lr text": ({"d.csv": GOOD}, ["d.csv", "--target", "y", "--lr", "fast"], ["'fast'"]),
    "epochs zero": ({"d.csv": GOOD}, ["d.csv", "--target", "y", "--epochs", "0"], ["--epochs"]),
    "batch size zero": (
        {"d.csv": GOOD},
        ["d.csv", "--target", "y", "--batch-size", "0"],
        ["--batch-size"],
    ),
    "batch size above n": (
        {"d.csv": GOOD},
        ["d.csv", "--target", "y", "--batch-size", "50"],
        ["50", "1 to 5"],
    ),
    "unknown model": (
        {"d.csv": GOOD},
        ["d.csv", "--target", "y", "--model", "tree"],
        ["'tree'", "poly:K"],
    ),
    "unknown optimizer": (
        {"d.csv": GOOD},
        ["d.csv", "--target", "y", "--optimizer", "lbfgs"],
        ["'lbfgs'", "adamw"],
    ),
    "model and loss disagree": (
        {"d.csv": GOOD},
        ["d.csv", "--target", "y", "--loss", "bce"],
        ["regression", "logistic"],
    ),
    "bad schedule argument": (
        {"d.csv": GOOD},
        ["d.csv", "--target", "y", "--schedule", "exponential:1.5"],
        ["--schedule", "0 < GAMMA <= 1"],
    ),
    "unparsable schedule": (
        {"d.csv": GOOD},
        ["d.csv", "--target", "y", "--schedule", "step:10,e-e"],
        ["--schedule"],
    ),
    "unknown flag": ({"d.csv": GOOD}, ["d.csv", "--target", "y", "--speed", "3"], ["--speed"]),
    "polynomial overflow": (
        {"d.csv": "x,y\n1e13,1\n2e13,2\n3e13,3\n"},
        ["d.csv", "--target", "y", "--model", "poly:25"],
        ["x^23", "overflows float64"],
    ),
    "seed beyond 64 bits": (
        {"d.csv": GOOD},
        ["d.csv", "--target", "y", "--seed", str(2**70)],
        ["--seed", "9223372036854775807"],
    ),
    "epochs text": (
        {"d.csv": GOOD},
        ["d.csv", "--target", "y", "--epochs", "many"],
        ["--epochs", "'auto'", "'many'"],
    ),
    "batch size text": (
        {"d.csv": GOOD},
        ["d.csv", "--target", "y", "--batch-size", "fulll"],
        ["--batch-size", "'full'", "'fulll'"],
    ),
    "gtol negative": (
        {"d.csv": GOOD},
        ["d.csv", "--target", "y", "--gtol", "-1"],
        ["--gtol", "[0, inf)"],
    ),
}


def _create(folder: Path, files: dict[str, object]) -> None:
    for name, content in files.items():
        if isinstance(content, np.ndarray):
            np.save(folder / name, content)
        else:
            (folder / name).write_text(str(content))


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_clear_line(
    gdlab: Callable[..., CliRun], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    files, argv, words = CASES[case]
    monkeypatch.chdir(tmp_path)
    _create(tmp_path, files)
    before = sorted(p.name for p in tmp_path.iterdir())
    run = gdlab("fit", *argv, "--out", "run")
    assert run.code == 2
    assert run.out == ""
    assert run.err.startswith("gdlab: error: ") and run.err.count("\n") == 1, run.err
    assert (
        "Traceback" not in run.err and "np.float" not in run.err
    )  # numbers as a person writes them
    for word in words:
        assert word in run.err, (word, run.err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_invalid_options_are_rejected_before_the_data_is_read(gdlab, tmp_path: Path) -> None:
    run = gdlab("fit", str(tmp_path / "missing.csv"), "--target", "y", "--epochs", "-3")
    assert run.code == 2 and "--epochs" in run.err and "missing.csv" not in run.err


def test_a_full_out_folder_is_not_touched_without_overwrite(gdlab, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    run = gdlab("fit", "tutorial-line", "--out", str(out), "--epochs", "5")
    assert run.code == 2 and "--overwrite" in run.err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (
        gdlab("fit", "tutorial-line", "--out", str(out), "--epochs", "5", "--overwrite").code == 0
    )
    assert (out / "keep.txt").read_text() == "mine" and (out / "model.pt").exists()


def test_predicting_with_other_features_is_refused(gdlab, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert gdlab("fit", "noisy-plane", "--out", str(out), "--epochs", "20").code == 0
    other = tmp_path / "other.csv"
    pd.DataFrame({"x1": [1.0], "z": [2.0]}).to_csv(other, index=False)
    run = gdlab("predict", str(out), str(other), "--out", str(tmp_path / "p.csv"))
    assert run.code == 2 and "'x2'" in run.err and "x1, x2" in run.err
    assert not (tmp_path / "p.csv").exists()


def test_a_constant_feature_warns_and_gets_finite_coefficients(gdlab, tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("x,k,y\n1,7,2\n2,7,4\n3,7,6\n4,7,8\n")
    run = gdlab("fit", str(data), "--target", "y", "--out", str(tmp_path / "r"), "--json",
                "--lr", "0.3", "--epochs", "300")  # fmt: skip
    assert run.code == 0
    assert "gdlab: warning: feature k is constant" in run.err
    import json

    summary = json.loads(run.out)
    assert summary["coef"]["k"] == 0.0
    assert summary["coef"]["x"] == pytest.approx(2.0, abs=1e-4)


@pytest.mark.parametrize("stream", [False, True])
def test_a_constant_feature_does_not_keep_a_run_from_converging(tmp_path: Path, stream) -> None:
    """The constant column is 0 once standardized: its weight starts at θ*'s 0 and never moves,
    and its zero eigenvalue is not the conditioning, so the distance test certifies the
    optimum (numpy's lstsq on the other columns) in a few epochs."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((500, 2))
    y = X @ [1.5, -2.0] + 0.25 + 0.1 * rng.standard_normal(500)
    path = tmp_path / "d.csv"
    pd.DataFrame({"a": X[:, 0], "k": 3.5, "b": X[:, 1], "y": y}).to_csv(path, index=False)
    with pytest.warns(gdlab.GdlabWarning, match="feature k is constant"):
        result = gdlab.fit(str(path), "y", stream=stream)
    assert result.status == "converged" and len(result.history) < 100
    expected = np.linalg.lstsq(np.column_stack([X, np.ones(500)]), y, rcond=None)[0]
    np.testing.assert_allclose(result.coef_[0], [expected[0], 0.0, expected[1]], atol=1e-10)
    assert result.intercept_[0] == pytest.approx(expected[2], abs=1e-10)


@pytest.mark.parametrize("flag", ["--stream", "--no-stream"])
def test_a_word_deep_in_a_long_column_is_one_line_without_pandas_warning(
    gdlab, tmp_path: Path, flag: str
) -> None:
    """pandas reads a long file in chunks and warns of a column of mixed types; the column
    check names the cell, and that line is all a new user sees."""
    import warnings

    lines = ["x,y", *(f"{i % 7}.5,{i % 5}.25" for i in range(300_000))]
    lines[280_001] = "oops,1.0"
    path = tmp_path / "long.csv"
    path.write_text("\n".join(lines) + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = gdlab("fit", str(path), "--target", "y", flag, "--out", str(tmp_path / "r"))
    assert run.code == 2 and not (tmp_path / "r").exists()
    assert "column 'x', row 280001 (line 280002): non-numeric value 'oops'" in run.err
    assert [str(w.message) for w in caught if "mixed types" in str(w.message)] == []


def _npy_declaring(path: Path, rows: int) -> None:
    """A valid .npy header that declares `rows` x 2 float64 values, followed by 16 bytes."""
    header = {"descr": "<f8", "fortran_order": False, "shape": (rows, 2)}
    with path.open("wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.write(np.zeros(2).tobytes())


SPECIAL_FILES = ["dev-zero", "fifo", "symlink-loop", "huge-npy-header", "structured-npy",
                 "npz-column-twice", "parquet-timestamps"]  # fmt: skip


def special_file(folder: Path, kind: str) -> tuple[Path, list[str]]:
    """A data file of one of the SPECIAL_FILES kinds, and the words its refusal must contain
    (also the table of bounded cases in test_bounded, run there under a memory limit)."""
    import os

    if kind == "dev-zero":
        return Path("/dev/zero"), ["not a regular file"]
    if kind == "fifo":
        os.mkfifo(folder / "pipe.csv")
        return folder / "pipe.csv", ["not a regular file"]
    if kind == "symlink-loop":
        (folder / "b.csv").symlink_to(folder / "a.csv")
        (folder / "a.csv").symlink_to(folder / "b.csv")
        return folder / "a.csv", ["link that loops"]
    if kind == "huge-npy-header":
        _npy_declaring(folder / "d.npy", 10**12)
        return folder / "d.npy", ["declares shape", "damaged or truncated"]
    if kind == "structured-npy":
        np.save(folder / "d.npy", np.zeros(3, dtype=[("a", "f8"), ("b", "i4")]))
        return folder / "d.npy", ["must hold numbers"]
    if kind == "parquet-timestamps":
        frame = pd.DataFrame({"t": pd.date_range("2020-01-01", periods=4), "y": np.arange(4.0)})
        frame.to_parquet(folder / "d.parquet")
        return folder / "d.parquet", ["'t'", "dates or times", "--features"]
    assert kind == "npz-column-twice"
    np.savez(folder / "d.npz", X=np.ones((4, 2)), x0=np.zeros(4), y=np.arange(4.0))
    return folder / "d.npz", ["'x0'", "rename one"]


@pytest.mark.parametrize("kind", SPECIAL_FILES)
def test_special_and_crafted_files_are_one_clear_line(gdlab, tmp_path: Path, kind: str) -> None:
    data, words = special_file(tmp_path, kind)
    run = gdlab("fit", str(data), "--target", "y", "--out", str(tmp_path / "out"))
    assert run.code == 2 and run.err.count("\n") == 1 and "Traceback" not in run.err, run.err
    assert all(word in run.err for word in words), run.err
    assert not (tmp_path / "out").exists()


def test_terminal_escape_sequences_in_column_names_are_shown_escaped(gdlab, tmp_path: Path):
    data = tmp_path / "d.csv"
    data.write_text("x\x1b[31mRED,y\n1,2\n2,4.1\n3,5.9\n4,8.2\n")
    fitted = gdlab("fit", str(data), "--target", "y", "--out", str(tmp_path / "run"))
    refused = gdlab("fit", str(data), "--target", "nope", "--out", str(tmp_path / "other"))
    assert fitted.code == 0 and refused.code == 2
    for text in (fitted.out, fitted.err, refused.err):
        assert "\x1b" not in text
    assert "x\\x1b[31mRED" in fitted.out and "x\\x1b[31mRED" in refused.err


NO_FLAG = r"--[a-z]"
API_CASES: dict[str, tuple[dict[str, object], str]] = {
    "batch larger than the rows": ({"batch_size": 50}, "`batch_size=50`"),
    "no validation rows": ({"val_fraction": 0.01}, "`val_fraction=0.01`"),
    "rate as text": ({"lr": "fast"}, "`lr`"),
    "zero epochs": ({"epochs": 0}, "`epochs`"),
    "schedule out of range": ({"schedule": "exponential:1.5"}, "`schedule`"),
    "logistic with mse": ({"model": "logistic", "loss": "mse"}, "`loss`"),
    "regression with bce": ({"loss": "bce"}, "`model=logistic`"),
    "degree too high": ({"model": "poly:100"}, "`model`"),
    "seed beyond 64 bits": ({"seed": 2**70}, "`seed`"),
    "tiny memory budget": ({"memory_budget": "16"}, "`memory_budget`"),
}


@pytest.mark.parametrize("case", sorted(API_CASES))
def test_the_python_api_names_parameters_never_flags(case: str) -> None:
    """The core speaks Python: a scikit-learn user reads `batch_size=50`, not --batch-size."""
    import re

    import gdlab

    options, words = API_CASES[case]
    X = np.arange(10.0).reshape(-1, 1)
    with pytest.raises(gdlab.GdlabError) as caught:
        gdlab.fit(X, 2 * X[:, 0] + 1, **options)
    message = str(caught.value)
    assert words in message and not re.search(NO_FLAG, message), message


def test_a_divergence_message_names_parameters_and_the_cli_shows_flags(gdlab, tmp_path: Path):
    import re

    import gdlab as api

    X = np.column_stack([np.arange(20.0) * 1000, np.arange(20.0) % 3])
    result = api.fit(X, X @ [1.0, 2.0], lr=0.01, standardize=False, epochs=50)
    assert result.status == "diverged" and not re.search(NO_FLAG, result.message)
    assert "`lr=" in result.message and "`standardize=False`" in result.message
    data = tmp_path / "d.csv"
    pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "y": X @ [1.0, 2.0]}).to_csv(data, index=False)
    run = gdlab("fit", str(data), "--target", "y", "--lr", "0.01", "--no-standardize",
                "--epochs", "50", "--out", str(tmp_path / "run"))  # fmt: skip
    assert run.code == 1 and "try --lr " in run.err and "drop --no-standardize" in run.err
    assert "`" not in run.err


# The CLI table again through `gdlab.fit`, where the input can be said in Python: the rows as
# arrays, the flags as keyword arguments. File-level faults have no array form.
FILE_ONLY = {"missing file", "empty file", "header only", "target not found",
             "feature not found", "ragged row", "short row", "zero features", "not parquet",
             "unknown flag", "1-D npy"}  # fmt: skip
API_WORDS = {  # where the array form names the fault in other words than the file reader
    "non-numeric feature": ["X holds non-numeric values"],
    "nan value": ["X has a NaN", "row 2", "column x"],
    "infinite value": ["y has a NaN or infinite value", "row 2"],
    "complex npy": ["X is complex"],
}


def _as_number(text: str) -> object:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _api_call(tmp_path: Path, files: dict[str, object], argv: list[str]) -> tuple:
    """(X, y, keyword arguments) for a CLI case: the file read as a table, the flags named."""
    _create(tmp_path, files)
    path = tmp_path / argv[0]
    frame = (
        pd.DataFrame(np.load(path)).rename(columns=lambda k: f"c{k}")
        if path.suffix == ".npy"
        else pd.read_csv(path)
    )
    flags = dict(zip(argv[1::2], argv[2::2], strict=True))
    target = flags.pop("--target")
    options = {flag[2:].replace("-", "_"): _as_number(value) for flag, value in flags.items()}
    return frame.drop(columns=[target]), frame[target], options  # DataFrames: names kept


@pytest.mark.parametrize("case", sorted(set(CASES) - FILE_ONLY))
def test_the_bad_input_table_through_the_python_api(tmp_path: Path, case: str) -> None:
    import re

    import gdlab

    files, argv, words = CASES[case]
    X, y, options = _api_call(tmp_path, files, argv)
    with pytest.raises(gdlab.GdlabError) as caught:
        gdlab.fit(X, y, **options)
    message = str(caught.value)
    expected = API_WORDS.get(case) or [
        f"`{word[2:].replace('-', '_')}`" if word.startswith("--") else word for word in words
    ]
    assert "\n" not in message and not re.search(NO_FLAG, message), message
    for word in expected:
        assert word in message, (word, message)


def test_every_non_finite_value_is_found_and_overflowing_finite_rows_are_not_one() -> None:
    """The scan reads each block once through its row sums (BLAS), searching a block only
    where a sum is not finite: a NaN or an infinity anywhere is named at its row and column;
    finite rows whose sum overflows pass, without a warning."""
    import warnings

    from gdlab.data.arrays import as_matrix
    from gdlab.errors import GdlabError

    rng = np.random.default_rng(4)
    X = rng.normal(size=(40_000, 7))  # three blocks of the scan
    for value in (np.nan, np.inf, -np.inf):
        for row, column in ((0, 0), (16_383, 6), (16_384, 3), (39_999, 2)):
            bad = X.copy()
            bad[row, column] = value
            with pytest.raises(GdlabError, match=f"at row {row + 1}, column {column};"):
                as_matrix(bad)
    huge = np.full((20_000, 3), 1e308)
    huge[::2] *= -1  # rows of ±1e308: sums overflow to ±inf, none of the values is
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        matrix, names = as_matrix(huge)
    assert names == ["x0", "x1", "x2"] and np.array_equal(matrix, huge)
