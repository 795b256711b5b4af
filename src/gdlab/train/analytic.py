"""Mini-batch gradients of linear and logistic models without autograd.

For z = X w + b on a batch of B rows, with r the derivative of the loss with respect to z:

    MSE, L = mean((z - y)²):                          r = 2 (z - y) / B
    BCE with logits, L = mean(softplus(z) - y z):     r = (sigmoid(z) - y) / B

and dL/dw = Xᵀ r, dL/db = Σ r. K models on the same rows are one (B, K) score matrix: the
loop trains one, the sweep K copies at K rates. Each step gathers its rows into buffers
allocated once and writes the gradients into the parameters' own .grad tensors, so no step
allocates more than a scalar or builds a graph; the optimizer then steps as usual. The
numbers are autograd's up to rounding.
"""

from __future__ import annotations

import torch
from torch import nn

LOSSES = ("mse", "bce")


class AnalyticGradient:
    """Sets the gradients of K linear models with shared rows and targets for a batch, and
    returns their mean batch loss: K = 1 for the loop's nn.Linear(d, 1) (`of`), K stacked
    copies for the sweep. `weight` is (K, d) or (K, 1, d) and `bias` (K,) or (K, 1), the
    parameters themselves: their .grad is written, in their shapes."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, X: torch.Tensor,
                 y: torch.Tensor, loss: str, batch_size: int) -> None:  # fmt: skip
        if loss not in LOSSES:
            raise ValueError(f"no analytic gradient for loss {loss}")
        self.weight, self.bias, self.X, self.y, self.loss = weight, bias, X, y.reshape(-1), loss
        self.copies, width = len(weight), X.shape[1]
        dtype, device, k = X.dtype, X.device, self.copies
        self.features = torch.empty(batch_size, width, dtype=dtype, device=device)
        self.targets = torch.empty(batch_size, 1, dtype=dtype, device=device)
        self.scores = torch.empty(batch_size, k, dtype=dtype, device=device)
        self.residual = torch.empty(batch_size, k, dtype=dtype, device=device)
        self.losses = torch.empty(k, dtype=dtype, device=device)  # each copy's, last batch
        self.zero = torch.zeros((), dtype=dtype, device=device)
        self.weight_view = weight.detach().view(k, width)
        self.bias_view = None if bias is None else bias.detach().view(k)

    @classmethod
    def of(cls, model: nn.Linear, X: torch.Tensor, y: torch.Tensor, loss: str,
           batch_size: int) -> AnalyticGradient:  # fmt: skip
        return cls(model.weight, model.bias, X, y, loss, batch_size)

    def step_gradient(self, rows: torch.Tensor | None) -> float:
        """Fill .grad for the batch `rows` (None: every row); the mean of the copies' losses."""
        losses = self.gradients(rows)
        return losses.item() if self.copies == 1 else float(losses.mean())

    @torch.no_grad()
    def gradients(self, rows: torch.Tensor | None) -> torch.Tensor:
        """Fill .grad for the batch `rows`; each copy's batch loss, (K,), on the device."""
        size = len(self.X) if rows is None else len(rows)
        features, targets = self.features[:size], self.targets[:size]
        scores, residual = self.scores[:size], self.residual[:size]
        if rows is None:
            features, targets = self.X, self.y[:, None]
        else:
            torch.index_select(self.X, 0, rows, out=features)
            torch.index_select(self.y, 0, rows, out=targets[:, 0])
        if self.bias_view is not None:
            torch.addmm(self.bias_view, features, self.weight_view.T, out=scores)
        else:
            torch.mm(features, self.weight_view.T, out=scores)
        if self.loss == "mse":
            torch.sub(scores, targets, out=residual)
            torch.linalg.vecdot(residual, residual, dim=0, out=self.losses).div_(size)
            scale = 2.0 / size
        else:  # softplus(z) - y z, as logaddexp(0, z) - y z, in the residual's buffer
            torch.logaddexp(self.zero, scores, out=residual)
            torch.mean(residual.addcmul_(targets, scores, value=-1.0), 0, out=self.losses)
            torch.sigmoid(scores, out=residual)
            residual.sub_(targets)
            scale = 1.0 / size
        grad = _gradient_of(self.weight).view(self.weight_view.shape)
        torch.addmm(grad, residual.T, features, beta=0, alpha=scale, out=grad)
        if self.bias is not None:
            bias = _gradient_of(self.bias).view(self.copies)
            torch.sum(residual, dim=0, out=bias).mul_(scale)
        return self.losses


def _gradient_of(param: torch.Tensor) -> torch.Tensor:
    """The parameter's .grad, made once and kept from step to step (or after a zero_grad)."""
    if param.grad is None:
        param.grad = torch.zeros_like(param)
    return param.grad
