"""Peak memory of one full-batch least-squares fit, measured in a process of its own.

Run as `python -m benchmarks.memory N D [VAL_FRACTION]`; prints one JSON object: the data's
size in bytes, the resident memory before the data was made and the peak while fitting
(Linux: VmRSS and VmHWM, the peak reset with /proc/self/clear_refs just before the fit).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np

import gdlab


def status(field: str) -> int:
    """A field of /proc/self/status in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def main() -> None:
    n, d = int(sys.argv[1]), int(sys.argv[2])
    validation = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    warnings.simplefilter("ignore")
    gdlab.fit(
        np.ones((8, 2)) + np.eye(8, 2), np.arange(8.0), epochs=2, lr=0.1
    )  # imports and warm-up
    before = status("VmRSS")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) + rng.normal(size=n)
    Path("/proc/self/clear_refs").write_text("5")  # the peak starts again from here
    gdlab.fit(X, y, optimizer="gd", lr=0.1, epochs=1000, tol=0.0, patience=1000, gtol=0.0,
              xtol=0.0, dtype="float32", standardize=False, device="cpu",
              val_fraction=validation)  # fmt: skip
    data = X.nbytes + y.nbytes
    print(json.dumps({"data": data, "before": before, "peak": status("VmHWM")}))


if __name__ == "__main__":
    main()
