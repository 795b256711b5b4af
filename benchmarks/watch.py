"""`gdlab.watch` on three plain PyTorch loops: the median time of a step with the watcher at its
defaults (with and without a probe) against the same loop without it, turn about.

- MLP 784-256-128-10 on 60,000 x 784 inputs (random, MNIST-sized), batch 128, cross-entropy;
- a small CNN: 3 conv layers (3-16-32-64 channels, 3x3) on 32x32x3 images, batch 64;
- a 2-layer transformer encoder (d_model 64, 4 heads, LayerNorm, the fused
  scaled_dot_product_attention inside nn.TransformerEncoderLayer), sequences of 32, batch 32.

The loops are identical apart from `w.step(loss)`, each on its own copy of the model; each
repeat times STEPS steps of one, then of the other, and the ratio is the median of the repeats'
own ratios, each pair in alternating order (a pair runs within a fraction of a second: a shared,
noisy machine's drift falls on both), shown as the watched time beside the plain loop's median.
The memory line is what the watcher holds: its copy of the parameters (the update buffer), and
its block of rows on the device. A third row per model times the same loop with nothing but one
fused norm of the gradients after backward: the floor that any watcher measuring every step's
gradient norms pays (the first read of gradients fresh from backward).

With `--cockpit` (cockpit-for-pytorch installed under the constraints file:
`pip install -c constraints.txt cockpit-for-pytorch 'setuptools<81'`), its lightest
configuration, "economy", tracked every step, runs on the same loops (its own copy of each
model, extended by BackPACK) over COCKPIT_STEPS steps, with its published 1.5x (GPU, CIFAR-10
3C3D) beside it; where BackPACK cannot extend a model the row says why.

    python -m benchmarks.watch [--steps N] [--repeats N] [--cockpit]
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable

import torch
from torch import nn

import gdlab
from benchmarks.common import Table, machine

STEPS = 50
COCKPIT_STEPS, COCKPIT_REPEATS = 6, 3  # its steps cost hundreds of times more on a CPU


def mlp() -> tuple[nn.Module, Callable[[int], tuple[torch.Tensor, torch.Tensor]]]:
    X = torch.randn(60_000, 784)
    y = torch.randint(0, 10, (60_000,))
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                          nn.Linear(128, 10))  # fmt: skip

    def batch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = (i * 128) % (60_000 - 128)
        return X[start : start + 128], y[start : start + 128]

    return model, batch


def cnn() -> tuple[nn.Module, Callable[[int], tuple[torch.Tensor, torch.Tensor]]]:
    X = torch.randn(1024, 3, 32, 32)
    y = torch.randint(0, 10, (1024,))
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(64, 10),
    )  # fmt: skip

    def batch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = (i * 64) % (1024 - 64)
        return X[start : start + 64], y[start : start + 64]

    return model, batch


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(16, 64)
        layer = nn.TransformerEncoderLayer(64, 4, dim_feedforward=128, batch_first=True,
                                           dropout=0.0, norm_first=True)  # fmt: skip
        self.body = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.embed(x)).mean(1))


def transformer() -> tuple[nn.Module, Callable[[int], tuple[torch.Tensor, torch.Tensor]]]:
    X = torch.randn(1024, 32, 16)
    y = torch.randint(0, 10, (1024,))

    def batch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = (i * 32) % (1024 - 32)
        return X[start : start + 32], y[start : start + 32]

    return Encoder(), batch


def loop(model: nn.Module, batch: Callable, steps: int, *, watched: bool, probe: bool,
         read: bool = False):  # fmt: skip
    """The loop, watched or not; `read`: with only the one read of the fresh gradients that
    any per-step gradient norm makes (one fused norm after backward), the floor of a watcher."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    xb, yb = batch(0)
    options = {"probe": (lambda: loss_fn(model(xb), yb))} if probe else {}
    watcher = gdlab.watch(model, optimizer, **options) if watched else None
    params = list(model.parameters())
    counter = [0]

    def run() -> None:
        for _ in range(steps):
            x, y = batch(counter[0])
            counter[0] += 1
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            if read:
                torch._foreach_norm([p.grad for p in params])
            optimizer.step()
            if watcher is not None:
                watcher.step(loss)

    return run, watcher


