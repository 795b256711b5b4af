"""Streaming data larger than memory, side by side with pyarrow reading the same file alone.

Writes (once, into --dir) a Parquet file of ROWS x 20 float32 features, a target y and a class
k (4.4 GB at the default 50,000,000 rows) and a CSV file of CSV_ROWS rows (about 1 GB), then
runs every case in a fresh process of its own, so that each peak memory (ru_maxrss) is its own:

- least squares, full batch, 1000 epochs (the exact path): time against one pyarrow read of the
  file, peak memory against the file's size, coefficients against numpy (lstsq of the R of a
  blockwise QR of [X, 1, y] in float64: the least-squares solution without forming XᵀX);
- logistic regression, 5 full-batch epochs and 1 mini-batch epoch (batch 256): rows per second
  against pyarrow's read alone and against scikit-learn's SGDClassifier.partial_fit over the
  same batches of 256 (read by pyarrow);
- the same least squares and mini-batch epoch on the CSV file, against pyarrow's CSV reader.

    python -m benchmarks.stream [--rows N] [--csv-rows N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

FEATURES = 20
BLOCK = 1_000_000
WEIGHTS = np.linspace(-1.0, 1.0, FEATURES)


def write_files(folder: Path, rows: int, csv_rows: int) -> tuple[Path, Path]:
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    parquet, csv = folder / f"stream_{rows}.parquet", folder / f"stream_{csv_rows}.csv"
    names = [f"x{i}" for i in range(FEATURES)] + ["y", "k"]
    schema = pa.schema([(name, pa.float32()) for name in names])
    rng = np.random.default_rng(0)

    def block(n: int) -> pa.Table:
        X = rng.standard_normal((n, FEATURES), dtype=np.float32) * 2 + 1
        y = X @ WEIGHTS.astype(np.float32) + 0.5 + rng.standard_normal(n, dtype=np.float32)
        k = (y + rng.standard_normal(n, dtype=np.float32) > 0.5).astype(np.float32)
        return pa.table(dict(zip(names, [*X.T, y, k], strict=True)), schema=schema)

    if not parquet.exists():
        partial = parquet.with_suffix(".partial")
        with pq.ParquetWriter(partial, schema, compression="none") as writer:
            for begin in range(0, rows, BLOCK):
                writer.write_table(block(min(BLOCK, rows - begin)), row_group_size=BLOCK)
        partial.rename(parquet)
    if not csv.exists():
        partial = csv.with_suffix(".partial")
        with pcsv.CSVWriter(partial, schema) as writer:
            for begin in range(0, csv_rows, BLOCK):
                writer.write_table(block(min(BLOCK, csv_rows - begin)))
        partial.rename(csv)
    return parquet, csv


# -- the cases, each run by `--worker CASE PATH` in a process of its own


def read_parquet(path: str) -> dict:
    import pyarrow.parquet as pq

    rows = sum(batch.num_rows for batch in pq.ParquetFile(path).iter_batches(1 << 16))
    return {"rows": rows}


def read_parquet_unbuffered(path: str) -> dict:
    """pyarrow's read with the settings gdlab streams with (`PARQUET_OPTIONS`: no pre_buffer,
    1 MiB buffers, on a local file several times faster than the default; checksums checked)."""
    import pyarrow.parquet as pq

    from gdlab.data.stream import PARQUET_OPTIONS

    file = pq.ParquetFile(path, **PARQUET_OPTIONS)
    return {"rows": sum(batch.num_rows for batch in file.iter_batches(1 << 16))}


def read_csv(path: str) -> dict:
    import pyarrow.csv as pcsv

    rows = sum(batch.num_rows for batch in pcsv.open_csv(path))
    return {"rows": rows}


def batches(path: str, size: int):
    """(X, k) batches of `size` rows read by pyarrow, in file order (float64)."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    names = [f"x{i}" for i in range(FEATURES)] + ["k"]
    reader = (pq.ParquetFile(path).iter_batches(1 << 16, columns=names) if path.endswith(
        ".parquet") else pcsv.open_csv(path))  # fmt: skip
    for batch in reader:
        values = np.column_stack([batch.column(name).to_numpy() for name in names]).astype(float)
        for begin in range(0, len(values), size):
            yield values[begin : begin + size, :-1], values[begin : begin + size, -1]


