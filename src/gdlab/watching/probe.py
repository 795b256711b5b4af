"""The curvature a watcher measures on the user's probe batch, without changing training.

The sharpness (the loss Hessian's largest eigenvalue λmax) comes from warm-started power
iteration on Hessian-vector products: by double backward (Pearlmutter's trick) where the model
supports it, and by central differences of gradients, (g(θ + εv) - g(θ - εv)) / 2ε, where it
does not (a kernel without a second derivative). The residual ‖Hv - λv‖ / |λ| of the last
iterate is the estimate's quality.

For Adam and AdamW the raw sharpness has no stability bound: their step is preconditioned,
θ -= lr · P⁻¹ m with P = (1 - β1^t)(√v̂ + ε), and the quantity that meets a threshold is the
preconditioned sharpness λmax(P⁻¹H), stable below (2 + 2β1) / ((1 - β1) lr) (38/lr at
β1 = 0.9; Cohen et al. 2022, "Adaptive gradient methods at the edge of stability"). Power
iteration then runs on the symmetric P^-1/2 H P^-1/2, which has the same eigenvalues.

`untouched` is the promise that a probe never changes the run: it saves and restores the
global RNG states (CPU and CUDA), every module's train/eval mode (the probe runs in eval
mode, so dropout draws nothing and BatchNorm neither uses nor updates batch statistics),
every buffer (running statistics) and every `.grad`; the parameters are restored from a copy
after finite differences, so they are bit-identical afterwards.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

STEPS = 20  # the most Hessian-vector products an estimate takes...
TOLERANCE = 0.02  # ...stopping once the residual is below this (warm-started: a few suffice)
EPSILON = 1e-3  # the finite-difference step, relative to ‖θ‖ (in float32: ~sqrt of eps)


@dataclass(frozen=True)
class Sharpness:
    value: float  # λmax estimate (the Rayleigh quotient of the last iterate)
    residual: float  # ‖Hv - λv‖ / |λ|: 0 for an exact eigenvector
    method: str  # "double backward" or "finite differences"


@contextlib.contextmanager
def untouched(model: nn.Module, params: list[torch.Tensor]) -> Iterator[None]:
    """Everything a probe could change, put back as it was (see the module's docstring)."""
    modes = [(module, module.training) for module in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    grads = [p.grad for p in params]
    for p in params:  # a probe that calls backward() accumulates into fresh tensors
        p.grad = None
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None  # type: ignore[no-untyped-call]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        for p, grad in zip(params, grads, strict=True):
            p.grad = grad
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


WRAPPED = "_orig_mod"  # the attribute torch.compile keeps the user's module under


def plain_name(model: nn.Module, name: str) -> str:
    """A parameter's or module's name as the user wrote the model: without the `module.` of a
    DistributedDataParallel or DataParallel wrapper, nor the `_orig_mod.` of torch.compile,
    so that a wrapped run's layers are the plain run's (and the two compare)."""
    parts = name.split(".")
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            attribute = "module"
        elif isinstance(getattr(model, WRAPPED, None), nn.Module):
            attribute = WRAPPED
        else:
            break
        if parts[:1] == [attribute]:
            parts = parts[1:]
        model = getattr(model, attribute)
    return ".".join(part for part in parts if part != WRAPPED)  # a compiled submodule too


SATURATING = {"Sigmoid": (0.01, 0.99), "Tanh": (-0.99, 0.99), "Hardtanh": (-0.99, 0.99)}
SATURATED = 0.5  # the share of a squashing layer's outputs near its bounds that is named


def activations(model: nn.Module, probe: Callable[[], torch.Tensor]) -> str:
    """What the probe batch's forward pass shows of the activations, as one clause: squashing
    layers (sigmoid, tanh) whose outputs sit mostly at their flat ends, and ReLU layers with
    units that are 0 for every row (dead); "" when none. The caller holds `untouched`."""
    saturated: dict[str, float] = {}
    dead: dict[str, float] = {}
    hooks = []

    def watch(name: str, kind: str) -> Callable[..., None]:
        def hook(_: nn.Module, __: object, out: torch.Tensor) -> None:
            if not isinstance(out, torch.Tensor) or not out.numel():
                return
            y = out.detach().float()
            if kind in SATURATING:
                low, high = SATURATING[kind]
                saturated.setdefault(name, float(((y <= low) | (y >= high)).float().mean()))
            elif y.ndim >= 2:  # a ReLU unit dead on every row
                dead.setdefault(name, float((y.reshape(len(y), -1) <= 0).all(0).float().mean()))

        return hook

    for name, module in model.named_modules():
        kind = type(module).__name__
        if kind in (*SATURATING, "ReLU"):
            hooks.append(module.register_forward_hook(watch(plain_name(model, name), kind)))
    try:
        with torch.no_grad():
            probe()
    finally:
        for handle in hooks:
            handle.remove()
    said = []
    shown = {n: v for n, v in saturated.items() if v >= SATURATED}
    if shown:
        listed = ", ".join(f"{n} ({v:.0%})" for n, v in shown.items())
        said.append(f"saturated on the probe batch, with that share of outputs at the flat "
                    f"ends where the derivative is near 0: {listed}")  # fmt: skip
    shown = {n: v for n, v in dead.items() if v >= SATURATED}
    if shown:
        listed = ", ".join(f"{n} ({v:.0%} of units)" for n, v in shown.items())
        said.append(f"dead ReLU units, 0 on every probe row: {listed}")
    return "; ".join(said)


def gradient_of(
    probe: Callable[[], torch.Tensor], params: list[torch.Tensor], *, graph: bool
) -> list[torch.Tensor]:
    loss = probe()
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TypeError("the probe must return the loss as a one-element tensor")
    return list(torch.autograd.grad(loss, params, create_graph=graph, allow_unused=True))


def sharpness(
    probe: Callable[[], torch.Tensor],
    params: list[torch.Tensor],
    start: list[torch.Tensor] | None,
    *,
    steps: int = STEPS,
    tolerance: float = TOLERANCE,
    method: str = "double backward",
    scale: list[torch.Tensor] | None = None,
) -> tuple[Sharpness, list[torch.Tensor]]:
    """λmax on the probe by power iteration from `start` (random the first time), and the
    last iterate to warm-start the next estimate; with `scale` (P^-1/2, see `preconditioner`)
    λmax of P^-1/2 H P^-1/2. The caller holds `untouched`."""
    vector = start if start is not None else [torch.randn_like(p) for p in params]
    vector = _normalised(vector)
    product: Callable[[list[torch.Tensor]], list[torch.Tensor]]
    if method == "double backward":
        grads = [
            g if g is not None else torch.zeros_like(p)
            for g, p in zip(gradient_of(probe, params, graph=True), params, strict=True)
        ]
        if not any(g.requires_grad for g in grads):
            raise RuntimeError("the probe's gradient has no second derivative")

        def second(v: list[torch.Tensor]) -> list[torch.Tensor]:
            out = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True,
                                      allow_unused=True)  # fmt: skip
            if all(o is None for o in out):  # a once-differentiable kernel cuts the graph
                raise RuntimeError("the probe's gradient has no second derivative")
            return [o.detach() if o is not None else torch.zeros_like(p)
                    for o, p in zip(out, params, strict=True)]  # fmt: skip

        product = second
    else:
        product = _finite_differences(probe, params)
    if scale is not None:
        plain, d = product, scale

        def product(v: list[torch.Tensor]) -> list[torch.Tensor]:
            image = plain([x * y for x, y in zip(v, d, strict=True)])
            return [x * y for x, y in zip(image, d, strict=True)]

    value, residual = math.nan, math.nan
    for _ in range(steps):
        image = product(vector)
        value = float(sum((v * i).sum() for v, i in zip(vector, image, strict=True)))
        residual = _norm([i - value * v for i, v in zip(image, vector, strict=True)])
        residual = residual / abs(value) if value else math.inf
        if residual < tolerance:
            break
        norm = _norm(image)
        if not (norm > 0 and math.isfinite(norm)):
            break
        vector = [i / norm for i in image]
    return Sharpness(value, residual, method), vector


def _finite_differences(
    probe: Callable[[], torch.Tensor], params: list[torch.Tensor]
) -> Callable[[list[torch.Tensor]], list[torch.Tensor]]:
    saved = [p.detach().clone() for p in params]
    size = max(_norm(saved), 1.0)

    def gradient() -> list[torch.Tensor]:
        found = gradient_of(probe, params, graph=False)
        return [g if g is not None else torch.zeros_like(p)
                for g, p in zip(found, params, strict=True)]  # fmt: skip

    def product(v: list[torch.Tensor]) -> list[torch.Tensor]:
        step = EPSILON * size
        try:
            with torch.no_grad():
                torch._foreach_add_([p.data for p in params], v, alpha=step)
            plus = gradient()
            with torch.no_grad():
                torch._foreach_add_([p.data for p in params], v, alpha=-2 * step)
            minus = gradient()
        finally:
            with torch.no_grad():
                for p, s in zip(params, saved, strict=True):
                    p.data.copy_(s)  # bit-identical: never θ + εv - εv
        return [(a - b) / (2 * step) for a, b in zip(plus, minus, strict=True)]

    return product


def _norm(tensors: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in tensors))


