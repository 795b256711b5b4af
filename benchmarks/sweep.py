"""A sweep of 16 learning rates against one run on the same data, measured side by side.

Target (issue: learning rates you can trust): the sweep costs at most 3 times one run.
Both train the same model for the same epochs and batches; the sweep reads each batch once
for all 16 rates. Run with `make bench`.
"""

from __future__ import annotations

import platform
import warnings
from functools import partial

import numpy as np
import torch

import gdlab
from benchmarks.common import median_seconds
from gdlab.tools.sweep import sweep

CASES = {
    "linear, 20000 x 20, batch 256, 5 epochs": ("linear", 20_000, 20, 256, 5),
    "mlp:32, 5000 x 10, batch 128, 10 epochs": ("mlp:32", 5_000, 10, 128, 10),
    "linear, 2000 x 5, full batch, 200 epochs": ("linear", 2_000, 5, None, 200),
}


def data(n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d))
    return X, X @ rng.normal(size=d) + rng.normal(size=n)


def main() -> None:
    torch.set_num_threads(1)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"1 thread")  # fmt: skip
    print(f"{'case':<44}{'one run s':>10}{'16 rates s':>12}{'ratio':>8}  (target <= 3x)")
    lrs = np.geomspace(1e-4, 1.0, 16).tolist()
    for name, (model, n, d, batch, epochs) in CASES.items():
        X, y = data(n, d)
        common = {"model": model, "epochs": epochs, "batch_size": batch, "device": "cpu",
                  "dtype": "float32"}  # as before the dtype became auto  # fmt: skip
        one = median_seconds(partial(one_run, X, y, common), repeats=5)
        many = median_seconds(partial(sweep, X, y, lrs=lrs, optimizers=["gd"], **common), 5)
        print(f"{name:<44}{one:>10.3f}{many:>12.3f}{many / one:>7.2f}x")


def one_run(X: np.ndarray, y: np.ndarray, common: dict[str, object]) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gdlab.fit(X, y, lr=0.01, tol=0.0, patience=10**6, gtol=0.0, xtol=0.0,
                         stop=lambda: False, **common)  # fmt: skip


if __name__ == "__main__":
    main()