def sklearn_partial_fit(path: str) -> dict:
    from sklearn.linear_model import SGDClassifier

    model, rows = SGDClassifier(loss="log_loss", alpha=1e-6, learning_rate="constant",
                                eta0=0.01), 0  # fmt: skip
    for X, k in batches(path, 256):
        model.partial_fit(X, k, classes=[0.0, 1.0])
        rows += len(X)
    return {"rows": rows}


def numpy_reference(path: str) -> dict:
    """θ of least squares on [X, 1] from the R of a blockwise QR (TSQR) in float64."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    names = [f"x{i}" for i in range(FEATURES)] + ["y"]
    reader = (pq.ParquetFile(path).iter_batches(BLOCK, columns=names) if path.endswith(
        ".parquet") else pcsv.open_csv(path))  # fmt: skip
    R = np.zeros((0, FEATURES + 2))
    for batch in reader:
        values = np.column_stack([batch.column(name).to_numpy() for name in names]).astype(float)
        A = np.column_stack([values[:, :-1], np.ones(len(values)), values[:, -1]])
        R = np.linalg.qr(np.vstack([R, A]), mode="r")
    theta = np.linalg.lstsq(R[:, :-1], R[:, -1], rcond=None)[0]
    return {"coef": theta[:-1].tolist(), "intercept": float(theta[-1])}


def gdlab_least_squares(path: str) -> dict:
    import gdlab

    result = gdlab.fit(path, "y", feature_names=[f"x{i}" for i in range(FEATURES)], stream=True,
                       epochs=1000, lr=0.1, optimizer="momentum", tol=0.0)  # fmt: skip
    return {"coef": result.coef_[0].tolist(), "intercept": float(result.intercept_[0]),
            "path": result.path, "epochs": result.history.last_epoch}  # fmt: skip


def gdlab_logistic(path: str, batch_size: int | None, epochs: int) -> dict:
    import gdlab

    result = gdlab.fit(path, "k", feature_names=[f"x{i}" for i in range(FEATURES)],
                       model="logistic", stream=True, epochs=epochs, lr=0.5 if batch_size is None
                       else 0.05, batch_size=batch_size)  # fmt: skip
    return {"path": result.path, "epochs": result.history.last_epoch, "loss": result.loss}


WORKERS = {
    "read-parquet": read_parquet,
    "read-parquet-unbuffered": read_parquet_unbuffered,
    "read-csv": read_csv,
    "sklearn": sklearn_partial_fit,
    "numpy": numpy_reference,
    "least-squares": gdlab_least_squares,
    "logistic-full": lambda path: gdlab_logistic(path, None, 5),
    "logistic-mini": lambda path: gdlab_logistic(path, 256, 1),
    "imports": lambda path: {},  # the peak of a process that imports what gdlab's cases do
}


def worker(case: str, path: str) -> None:
    """One case, timed from after its imports (gdlab's import of torch is not the stream's)."""
    warnings.simplefilter("ignore")
    import pyarrow.csv
    import pyarrow.parquet  # noqa: F401

    if case in ("least-squares", "logistic-full", "logistic-mini", "imports"):
        import torch._dynamo  # noqa: F401  (imported by the first torch.optim optimizer: 2 s)

        import gdlab  # noqa: F401
    if case == "sklearn":
        import sklearn.linear_model  # noqa: F401
    if case == "read-parquet-unbuffered":
        from gdlab.data import stream  # noqa: F401  (for its PARQUET_OPTIONS alone)
    start = time.perf_counter()
    answer = WORKERS[case](path)
    answer["seconds"] = time.perf_counter() - start
    answer["peak_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(answer))


def run(case: str, path: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "benchmarks.stream", "--worker", case,
                           str(path)], capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode:
        raise SystemExit(f"{case} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000_000)
    parser.add_argument("--csv-rows", type=int, default=5_000_000)
    parser.add_argument("--dir", type=Path, default=Path("benchmarks/.data"))
    parser.add_argument("--worker", nargs=2)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    from benchmarks.common import Table, machine

    parquet, csv = write_files(args.dir, args.rows, args.csv_rows)
    print(machine())
    print(f"{parquet}: {parquet.stat().st_size / 1e9:.2f} GB, {args.rows} rows; "
          f"{csv}: {csv.stat().st_size / 1e9:.2f} GB, {args.csv_rows} rows")  # fmt: skip
    table = Table()
    imports = run("imports", parquet)["peak_bytes"]
    for path, rows, reader in ((parquet, args.rows, "read-parquet"),
                               (csv, args.csv_rows, "read-csv")):  # fmt: skip
        kind = path.suffix[1:]
        run(reader, path)  # from the page cache from now on, for every case alike
        read = run(reader, path)
        if kind == "parquet":  # the faster of pyarrow's two ways is the baseline
            unbuffered = run("read-parquet-unbuffered", path)
            print(f"  pyarrow reads the file in {read['seconds']:.3g} s with its defaults, "
                  f"{unbuffered['seconds']:.3g} s without pre_buffer")  # fmt: skip
            read = min(read, unbuffered, key=lambda answer: answer["seconds"])
        ours, reference = run("least-squares", path), run("numpy", path)
        table.add(f"{kind}: least squares, 1000 epochs", "pyarrow reads it once",
                  read["seconds"], ours["seconds"], 1.5, higher_is_better=False)  # fmt: skip
        table.add(f"{kind}: peak memory", "the file's size", path.stat().st_size,
                  ours["peak_bytes"], 0.25, unit="B", higher_is_better=False)  # fmt: skip
        ours_theta = np.array([*ours["coef"], ours["intercept"]])
        exact = np.array([*reference["coef"], reference["intercept"]])
        error = float(np.max(np.abs(ours_theta - exact)) / np.max(np.abs(exact)))
        peak = ours["peak_bytes"]
        print(f"  {kind}: path {ours['path']}, {ours['epochs']} epochs; coefficients against "
              f"numpy's TSQR lstsq: largest relative difference {error:.2e} (target 1e-8: "
              f"{'ok' if error <= 1e-8 else 'MISSED'}); peak {peak / 2**20:.0f} MiB (target "
              f"under 1 GiB: {'ok' if peak < 2**30 else 'MISSED'}), of which "
              f"{imports / 2**20:.0f} MiB is the imports alone (gdlab, torch, pyarrow: "
              f"the peak of a process that reads nothing)")  # fmt: skip
        cases = [("logistic-mini", 1)] if kind == "csv" else [("logistic-full", 5),
                                                              ("logistic-mini", 1)]  # fmt: skip
        sklearn = run("sklearn", path)
        for case, epochs in cases:
            logistic = run(case, path)
            speed = rows * epochs / logistic["seconds"]
            table.add(f"{kind}: {case} ({epochs} ep)", "pyarrow reads the rows alone",
                      read["seconds"] * epochs, logistic["seconds"], None,
                      higher_is_better=False)  # fmt: skip
            if case == "logistic-mini":
                table.add(f"{kind}: {case} ({epochs} ep)", "SGDClassifier.partial_fit",
                          sklearn["seconds"], logistic["seconds"], None,
                          higher_is_better=False)  # fmt: skip
            peak = logistic["peak_bytes"]
            print(f"  {case}: {speed:.3g} rows/s (pyarrow's read alone "
                  f"{rows / read['seconds']:.3g}, SGDClassifier.partial_fit "
                  f"{rows / sklearn['seconds']:.3g}); peak {peak / 2**20:.0f} MiB; path "
                  f"{logistic['path']}, training loss {logistic['loss']:.4g}")  # fmt: skip


if __name__ == "__main__":
    main()
