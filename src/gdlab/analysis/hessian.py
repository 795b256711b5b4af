"""Extreme eigenvalues of the training loss's Hessian for any model, through autograd.

Up to `EXACT_LIMIT` (200) parameters the Hessian is formed (torch.func.hessian) and diagonalised.
Above it only Hessian-vector products are used (the gradient's graph differentiated again),
fed to ARPACK's Lanczos iteration (scipy.sparse.linalg.eigsh): memory stays O(parameters).
Everything runs in float64 on a copy of the model; the model itself is not touched.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from gdlab.analysis.curvature import Curvature

EXACT_LIMIT = 200  # formed and diagonalised up to here (fast); never above 2000
LANCZOS_STEPS = 300  # ARPACK restarts at most this often: seconds, not minutes, on 650 parameters
POWER_STEPS = 100  # the fallback for λmax when Lanczos does not converge
LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class HessianSpectrum:
    curvature: Curvature
    method: str  # "exact" or "lanczos"
    n_parameters: int
    quality: str = ""  # empty when both ends converged; else what the estimate is worth


def flat_loss(
    model: nn.Module, loss_fn: LossFunction, X: torch.Tensor, y: torch.Tensor
) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """The loss as a function of one flat float64 parameter vector, and the current vector."""
    double = copy.deepcopy(model).double()
    names = [name for name, p in double.named_parameters() if p.requires_grad]
    shapes = [p.shape for name, p in double.named_parameters() if p.requires_grad]
    sizes = [math.prod(shape) for shape in shapes]
    start = torch.cat([p.detach().reshape(-1) for p in double.parameters() if p.requires_grad])
    inputs = X.double()
    targets = y if not y.is_floating_point() else y.double()

    def loss(flat: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(flat, sizes)
        params = {n: piece.reshape(s) for n, piece, s in zip(names, pieces, shapes, strict=True)}
        return loss_fn(functional_call(double, params, (inputs,)), targets)

    return loss, start


def hessian_spectrum(
    model: nn.Module,
    loss_fn: LossFunction,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    weight_decay: float = 0.0,
    exact_limit: int = EXACT_LIMIT,
) -> HessianSpectrum:
    """λmax and λmin of the Hessian of loss + (weight_decay/2)|p|² at the model's parameters."""
    loss, start = flat_loss(model, loss_fn, X, y)
    n = start.numel()
    if n <= exact_limit:
        matrix = torch.func.hessian(loss)(start)
        eigenvalues = torch.linalg.eigvalsh((matrix + matrix.T) / 2)
        low, high = float(eigenvalues[0]), float(eigenvalues[-1])
        method = "exact"
        quality = ""
    else:
        low, high, quality = _lanczos_extremes(loss, start)
        method = "lanczos"
    return HessianSpectrum(Curvature(high + weight_decay, low + weight_decay), method, n, quality)


def hessian_vector_product(
    loss: Callable[[torch.Tensor], torch.Tensor], at: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """v -> H(at) v without forming H: the gradient's graph is built once, then differentiated
    along v (Pearlmutter's trick, reverse over reverse)."""
    point = at.detach().clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(loss(point), point, create_graph=True)

    def product(vector: torch.Tensor) -> torch.Tensor:
        (result,) = torch.autograd.grad(gradient, point, grad_outputs=vector, retain_graph=True)
        return result.detach()

    return product


def _lanczos_extremes(
    loss: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor
) -> tuple[float, float, str]:
    """λmin, λmax by Lanczos with a bounded number of restarts, and a note on their quality.
    A λmax that does not converge falls back to power iteration (a lower bound that is
    usually within a few percent); a λmin that does not converge (a cluster of eigenvalues at
    0, as softmax's over-parameterised Hessian has) is reported as its last estimate, clipped
    at 0 for the lower end."""
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    product = hessian_vector_product(loss, start)
    n = start.numel()

    def matvec(vector: np.ndarray) -> np.ndarray:
        result = product(torch.from_numpy(np.ascontiguousarray(vector, dtype=np.float64)))
        return result.detach().numpy()

    operator = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    rng = np.random.default_rng(0)  # a fixed start vector: the same answer every time
    notes: list[str] = []

    def extreme(which: str) -> float:
        try:
            values = eigsh(operator, k=1, which=which, tol=1e-8, maxiter=LANCZOS_STEPS,
                           v0=rng.normal(size=n), return_eigenvectors=False)  # fmt: skip
            return float(values[0])
        except ArpackNoConvergence as error:
            end = "λmax" if which == "LA" else "λmin"
            notes.append(f"{end} did not converge in {LANCZOS_STEPS} Lanczos restarts")
            found = np.asarray(error.eigenvalues)
            return float(found[0]) if found.size else math.nan

    high = extreme("LA")
    if not math.isfinite(high):
        high, _ = power_iteration(product, torch.from_numpy(rng.normal(size=n)), POWER_STEPS)
        notes.append(f"λmax from {POWER_STEPS} power-iteration steps (a lower bound)")
    low = extreme("SA")
    if not math.isfinite(low):
        low = 0.0
        notes.append("λmin taken as 0")
    return low, high, "; ".join(notes)


def power_iteration(
    product: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, steps: int
) -> tuple[float, torch.Tensor]:
    """The Rayleigh quotient of the top eigenvector's power-iteration estimate after `steps`
    products from `start`, and that estimate (to warm-start the next call)."""
    vector = start / torch.linalg.vector_norm(start)
    value = math.nan
    for _ in range(steps):
        image = product(vector)
        value = float(vector @ image)
        norm = float(torch.linalg.vector_norm(image))
        if not (norm > 0 and math.isfinite(norm)):
            break
        vector = image / norm
    return value, vector
