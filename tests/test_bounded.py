"""Work bounded by what the user asked for: each case, in a subprocess whose memory and time
are limited, ends within seconds with exit code 2, one line naming the problem, no traceback,
and nothing written."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_bad_input import SPECIAL_FILES, special_file

MEMORY_LIMIT = 6 << 30  # address space: torch alone maps about 1.5 GiB of it
SECONDS = 60

CASES = {
    "mlp of 10^8 units": (["fit", "noisy-plane", "--model", "mlp:100000000"], ["310 GiB"]),
    "two layers of 10^5": (["fit", "noisy-plane", "--model", "mlp:100000,100000"], ["GiB"]),
    "poly of degree 10^5": (["fit", "noisy-plane", "--model", "poly:100000"], ["degree 30"]),
    "a billion rates": (["sweep", "noisy-plane", "--lr", "1e-4:1:1000000000"], ["1 to 1000"]),
    "many rates of a large mlp": (
        ["sweep", "noisy-plane", "--model", "mlp:1000000", "--lr", "1e-4:1:1000"],
        ["1000 rates", "TiB"],
    ),
    "a tiny budget": (
        ["fit", "noisy-plane", "--memory-budget", "1k"],
        ["above 1000 B (--memory-budget)"],
    ),
    "a seed beyond 64 bits": (["fit", "noisy-plane", "--seed", str(2**70)], ["--seed"]),
    "a power tower": (["descend", "9**9**9**9"], ["exponent above 64"]),
    "a huge exponent": (["descend", "(a+1)**100000"], ["exponent above 64"]),
    "a width of 1e22": (["fit", "noisy-plane", "--model", "mlp:1e22"], ["mlp:1e22"]),
    "a division by zero": (["descend", "a + 1/0"], ["division by zero"]),
    "zero to a negative power": (["descend", "0**-1 + a"], ["negative power"]),
    "a 79-level tower": (["descend", "**".join(["a"] * 79)], ["deeper than 64"]),
}
# Inputs that once hung or were tracebacks and now run: they end within the limits, with the
# exit code and the words of their outcome (1: diverged, with the reason).
RUNS = {
    "a rate of 1e308": (["fit", "noisy-plane", "--lr", "1e308"], 1, ["lr=1e+308 is above"]),
    "nested exp": (["descend", "exp(" * 8 + "a" + ")" * 8], 1, ["f = inf"]),
    "a product of 44 factors": (["descend", "*".join(f"(a+{i})" for i in range(44))], 1, []),
    "a constant of 10^20": (["descend", "a**2 + 10**20"], 0, []),
}


def limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_unbounded_requests_are_refused_before_the_work(tmp_path: Path, case: str) -> None:
    argv, words = CASES[case]
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "gdlab", *argv, "--out", str(out)],
        capture_output=True, text=True, timeout=SECONDS, preexec_fn=limited, check=False,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
    assert all(word in run.stderr for word in words), run.stderr
    assert not out.exists() or [p.name for p in out.iterdir()] == []


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(RUNS))
def test_inputs_that_once_hung_now_finish_within_the_limits(tmp_path: Path, case: str) -> None:
    argv, code, words = RUNS[case]
    run = subprocess.run(
        [sys.executable, "-m", "gdlab", *argv, "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=SECONDS, preexec_fn=limited, check=False,
    )  # fmt: skip
    assert run.returncode == code and "Traceback" not in run.stderr, run.stderr
    assert all(word in run.stderr for word in words), run.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kind", SPECIAL_FILES)
def test_special_and_crafted_files_are_refused_in_bounded_memory(tmp_path: Path, kind: str) -> None:
    data, words = special_file(tmp_path, kind)
    before = sorted(p.name for p in tmp_path.iterdir())
    run = subprocess.run(
        [sys.executable, "-m", "gdlab", "fit", str(data), "--target", "y",
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=SECONDS, preexec_fn=limited, check=False,
    )  # fmt: skip
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert "Traceback" not in run.stderr and all(word in run.stderr for word in words)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.slow
def test_a_wide_least_squares_problem_iterates_instead_of_solving_a_huge_system(
    tmp_path: Path,
) -> None:
    """3 rows x 20,000 columns used to run lstsq on a 20001 x 20001 matrix for minutes."""
    import numpy as np

    rng = np.random.default_rng(0)
    data = tmp_path / "wide.npz"
    np.savez(data, X=rng.normal(size=(3, 20_000)), y=rng.normal(size=3))
    run = subprocess.run(
        [sys.executable, "-m", "gdlab", "fit", str(data), "--target", "y", "--epochs", "200",
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=SECONDS, preexec_fn=limited, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "XᵀX" in run.stderr and "skipped above 2000" in run.stderr
    assert "path: autograd" in run.stdout


@pytest.mark.slow
def test_a_file_without_line_breaks_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    data = tmp_path / "one-line.csv"
    with data.open("wb") as handle:  # 64 MiB with no line break after the header
        handle.write(b"x,y\n")
        for _ in range(64):
            handle.write(b"1" * (1 << 20))
    run = subprocess.run(
        [sys.executable, "-m", "gdlab", "fit", str(data), "--target", "y",
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=SECONDS, check=False,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)),
    )  # fmt: skip
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert "line 2" in run.stderr and "without a line break" in run.stderr


def deflated_checkpoint(checkpoint: Path, numel: int) -> None:
    """The run's checkpoint with one more tensor of `numel` zeros, its members deflated:
    a few MB on disk that torch.load would inflate to numel * 4 bytes."""
    import io
    import struct
    import zipfile

    import torch

    state = torch.load(checkpoint, weights_only=True)
    buffer = io.BytesIO()
    torch.save({**state, "padding": torch.zeros(7, dtype=torch.float32)}, buffer)
    declared = b"J" + struct.pack("<i", numel)
    with (
        zipfile.ZipFile(buffer) as source,
        zipfile.ZipFile(checkpoint, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for member in source.infolist():
            data = source.read(member.filename)
            if member.filename.endswith("data.pkl"):  # the 7 in the storage and in the size
                data = data.replace(b"K\x07t", declared + b"t").replace(
                    b"K\x07\x85", declared + b"\x85"
                )
            if member.file_size == 28:  # the padding's record: numel zeros, streamed
                with target.open(member.filename, "w", force_zip64=True) as handle:
                    for _ in range(numel * 4 >> 20):
                        handle.write(bytes(1 << 20))
                continue
            target.writestr(member, data, compress_type=zipfile.ZIP_DEFLATED)


@pytest.mark.slow
def test_a_checkpoint_that_inflates_to_gigabytes_is_refused_before_it_is_read(
    tmp_path: Path,
) -> None:
    """A 1 MB model.pt declaring 2^27 floats: torch.load would allocate 512 MiB for it."""
    run_dir = tmp_path / "run"
    fit = subprocess.run(
        [sys.executable, "-m", "gdlab", "fit", "noisy-plane", "--epochs", "3",
         "--out", str(run_dir)],
        capture_output=True, text=True, timeout=SECONDS, check=False,
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr
    deflated_checkpoint(run_dir / "model.pt", 1 << 27)
    assert (run_dir / "model.pt").stat().st_size < 4 << 20
    before = (run_dir / "model.pt").read_bytes()
    probe = (
        "import resource, subprocess, sys\n"
        "run = subprocess.run([sys.executable, '-m', 'gdlab', *sys.argv[1:]],"
        " capture_output=True, text=True)\n"
        "sys.stderr.write(run.stderr)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(run.returncode)\n"
    )
    for argv in (["fit", "--resume", str(run_dir), "--epochs", "5"], ["report", str(run_dir)]):
        run = subprocess.run(
            [sys.executable, "-c", probe, *argv],
            capture_output=True, text=True, timeout=SECONDS, check=False,
        )  # fmt: skip
        assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
        assert "model.pt" in run.stderr and "damaged" in run.stderr, run.stderr
        assert int(run.stdout) < 512 << 10, f"peak {int(run.stdout) >> 10} MiB"  # KiB
    assert (run_dir / "model.pt").read_bytes() == before


@pytest.mark.slow
def test_a_million_columns_train_in_bounded_time_and_print_bounded_lines(tmp_path: Path) -> None:
    """12 MB of CSV with 10^6 columns used to take minutes in the parser, print every name
    in a warning and every coefficient on the terminal, and save 10^6-wide checkpoints."""
    width = 1_000_000
    data = tmp_path / "wide.csv"
    with data.open("w") as handle:
        handle.write(",".join(f"c{i}" for i in range(width - 1)) + ",y\n")
        for row in range(4):
            handle.write(",".join(str((i * 7 + row * 13) % 11) for i in range(width)) + "\n")
    run = subprocess.run(
        [sys.executable, "-m", "gdlab", "fit", str(data), "--target", "y", "--lr", "1e-6",
         "--epochs", "20", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=SECONDS, preexec_fn=limited, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[:2000]
    assert len(run.stdout.splitlines()) < 80 and "999949 more in" in run.stdout
    assert all(len(line) < 400 for line in run.stderr.splitlines()), run.stderr[:2000]
