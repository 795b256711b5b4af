"""Data-parallel `gdlab fit` under torchrun (gloo, CPU): 1 process against N, side by side.

Writes (once, into --dir) a Parquet file of ROWS x 50 float32 features and a target y (2 GB at
the default 10,000,000 rows, row groups of 250,000) and a smaller one of LOGISTIC_ROWS rows
with a class k, then times each case as one process and as N torchrun processes:

- least squares, full batch, exact path (`--fast-paths iterate`), the file streamed by row
  groups (each rank reads its own share), 200 epochs;
- logistic regression, mini-batch (the per-rank batch is BATCH / N, so the global batch, and
  so every step, is the one-process run's), 2 epochs, in memory.

For each: wall time of the command, the training loop's time, the all-reduce's share of it
(from the run's summary.json, "parallel"), and the largest difference between the
coefficients of the two runs (the same answer, up to the order of floating-point sums).
The last lines project the time per epoch at 8, 64 and 512 ranks for 1e9 rows x 100 features
from the measured costs (see `project`).

    python -m benchmarks.parallel [--rows N] [--ranks N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine

FEATURES = 50
GROUP = 250_000
LOGISTIC_ROWS = 1_000_000
BATCH = 1024
WEIGHTS = np.linspace(-1.0, 1.0, FEATURES)


def write_file(path: Path, rows: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [f"x{i}" for i in range(FEATURES)] + ["y", "k"]
    schema = pa.schema([(name, pa.float32()) for name in names])
    rng = np.random.default_rng(0)
    partial = path.with_suffix(".partial")
    with pq.ParquetWriter(partial, schema, compression="none") as writer:
        for begin in range(0, rows, GROUP):
            n = min(GROUP, rows - begin)
            X = rng.standard_normal((n, FEATURES), dtype=np.float32)
            y = X @ WEIGHTS.astype(np.float32) + 0.5 + rng.standard_normal(n, dtype=np.float32)
            k = (y + rng.standard_normal(n, dtype=np.float32) > 0.5).astype(np.float32)
            writer.write_table(pa.table(dict(zip(names, [*X.T, y, k], strict=True)),
                                        schema=schema), row_group_size=GROUP)  # fmt: skip
    partial.rename(path)
    return path


def fit(ranks: int, args: list[str], out: Path) -> dict:
    """One `gdlab fit` (under torchrun when ranks > 1): wall seconds and its summary.json."""
    gdlab = ["-m", "gdlab", "fit", *args, "--out", str(out), "--json"]
    if ranks > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc-per-node", str(ranks), *gdlab]  # fmt: skip
        threads = max(1, (os.cpu_count() or 1) // ranks)
    else:
        command, threads = [sys.executable, *gdlab], os.cpu_count() or 1
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env.pop("WORLD_SIZE", None)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"benchmark run failed ({' '.join(command)}): {done.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {"wall": wall, "summary": summary, "answer": json.loads(done.stdout)}


def coefficients(run: dict) -> np.ndarray:
    answer = run["answer"]
    coef, intercept = answer.get("coef", {}), answer.get("intercept", 0.0)
    values = list(coef.values()) if isinstance(coef, dict) else coef
    return np.append(np.ravel(np.asarray(values, dtype=float)), np.ravel(intercept))


def project(per_row_epoch: float, xtx_per_row: float, reduce_seconds: float, d: int) -> list[str]:
    """Time per epoch at 8, 64 and 512 ranks for 1e9 rows x d features, from this machine's
    measured costs, stated as a model, not a measurement: a mini-batch rank's share of the
    rows costs per_row_epoch x (d / FEATURES) x rows / N (the measured cost per row, scaled to
    d features); the exact path's one pass costs xtx_per_row x (d / FEATURES)² a row (the
    measured one-process least-squares command over its rows, start-up and reading included,
    scaled by XᵀX's d² products); one all-reduce costs the measured reduce_seconds x log2 N
    (a tree's latency; the vectors are small: d numbers a step, d² for XᵀX). The exact
    path pays the rows
    once (one pass for XᵀX, one all-reduce) and then O(d²) per epoch on every rank, so its
    epochs do not shrink with N; a mini-batch epoch pays one all-reduce per global batch of
    N x BATCH rows."""
    rows, lines = 1e9, []
    per_row = per_row_epoch * d / FEATURES
    for ranks in (8, 64, 512):
        latency = reduce_seconds * max(1.0, math.log2(ranks))
        xtx_pass = xtx_per_row * (d / FEATURES) ** 2 * rows / ranks + latency
        exact_epoch = 2 * d * d / 1e9  # a d x d matrix-vector product at ~1 GFLOP/s
        steps = rows / (BATCH * ranks)
        minibatch_epoch = per_row * rows / ranks + steps * latency
        lines.append(
            f"  {ranks:>4} ranks: exact path {xtx_pass:8.3g} s for the XᵀX pass, then "
            f"{exact_epoch:.2g} s per epoch on every rank; mini-batch (per-rank batch "
            f"{BATCH}) {minibatch_epoch:8.3g} s per epoch, of which all-reduce "
            f"{steps * latency:.3g} s"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=Path(__file__).parent / ".data")
    options = parser.parse_args()
    big = write_file(options.dir / f"parallel_{options.rows}.parquet", options.rows)
    small = write_file(options.dir / f"parallel_{LOGISTIC_ROWS}.parquet", LOGISTIC_ROWS)
    features = ["--features", ",".join(f"x{i}" for i in range(FEATURES))]
    cases = {
        f"least squares {options.rows:,} x {FEATURES}, exact, streamed": (
            [str(big), "--target", "y", "--stream", "--fast-paths", "iterate", "--epochs",
             str(options.epochs), "--lr", "0.5", *features], None),
        f"logistic {LOGISTIC_ROWS:,} x {FEATURES}, mini-batch {BATCH}": (
            [str(small), "--target", "k", "--model", "logistic", "--lr", "0.1", "--epochs",
             "2", *features], BATCH),
    }  # fmt: skip
    print(f"# gdlab fit: 1 process against {options.ranks} torchrun processes (gloo)")
    print(f"# {machine()}")
    print(f"{'case':<46} {'ranks':>5} {'wall s':>8} {'train s':>8} {'all-reduce':>10} "
          f"{'speed-up':>8} {'max |Δcoef|':>11}")  # fmt: skip
    costs: dict[str, dict] = {}
    walls: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, (args, batch) in cases.items():
            runs = {}
            for ranks in (1, options.ranks):
                extra = ["--batch-size", str(batch // ranks)] if batch else []
                runs[ranks] = fit(ranks, [*args, *extra], Path(scratch) / f"{len(costs)}_{ranks}")
            alone, shared = runs[1], runs[options.ranks]
            parallel = shared["summary"]["parallel"]
            differ = float(np.max(np.abs(coefficients(alone) - coefficients(shared))))
            for ranks, run in runs.items():
                train = run["summary"].get("parallel", {}).get("seconds", math.nan)  # N > 1
                share = (f"{parallel['all_reduce_seconds'] / parallel['seconds']:.0%}"
                         if ranks > 1 else "")  # fmt: skip
                speed = f"{alone['wall'] / run['wall']:.2f}x"
                print(f"{name:<46} {ranks:>5} {run['wall']:>8.2f} {train:>8.3g} {share:>10} "
                      f"{speed:>8} {differ if ranks > 1 else 0:>11.2g}")  # fmt: skip
            costs[name], walls[name] = parallel, alone["wall"]
    mini = next(v for k, v in costs.items() if k.startswith("logistic"))
    per_reduce = mini["all_reduce_seconds"] / max(1, mini["all_reduces"])
    per_rank_rows = LOGISTIC_ROWS / options.ranks
    per_row_epoch = (mini["seconds"] - mini["all_reduce_seconds"]) / per_rank_rows / 2
    print(
        f"\nmeasured: {per_reduce * 1e6:.0f} µs per all-reduce of a step (gloo, "
        f"{options.ranks} local ranks), {per_row_epoch * 1e9:.0f} ns per row per epoch"
    )
    print("projection for 1e9 rows x 100 features (see benchmarks/parallel.py:project):")
    exact = next(k for k in costs if k.startswith("least squares"))
    xtx_per_row = walls[exact] / options.rows
    for line in project(per_row_epoch, xtx_per_row, per_reduce, 100):
        print(line)


if __name__ == "__main__":
    main()