def _normalised(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    norm = _norm(tensors)
    return [t / norm for t in tensors] if norm > 0 else tensors


ADAPTIVE = ("Adam", "AdamW")  # the optimizers whose preconditioner `preconditioner` reads


def preconditioner(
    optimizer: torch.optim.Optimizer, params: list[torch.Tensor]
) -> list[torch.Tensor] | None:
    """P^-1/2 for each parameter of an Adam or AdamW optimizer, P = (1 - β1^t)(√v̂ + ε) from
    its state (max v̂ with amsgrad); None for other optimizers or before its first step."""
    if type(optimizer).__name__ not in ADAPTIVE:
        return None
    groups = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    scales = []
    for p in params:
        state, group = optimizer.state.get(p, {}), groups.get(id(p))
        if group is None or "exp_avg_sq" not in state:
            return None
        beta1, beta2 = group["betas"]
        t = float(state["step"])
        v = state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"]
        p_diag = (1 - beta1**t) * ((v / (1 - beta2**t)).sqrt() + group["eps"])
        scales.append(p_diag.rsqrt())
    return scales


def threshold(optimizer: torch.optim.Optimizer) -> tuple[float, str]:
    """The largest sharpness at which the optimizer's step is stable on a quadratic, for its
    first parameter group: 2/lr (SGD), 2(1+β)/lr (heavy-ball momentum β); for Adam and AdamW
    the preconditioned sharpness's (2+2β1)/((1-β1)lr); nan with the reason for others."""
    group = optimizer.param_groups[0]
    lr = float(group["lr"])
    name = type(optimizer).__name__
    if name == "SGD":
        beta = float(group.get("momentum", 0.0))
        if group.get("nesterov"):
            return 2 * (1 + beta) / (lr * (1 + 2 * beta)), f"2(1+β)/((1+2β)lr), β={beta:g}"
        return (2 * (1 + beta) / lr, f"2(1+β)/lr, β={beta:g}") if beta else (2 / lr, "2/lr")
    if name in ADAPTIVE:
        beta1 = float(group["betas"][0])
        return (2 + 2 * beta1) / ((1 - beta1) * lr), f"(2+2β1)/((1-β1)lr), β1={beta1:g}"
    return math.nan, f"{name}: no threshold known for its steps (only SGD, Adam and AdamW)"