def cockpit_loop(model: nn.Module, batch: Callable, steps: int) -> Callable[[], None]:
    """The same loop under Cockpit's "economy" quantities, tracked every step."""
    from backpack import extend
    from cockpit import Cockpit
    from cockpit.utils import schedules
    from cockpit.utils.configuration import configuration

    model = extend(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn, each = extend(nn.CrossEntropyLoss()), nn.CrossEntropyLoss(reduction="none")
    quantities = configuration("economy", track_schedule=schedules.linear(1))
    cockpit = Cockpit(model.parameters(), quantities=quantities)
    counter = [0]

    def run() -> None:
        for _ in range(steps):
            x, y = batch(counter[0])
            step = counter[0]
            counter[0] += 1
            out = model(x)
            loss = loss_fn(out, y)
            info = {"batch_size": len(x), "individual_losses": each(out, y), "loss": loss,
                    "optimizer": optimizer}  # fmt: skip
            optimizer.zero_grad()
            with cockpit(step, info=info):
                loss.backward(create_graph=cockpit.create_graph(step))
            optimizer.step()

    return run


def paired(plain: Callable[[], None], watched: Callable[[], None], repeats: int):
    """The median time of `plain`, and the median of watched/plain over adjacent pairs run in
    alternating order (a pair's second run finds the caches the first left)."""
    import statistics
    import time

    times, ratios = [], []
    for i in range(repeats):
        took = {}
        for name, work in (("plain", plain), ("watched", watched))[:: 1 if i % 2 else -1]:
            began = time.perf_counter()
            work()
            took[name] = time.perf_counter() - began
        times.append(took["plain"])
        ratios.append(took["watched"] / took["plain"])
    return statistics.median(times), statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--cockpit", action="store_true",
                        help="also time cockpit-for-pytorch's economy configuration")  # fmt: skip
    options = parser.parse_args()
    torch.manual_seed(0)
    print("# gdlab.watch at its defaults against the same loop without it, turn about")
    print(f"# {machine()}")
    table = Table(case_width=40)
    import warnings

    warnings.simplefilter("ignore")  # the diagnoses of random data are not the point here
    for name, build in (("MLP 60000x784", mlp), ("CNN 3 conv 32x32x3", cnn),
                        ("transformer 2 layers", transformer)):  # fmt: skip
        for probe in (False, True):
            model, batch = build()
            plain, _ = loop(model, batch, options.steps, watched=False, probe=False)
            # its own copy: the watcher's gradient hooks sit on the parameters it watches
            copied = copy.deepcopy(model)
            watched, watcher = loop(copied, batch, options.steps, watched=True, probe=probe)
            assert watcher is not None
            with watcher:
                for _ in range(3):  # warm-up: first calls, allocations, the clock settling
                    plain()
                    watched()
                base, ratio = paired(plain, watched, options.repeats)
            ours = base * ratio
            per = options.steps
            case = f"{name}, {'probe every 50' if probe else 'no probe'}"
            table.add(case, "the loop without it", base / per * 1e3, ours / per * 1e3, 1.05,
                      unit="ms", higher_is_better=False)  # fmt: skip
        _floor_row(table, name, build, options)
        if options.cockpit:
            _cockpit_row(table, name, build)
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        copies = sum(t.numel() * t.element_size() for t in watcher._snapshot or [])
        block = watcher._buffer.numel() * watcher._buffer.element_size()
        print(f"  {name}: the watcher holds {copies / size:.3f}x the parameters' "
              f"{size / 2**20:.2f} MiB (its update buffer; target: one extra copy) and a "
              f"block of {block / 2**10:.0f} KiB")  # fmt: skip


def _floor_row(table: Table, name: str, build: Callable, options: argparse.Namespace) -> None:
    """The loop with nothing but one fused norm of the gradients after backward: what any
    watcher that measures every step's gradients pays at least (no target: a floor)."""
    model, batch = build()
    plain, _ = loop(model, batch, options.steps, watched=False, probe=False)
    read, _ = loop(copy.deepcopy(model), batch, options.steps, watched=False, probe=False,
                   read=True)  # fmt: skip
    for _ in range(3):
        plain()
        read()
    base, ratio = paired(plain, read, options.repeats)
    per = options.steps
    table.add(f"{name}, bare norm (floor)", "the loop without it", base / per * 1e3,
              base * ratio / per * 1e3, None, unit="ms", higher_is_better=False)  # fmt: skip


def _cockpit_row(table: Table, name: str, build: Callable) -> None:
    model, batch = build()
    plain, _ = loop(model, batch, COCKPIT_STEPS, watched=False, probe=False)
    try:
        theirs = cockpit_loop(copy.deepcopy(model), batch, COCKPIT_STEPS)
        theirs()  # warm-up, and BackPACK's refusal of a module comes here
    except Exception as error:  # BackPACK: a module it has no extension for
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:90]
        print(f"  {name}, cockpit economy: fails ({reason})")
        return
    plain()
    base, ratio = paired(plain, theirs, COCKPIT_REPEATS)
    per = COCKPIT_STEPS
    table.add(f"{name}, cockpit economy", "the loop without it", base / per * 1e3,
              base * ratio / per * 1e3, 1.5, unit="ms", higher_is_better=False)  # fmt: skip
    print("    (the 1.5x target column is cockpit's own published figure, GPU)")


if __name__ == "__main__":
    main()
