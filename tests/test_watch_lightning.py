"""The watcher as a Lightning callback: the same norms as the gradients by hand, a row an
optimizer step (accumulated batches included), the run folder, and the diagnoses."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("lightning")
import lightning.pytorch as pl

from gdlab.watching.lightning import WatchCallback

pytestmark = [
    pytest.mark.filterwarnings("ignore::gdlab.GdlabWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),  # Lightning's advice on workers
    pytest.mark.filterwarnings("ignore:.*LeafSpec"),  # Lightning on torch 2.13's pytree
]


class Deep(pl.LightningModule):
    def __init__(self, depth: int = 3, activation: type[nn.Module] = nn.Tanh) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth - 1):
            layers += [nn.Linear(4 if i == 0 else 8, 8), activation()]
        self.body = nn.Sequential(*layers, nn.Linear(8, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.body(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def loader(rows: int = 256, batch: int = 32) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 4, generator=g)
    data = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True).sin())
    return torch.utils.data.DataLoader(data, batch_size=batch, shuffle=False)


def fit(module: pl.LightningModule, callback: WatchCallback, **options) -> None:
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, callbacks=[callback],
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, **options)  # fmt: skip
    trainer.fit(module, loader())


def test_the_callback_records_the_norms_of_the_gradients_by_hand(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = Deep()
    start = copy.deepcopy(module.body)
    callback = WatchCallback(out=tmp_path / "run")
    fit(module, callback, max_epochs=1)
    x, y = next(iter(loader()))
    nn.functional.mse_loss(start(x), y).backward()  # the first step's gradient, by hand
    by_layer = {}
    for name, p in start.named_parameters():
        layer = "body." + name.rsplit(".", 1)[0]
        by_layer[layer] = by_layer.get(layer, 0.0) + float(p.grad.double().norm()) ** 2
    assert callback.watcher is not None
    steps = callback.watcher.recorded()
    assert len(steps.step) == 8  # 256 rows in batches of 32
    for j, layer in enumerate(callback.watcher.layers):
        assert steps.grad[0, j] == pytest.approx(math.sqrt(by_layer[layer]), rel=1e-5)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["source"] == "gdlab.watch"


def test_accumulated_batches_are_one_row_an_optimizer_step() -> None:
    torch.manual_seed(0)
    callback = WatchCallback()
    fit(Deep(), callback, max_epochs=1, accumulate_grad_batches=4)
    assert callback.watcher is not None and callback.watcher.steps == 2


def test_a_deep_sigmoid_module_is_diagnosed_vanishing() -> None:
    torch.manual_seed(0)
    callback = WatchCallback()
    fit(Deep(depth=10, activation=nn.Sigmoid), callback, max_epochs=1)
    assert callback.watcher is not None
    kinds = {d["kind"]: d for d in callback.watcher.summary()["diagnoses"]}
    assert kinds["vanishing"]["layer"] == "body.0"
    assert np.isfinite(callback.watcher.recorded().grad).all()
