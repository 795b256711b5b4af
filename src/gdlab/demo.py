"""`gdlab demo`: the tutorials' linear regression, trained twice and explained.

First the tutorial's own loop (nn.Linear, nn.MSELoss, optim.SGD lr=0.01, 1000 epochs on y = 2x),
then gdlab's `gd`, the update p = p - lr * p.grad with no torch.optim, from the same seed. Both must
end on the same parameters.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn, optim

from gdlab.errors import GdlabWarning
from gdlab.history import History
from gdlab.plot.training import loss_curve, save, weight_bias_vs_loss
from gdlab.result import FitResult
from gdlab.training import fit

X_TRAIN = [[1.0], [2.0], [3.0], [4.0]]
Y_TRAIN = [2.0, 4.0, 6.0, 8.0]
LR, EPOCHS, SEED = 0.01, 1000, 0


def tutorial_loop(seed: int = SEED) -> nn.Linear:
    """The tutorial script, verbatim apart from the seed."""
    torch.manual_seed(seed)
    x_train = torch.Tensor(X_TRAIN)
    y_train = torch.Tensor([[v] for v in Y_TRAIN])
    model = nn.Linear(1, 1)
    criterion = nn.MSELoss()
    optimizer = optim.SGD(model.parameters(), lr=LR)
    for _ in range(EPOCHS):
        y_pred = model(x_train)
        loss = criterion(y_pred, y_train)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def first_step(seed: int = SEED) -> str:
    """The first update with real numbers, computed by hand from the seeded initial parameters."""
    torch.manual_seed(seed)
    layer = nn.Linear(1, 1)
    w, b = float(layer.weight.item()), float(layer.bias.item())
    errors = [w * x[0] + b - y for x, y in zip(X_TRAIN, Y_TRAIN, strict=True)]
    loss = sum(e * e for e in errors) / len(errors)
    grad_w = sum(2 * e * x[0] for e, x in zip(errors, X_TRAIN, strict=True)) / len(errors)
    grad_b = sum(2 * e for e in errors) / len(errors)
    return "\n".join(
        [
            f"start (torch.manual_seed({seed}); nn.Linear(1, 1)): w = {w:.6f}, b = {b:.6f}",
            f"  loss = {loss:.6f};  dL/dw = {grad_w:.6f};  dL/db = {grad_b:.6f}",
            f"  w = {w:.6f} - {LR} * {grad_w:.6f} = {w - LR * grad_w:.6f}",
            f"  b = {b:.6f} - {LR} * {grad_b:.6f} = {b - LR * grad_b:.6f}",
            "",
        ]
    )


def run_demo(out: Path, *, echo: Callable[[str], None] = print) -> FitResult:
    echo("The tutorial: x = [1, 2, 3, 4], y = 2x, nn.Linear(1, 1), MSE loss, lr = 0.01.")
    echo("Each epoch: loss = mean((w x + b - y)^2); dL/dw = mean(2 (w x + b - y) x);")
    echo("dL/db = mean(2 (w x + b - y)); then w = w - lr * dL/dw and b = b - lr * dL/db.\n")

    def log(history: History) -> None:
        epoch = history.epoch[-1]
        if epoch == 1 or epoch % 100 == 0:
            w, b = history.params["coef[x]"][-1], history.params["intercept"][-1]
            echo(
                f"epoch {epoch:>4}  weight={w:.6f}  bias={b:.6f}  loss={history.train_loss[-1]:.6g}"
            )

    echo(first_step())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GdlabWarning)  # 1000 epochs on purpose, as the tutorial
        result = fit(
            X_TRAIN,
            Y_TRAIN,
            feature_names=["x"],
            optimizer="gd",
            device="cpu",
            fast_paths="off",  # step by step through autograd, as the tutorial: bit for bit
            on_epoch=log,
            lr=LR,
            epochs=EPOCHS,
            seed=SEED,
            standardize=False,
            dtype="float32",  # the tutorial's own, for the bit-for-bit comparison
            gtol=0.0,  # all 1000 epochs, the lesson's number, whatever the stop tests say
            xtol=0.0,
            tol=0.0,
            patience=EPOCHS,
        )
    history = result.history
    echo("")
    predictions = result.predict(X_TRAIN)
    echo(
        "predictions: "
        + ", ".join(f"x={x[0]:g} -> {p:.4f}" for x, p in zip(X_TRAIN, predictions, strict=True))
    )
    assert result.coef_ is not None and result.intercept_ is not None
    w, b = float(result.coef_[0, 0]), float(result.intercept_[0])
    echo(f"fitted line: y = {w:.4f} x {b:+.4f}   (the exact answer is y = 2 x + 0)\n")

    reference = tutorial_loop()
    w_ref, b_ref = float(reference.weight.item()), float(reference.bias.item())
    echo("Side by side, same seed, 1000 epochs:")
    echo(f"  {'':<34}{'weight':>12}{'bias':>12}")
    echo(f"  {'tutorial loop (torch.optim.SGD)':<34}{w_ref:>12.6f}{b_ref:>12.6f}")
    echo(f"  {'gdlab gd (w = w - lr * w.grad)':<34}{w:>12.6f}{b:>12.6f}")
    echo(f"  largest difference: {max(abs(w - w_ref), abs(b - b_ref)):.2g}\n")

    loss_path, params_path = out / "loss.png", out / "weight_bias_loss.png"
    save(loss_curve(history, title="Tutorial regression: loss by epoch"), loss_path)
    save(weight_bias_vs_loss(history, "coef[x]", "intercept"), params_path)
    echo(f"wrote {loss_path}")
    echo(f"wrote {params_path}")
    return result
