"""What `gdlab fit` prints: progress lines (a bar on a terminal) and the finished run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gdlab.cli.app import echo_visible
from gdlab.errors import listed

if TYPE_CHECKING:  # gdlab --help imports this module and must not import torch
    from gdlab.history import History
    from gdlab.result import FitResult

MAX_PRINTED_COEFFICIENTS = 50  # the rest are in summary.json


class Progress:
    """Log lines every N epochs on stdout (stderr with --json); a bar on a terminal; nothing
    at all when `silent` (a data-parallel rank other than 0)."""

    def __init__(
        self, epochs: int | None, done: int, *, log_every: int, quiet: bool, silent: bool = False
    ) -> None:
        self.log_every, self.quiet, self.silent = log_every, quiet, silent
        self.bar: Any = None
        self.row_bar: Any = None
        if sys.stderr.isatty() and not silent:
            from tqdm import tqdm

            self.bar = tqdm(total=epochs, initial=done, unit="epoch", leave=False, file=sys.stderr)

    def update(self, history: History) -> None:
        epoch, loss = history.epoch[-1], history.train_loss[-1]
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        if epoch % self.log_every == 0 and not self.silent:
            values = "  ".join(f"{k}={v[-1]:.6g}" for k, v in list(history.params.items())[:6])
            line = f"epoch {epoch:>6}  loss={loss:.6g}  {values}".rstrip()
            if self.bar is not None:
                self.bar.write(line, file=sys.stderr if self.quiet else sys.stdout)
            else:
                echo_visible(line, err=self.quiet)

    def rows(self, count: int, total: int, unit: str) -> None:
        """`count` more rows (or bytes) of a pass of `total` read from a streamed file: a
        second bar, on a terminal, so that a long epoch shows where it is."""
        if self.bar is None:
            return
        if self.row_bar is None:
            from tqdm import tqdm

            self.row_bar = tqdm(total=total, unit=unit, unit_scale=True, leave=False,
                                file=sys.stderr, desc="rows", position=1)  # fmt: skip
        self.row_bar.update(count)
        if self.row_bar.n >= total:
            self.row_bar.reset(total)

    def close(self) -> None:
        if self.row_bar is not None:
            self.row_bar.close()
        if self.bar is not None:
            self.bar.close()


PATH_TEXT = {
    "exact": "exact (gradients from XᵀX, built in one pass: O(d²) per epoch)",
    "closed-form": "closed form (plain gd on least squares: θ_k = θ* + (I − lr·H)^k (θ_0 − θ*))",
    "analytic": "analytic (mini-batch gradients by formula, buffers allocated once)",
    "autograd": "autograd (forward and backward over the rows every step)",
}


def print_result(result: FitResult, summary: dict[str, Any], out: Path) -> None:
    verdict = result.verdict
    why = ""
    if verdict is not None and verdict.test:
        why = f" ({verdict.test} test{', ' + verdict.reason if verdict.reason else ''})"
    epochs = summary["epochs"]
    echo_visible(
        f"status: {summary['status']} after {epochs} epoch{'' if epochs == 1 else 's'}{why}"
    )
    if verdict is not None:
        for measure in verdict.measures:
            echo_visible(f"  {measure}")
    echo_visible(f"path: {PATH_TEXT.get(result.path, result.path)}")
    echo_visible(f"data: {result.reading}")
    if result.ranks is not None:
        ranks = result.ranks
        echo_visible(
            f"ranks: {ranks['ranks']} ({ranks['backend']}); training {ranks['seconds']:.3g} s, "
            f"all-reduce {ranks['all_reduce_seconds']:.3g} s; one process: about "
            f"{ranks['one_process_seconds']:.3g} s"
        )
    kept = f" (the kept model, epoch {summary['kept_epoch']})" if "kept_epoch" in summary else ""
    if summary["loss"] is not None:
        echo_visible(f"train loss: {summary['loss']:.6g}{kept}")
    if summary.get("val_loss") is not None:
        echo_visible(f"validation loss: {summary['val_loss']:.6g}{kept}")
    if "coef" in summary:
        echo_visible("coefficients (original units):")
        coefficients = list(summary["coef"].items())
        for name, value in coefficients[:MAX_PRINTED_COEFFICIENTS]:
            if isinstance(value, dict):
                inner = listed(f"{k}={v + 0.0:.6g}" for k, v in value.items())
                echo_visible(f"  class {name}: {inner}; intercept={summary['intercept'][name]:.6g}")
            else:
                echo_visible(f"  {name:<12} {value + 0.0: .10g}")  # + 0.0: -0 prints as 0
        if len(coefficients) > MAX_PRINTED_COEFFICIENTS:
            rest = len(coefficients) - MAX_PRINTED_COEFFICIENTS
            echo_visible(f"  ... and {rest} more in {out}/summary.json")
        if not isinstance(summary["intercept"], dict):
            echo_visible(f"  {'intercept':<12} {summary['intercept']: .10g}")
    echo_visible(f"wrote {out}/model.pt, history.csv, summary.json")
