"""Work bounded by what the user asked for: each case, in a subprocess whose memory and time
are limited, ends within seconds with exit code 2, one line naming the problem, no traceback,
and nothing written."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

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
    "a tiny budget": (["fit", "noisy-plane", "--memory-budget", "1k"], ["memory_budget"]),
    "a seed beyond 64 bits": (["fit", "noisy-plane", "--seed", str(2**70)], ["'seed'"]),
    "a power tower": (["descend", "9**9**9**9"], ["exponent above 64"]),
    "a huge exponent": (["descend", "(a+1)**100000"], ["exponent above 64"]),
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
