"""The watcher as a Lightning callback: `Trainer(callbacks=[WatchCallback(out="runs/mine")])`.

It watches the module with the trainer's first optimizer from the start of fitting to its end
(or an exception), records a step each time the optimizer steps (so with
`accumulate_grad_batches` one row spans the accumulated batches, its gradient the accumulated
one), passes Lightning's mixed-precision GradScaler so norms are unscaled, and leaves rank 0
alone to write under DDP. Needs `lightning` (`pip install gdlab[lightning]`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from gdlab.errors import GdlabError

try:
    from lightning.pytorch import Callback
except ImportError:
    raise GdlabError(
        "gdlab.watching.lightning needs Lightning: pip install 'gdlab[lightning]'."
    ) from None


class WatchCallback(Callback):
    """`gdlab.watch` for a Lightning Trainer; `watcher` is the Watcher once fitting starts,
    and its `summary()["diagnoses"]` says what is wrong."""

    def __init__(
        self, out: Any = None, probe: Callable[[], torch.Tensor] | None = None, **options: Any
    ) -> None:
        from gdlab.watching.watcher import Watcher

        super().__init__()
        self.out, self.probe, self.options = out, probe, options
        self.watcher: Watcher | None = None
        self._global_step = 0
        self._closed = False

    def on_fit_start(self, trainer: Any, pl_module: torch.nn.Module) -> None:
        from gdlab.watching.watcher import Watcher

        if not trainer.optimizers:
            raise GdlabError("WatchCallback: the trainer has no optimizer to watch.")
        if len(trainer.optimizers) > 1:
            import warnings

            from gdlab.errors import GdlabWarning

            warnings.warn("WatchCallback watches the first of the trainer's optimizers only.",
                          GdlabWarning, stacklevel=2)  # fmt: skip
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        self.watcher = Watcher(pl_module, trainer.optimizers[0], out=self.out, probe=self.probe,
                               scaler=scaler, **self.options)  # fmt: skip
        self.watcher.__enter__()
        self._closed = False
        self._global_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.watcher is None or trainer.global_step == self._global_step:
            return  # an accumulating batch: the optimizer has not stepped yet
        self._global_step = trainer.global_step
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        self.watcher.step(loss if loss is not None else float("nan"))

    def _close(self) -> None:
        """Write the run once (an exception, then the end of fitting, both close it)."""
        if self.watcher is not None and not self._closed:
            self._closed = True
            self.watcher.__exit__(None, None, None)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._close()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._close()
