"""Data sets shipped inside the package, for the tutorial and for trying every model offline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FOLDER = Path(__file__).parent / "builtin"


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    target: str
    model: str
    description: str

    @property
    def path(self) -> Path:
        return FOLDER / f"{self.name}.csv"


DATASETS = {
    dataset.name: dataset
    for dataset in (
        BuiltinDataset(
            "tutorial-line", "y", "linear", "4 points on y = 2x, the tutorials' example"
        ),
        BuiltinDataset(
            "noisy-plane", "y", "linear", "200 rows, y = 3 + 1.5 x1 - 2 x2 + N(0, 1) noise"
        ),
        BuiltinDataset(
            "binary-blobs", "label", "logistic", "200 rows, two overlapping Gaussian classes"
        ),
        BuiltinDataset("three-blobs", "label", "softmax", "300 rows, three Gaussian classes"),
    )
}
