"""Mini-batch gradients of linear and logistic models without autograd.

For z = X w + b on a batch of B rows, with r the derivative of the loss with respect to z:

    MSE, L = mean((z - y)²):                          r = 2 (z - y) / B
    BCE with logits, L = mean(softplus(z) - y z):     r = (sigmoid(z) - y) / B

and dL/dw = Xᵀ r, dL/db = Σ r. Each step gathers its rows into buffers allocated once and
writes the gradients into the parameters' own .grad tensors, so no step allocates more than
a scalar or builds a graph; the optimizer then steps as usual. The numbers are autograd's up
to rounding.
"""

from __future__ import annotations

import torch
from torch import nn

LOSSES = ("mse", "bce")


class AnalyticGradient:
    """Sets an nn.Linear(d, 1)'s gradients for a batch of rows and returns the batch loss."""

    def __init__(self, model: nn.Linear, X: torch.Tensor, y: torch.Tensor, loss: str,
                 batch_size: int) -> None:  # fmt: skip
        if loss not in LOSSES:
            raise ValueError(f"no analytic gradient for loss {loss}")
        self.model, self.X, self.y, self.loss = model, X, y.reshape(-1), loss
        dtype, device = X.dtype, X.device
        self.features = torch.empty(batch_size, X.shape[1], dtype=dtype, device=device)
        self.targets = torch.empty(batch_size, dtype=dtype, device=device)
        self.scores = torch.empty(batch_size, dtype=dtype, device=device)
        self.residual = torch.empty(batch_size, dtype=dtype, device=device)
        self.zero = torch.zeros((), dtype=dtype, device=device)
        self.weight_view = model.weight.detach()[0]

    @torch.no_grad()
    def step_gradient(self, rows: torch.Tensor | None) -> float:
        """Fill .grad for the batch `rows`; the batch's mean loss. Only mini-batches come here
        (the loop passes None for a full batch, which this path is never built for)."""
        assert rows is not None, "analytic gradients are for mini-batches"
        size = len(rows)
        features, targets = self.features[:size], self.targets[:size]
        scores, residual = self.scores[:size], self.residual[:size]
        torch.index_select(self.X, 0, rows, out=features)
        torch.index_select(self.y, 0, rows, out=targets)
        bias = self.model.bias
        if bias is not None:
            torch.addmv(bias.detach(), features, self.weight_view, out=scores)
        else:
            torch.mv(features, self.weight_view, out=scores)
        if self.loss == "mse":
            torch.sub(scores, targets, out=residual)
            loss = residual.dot(residual).item() / size
            scale = 2.0 / size
        else:  # softplus(z) - y z, as logaddexp(0, z) - y z, in the residual's buffer
            torch.logaddexp(self.zero, scores, out=residual)
            loss = residual.addcmul_(targets, scores, value=-1.0).mean().item()
            torch.sigmoid(scores, out=residual)
            residual.sub_(targets)
            scale = 1.0 / size
        weight = self.model.weight
        if weight.grad is None:  # kept from step to step; made once (or after a zero_grad)
            weight.grad = torch.zeros_like(weight)
        torch.addmv(weight.grad[0], features.T, residual, beta=0, alpha=scale, out=weight.grad[0])
        if bias is not None:
            if bias.grad is None:
                bias.grad = torch.zeros_like(bias)
            torch.sum(residual, dim=0, keepdim=True, out=bias.grad).mul_(scale)
        return loss
