"""Training on a file that is read again for every pass (`gdlab.data.stream`).

`TensorStream` hands out a streamed problem's rows as tensors in training units: block by
block for a full pass (a full-batch epoch, the validation loss, the final loss), the first rows
for what needs a sample, and the batches of a shuffled epoch. `StreamedGradient` is the
gradient source (`train/sources.py`) over it: full batch, it sums each block's gradient
weighted by its share of the rows, which is the gradient of the mean loss over all of them
(the in-memory full-batch gradient, to rounding); a mini-batch step is autograd on the batch.

A shuffled epoch is a function of its seed alone (`TableFile.shuffled`), so the loop keeps
the seed as the epoch's order (`LoopState.order`, one number) and a run stopped inside an epoch
resumes by reading that epoch again up to where it stopped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from gdlab.data.stream import Block, TableFile

Convert = Callable[[Block], tuple[torch.Tensor, torch.Tensor]]
SEEDS = 1 << 62


@contextlib.contextmanager
def beside_the_reader(streamed: bool) -> Iterator[None]:
    """torch's CPU threads, one fewer while a run reads its file (`streamed`): the reader's
    threads (pyarrow decoding the next batch, numpy converting the last) need a core, and
    torch's, which spin while they wait for work, would take it. Measured on 2 cores, a
    streamed logistic fit of 50M rows, 2 epochs: 30.6 s with 2 threads, 22.3 s with 1."""
    threads = torch.get_num_threads()
    if not streamed or threads < 2:
        yield
        return
    torch.set_num_threads(threads - 1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class StreamedRows:
    """The training or validation rows of a streamed file (the hash split): only how many."""

    count: int

    def __len__(self) -> int:
        return self.count


@dataclass(frozen=True)
class Batch:
    """A batch of a shuffled epoch, as tensors on the training device."""

    X: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.X)


class TensorStream:
    """The rows `keep` keeps of each block of `table` (the training or validation rows, as
    the model's features), made tensors by `convert` (see the module docstring)."""

    def __init__(
        self,
        table: TableFile,
        keep: Callable[[Block], Block],
        convert: Convert,
        rows: int,
        share: tuple[int, int] = (0, 1),
    ) -> None:
        self.table, self.keep, self.convert, self.rows = table, keep, convert, rows
        self.ranks = share[1]  # a data-parallel run's ranks: each reads its share of the rows
        self._epoch: tuple[int, int, Iterator[Batch]] | None = None  # (seed, next step, batches)
        self._last: Batch  # the latest batch: an empty one has its shapes

    def __len__(self) -> int:
        return self.rows

    def blocks(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for block in self.table.blocks():
            X, y = self.convert(self.keep(block))
            if len(X):
                yield X, y

    def head(self, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `rows` rows (fewer if there are fewer)."""
        parts: list[tuple[torch.Tensor, torch.Tensor]] = []
        count = 0
        for X, y in self.blocks():
            parts.append((X[: rows - count], y[: rows - count]))
            count += len(parts[-1][0])
            if count >= rows:
                break
        return torch.cat([X for X, _ in parts]), torch.cat([y for _, y in parts])

    @staticmethod
    def epoch_order(n: int, size: int, generator: torch.Generator) -> torch.Tensor | None:
        """The epoch's order: None for full batch, else the seed of its shuffle, drawn from
        the run's generator (as the in-memory permutation is)."""
        if size >= n:
            return None
        return torch.randint(SEEDS, (1,), generator=generator)

    def batch(self, order: torch.Tensor, begin: int, size: int) -> Batch:
        """The batch of the epoch `order` that starts at row `begin` of it; in a
        data-parallel run, this rank's size / ranks rows of the global batch (none when its
        share of the epoch has run out before the longest rank's)."""
        seed, step, size = int(order[0]), begin // size, size // self.ranks
        if self._epoch is None or self._epoch[:2] != (seed, step):
            batches = self._batches(seed, size)
            for _ in range(step):  # a resumed epoch: read up to where it stopped
                next(batches, None)
            self._epoch = (seed, step, batches)
        batch = next(self._epoch[2], None)
        self._epoch = (seed, step + 1, self._epoch[2])
        if batch is None:
            return Batch(self._last.X[:0], self._last.y[:0])
        self._last = batch
        return batch

    def _batches(self, seed: int, size: int) -> Iterator[Batch]:
        """Batches of `size` rows (the last may be smaller) of a shuffled epoch."""
        carried: list[tuple[torch.Tensor, torch.Tensor]] = []
        held = 0
        for window in self.table.shuffled(seed, keep=self.keep):
            X, y = self.convert(window)
            carried.append((X, y))
            held += len(X)
            if held < size:
                continue
            X, y = torch.cat([X for X, _ in carried]), torch.cat([y for _, y in carried])
            whole = len(X) - len(X) % size
            for begin in range(0, whole, size):
                yield Batch(X[begin : begin + size], y[begin : begin + size])
            carried, held = [(X[whole:], y[whole:])], len(X) - whole
        if held:
            yield Batch(torch.cat([X for X, _ in carried]), torch.cat([y for _, y in carried]))


class StreamedGradient:
    """The gradient source over a stream: full-batch sums over blocks, or a batch's own."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        stream: TensorStream,
    ) -> None:
        self.model, self.loss_fn, self.stream = model, loss_fn, stream

    def step_gradient(self, rows: Batch | None) -> float:
        self.model.zero_grad()
        if rows is not None:
            loss = self.loss_fn(self.model(rows.X), rows.y)
            loss.backward()  # type: ignore[no-untyped-call]
            return loss.item()
        n, total = len(self.stream), torch.zeros((), dtype=torch.float64)
        for X, y in self.stream.blocks():
            loss = self.loss_fn(self.model(X), y) * (len(X) / n)
            loss.backward()  # type: ignore[no-untyped-call]
            total += loss.detach().double().cpu()
        return float(total)
