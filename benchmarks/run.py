"""Speed of gdlab against the tutorial's plain PyTorch loop, measured side by side.

Prints medians of repeats and their ratio. Run with `make bench`.
"""

from __future__ import annotations

import platform
import statistics
import time
import warnings
from collections.abc import Callable

import torch

import gdlab
from gdlab.demo import X_TRAIN, Y_TRAIN, tutorial_loop


def median_seconds(work: Callable[[], object], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gdlab_tutorial() -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gdlab.fit(X_TRAIN, Y_TRAIN, optimizer="gd", lr=0.01, epochs=1000, tol=0.0,
                         patience=1000, standardize=False, device="cpu")  # fmt: skip


def main() -> None:
    torch.set_num_threads(1)
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, torch {torch.__version__}, 1 thread")
    baseline = median_seconds(tutorial_loop)
    ours = median_seconds(gdlab_tutorial)
    print(f"{'case':<44}{'baseline s':>12}{'gdlab s':>10}{'speed-up':>10}")
    print(f"{'tutorial, 4 points, 1000 epochs, full batch':<44}{baseline:>12.4f}{ours:>10.4f}"
          f"{baseline / ours:>9.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
