"""What every benchmark shares: medians of repeats, the machine's description, a table."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch


def median_seconds(work: Callable[[], object], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(
    first: Callable[[], object], second: Callable[[], object], repeats: int = 9
) -> tuple[float, float]:
    """Median times of two pieces of work run turn about, so that drifts in the machine's
    speed (other load, frequency) fall on both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for work, record in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            work()
            record.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    model = ""
    try:
        with open("/proc/cpuinfo") as info:
            model = next((line.split(":", 1)[1].strip() for line in info
                          if line.startswith("model name")), "")  # fmt: skip
    except OSError:
        pass
    memory = ""
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory = f", {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB"
    return (
        f"{model or cpu}, {os.cpu_count()} cores{memory}; python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}"
    )


class Table:
    """Rows of (case, baseline, its time, gdlab's, ratio, target, verdict), printed as they come."""

    HEADER = ("case", "against", "baseline", "gdlab", "ratio", "target", "")
    WIDTHS = (34, 30, 10, 10, 9, 9, 6)

    def __init__(self, case_width: int = WIDTHS[0]) -> None:
        self.rows: list[tuple[str, ...]] = []
        self.widths = (case_width, *self.WIDTHS[1:])  # rows are printed as they come
        self._print(self.HEADER)

    def add(self, case: str, against: str, baseline: float, ours: float, target: float | None,
            *, unit: str = "s", higher_is_better: bool = True) -> float:  # fmt: skip
        """ratio = baseline / ours (a speed-up), or ours / baseline if not higher_is_better."""
        ratio = baseline / ours if higher_is_better else ours / baseline
        if target is None:
            verdict, goal = "", ""
        else:
            met = ratio >= target if higher_is_better else ratio <= target
            verdict, goal = ("ok" if met else "MISSED"), (f">= {target:g}x" if higher_is_better
                                                          else f"<= {target:g}x")  # fmt: skip
        row = (case, against, f"{baseline:.4g} {unit}", f"{ours:.4g} {unit}", f"{ratio:.3g}x",
               goal, verdict)  # fmt: skip
        self.rows.append(row)
        self._print(row)
        return ratio

    def _print(self, row: tuple[str, ...]) -> None:
        cells = [row[0].ljust(self.widths[0]), row[1].ljust(self.widths[1])]
        cells += [cell.rjust(width) for cell, width in zip(row[2:], self.widths[2:], strict=True)]
        print(" ".join(cells), flush=True)

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.HEADER[:-1]) + " | met |", "|" + "---|" * 7]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)
