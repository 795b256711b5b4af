"""What a small model records each epoch: every parameter entry, by label."""

from __future__ import annotations

import torch


class RawRecord:
    """Every entry of `params` by label (`0.weight[2]`, in `named_parameters` order). The loop
    takes the values from the copy its norms make anyway (`train/norms.py`), through `of`."""

    def __init__(self, labels: list[str], params: list[torch.Tensor]) -> None:
        self.labels, self.params = labels, [p.detach() for p in params]

    def __call__(self) -> dict[str, float]:
        """The values now (what a per-step hook receives)."""
        return self.of(torch.cat([p.reshape(-1) for p in self.params]).tolist())

    def of(self, entries: list[float]) -> dict[str, float]:
        return dict(zip(self.labels, entries, strict=True))
