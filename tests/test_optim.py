"""Update rules: gd against torch.optim.SGD, and every optimizer x problem reaches the minimum."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from gdlab.optim.gd import GradientDescent
from gdlab.optim.registry import OPTIMIZERS, bare_step, make_optimizer
from gdlab.optim.schedules import make_schedule


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_gd_trajectory_is_identical_to_torch_sgd(weight_decay: float) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    twin = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    twin.load_state_dict(net.state_dict())
    ours = GradientDescent(net.parameters(), lr=0.05, weight_decay=weight_decay)
    reference = torch.optim.SGD(twin.parameters(), lr=0.05, weight_decay=weight_decay)
    X, y = torch.randn(32, 3), torch.randn(32, 1)
    for _ in range(200):
        for model, optimizer in ((net, ours), (twin, reference)):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(X), y).backward()
            optimizer.step()
        for a, b in zip(net.parameters(), twin.parameters(), strict=True):
            assert torch.equal(a, b)


def test_gd_step_is_the_tutorial_derivative() -> None:
    # Loss = (3 + 3A)^2, dLoss/dA = 18 (A + 1): one step from A = 0.5 with lr 0.01.
    a = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    optimizer = GradientDescent([a], lr=0.01)
    ((3 + 3 * a) ** 2).backward()
    assert a.grad is not None and a.grad.item() == pytest.approx(18 * 1.5)
    optimizer.step()
    assert a.item() == pytest.approx(0.5 - 0.01 * 27.0, abs=1e-15)


def test_gd_rejects_a_bad_learning_rate() -> None:
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        GradientDescent([torch.zeros(1, requires_grad=True)], lr=-1)


def quadratic(p: torch.Tensor) -> torch.Tensor:
    # An elongated bowl with minimum at (1, -2).
    return (p[0] - 1) ** 2 + 10 * (p[1] + 2) ** 2


def rosenbrock(p: torch.Tensor) -> torch.Tensor:
    return (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2


PROBLEMS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], list[float], list[float]]] = {
    "quadratic": (quadratic, [-3.0, 2.0], [1.0, -2.0]),
    "rosenbrock": (rosenbrock, [-1.2, 1.0], [1.0, 1.0]),
}

# Rates and step counts per optimizer and problem: each tuned once, then frozen.
SETTINGS = {
    ("gd", "quadratic"): (0.05, 2000),
    ("sgd", "quadratic"): (0.05, 2000),
    ("momentum", "quadratic"): (0.01, 2000),
    ("nesterov", "quadratic"): (0.01, 2000),
    ("adagrad", "quadratic"): (0.5, 5000),
    ("rmsprop", "quadratic"): (0.001, 10000),
    ("adam", "quadratic"): (0.05, 5000),
    ("adamw", "quadratic"): (0.05, 5000),
    ("gd", "rosenbrock"): (0.0018, 14000),
    ("sgd", "rosenbrock"): (0.0018, 14000),
    ("momentum", "rosenbrock"): (0.0005, 5000),
    ("nesterov", "rosenbrock"): (0.0005, 5000),
    ("adagrad", "rosenbrock"): (0.5, 13000),
    ("rmsprop", "rosenbrock"): (0.0005, 14000),
    ("adam", "rosenbrock"): (0.01, 6500),
    ("adamw", "rosenbrock"): (0.01, 6500),
}


@pytest.mark.slow
@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_reaches_the_known_minimum(name: str, problem: str) -> None:
    function, start, minimum = PROBLEMS[problem]
    lr, steps = SETTINGS[(name, problem)]
    point = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    optimizer = make_optimizer(name, [point], lr=lr, momentum=0.9, weight_decay=0.0)
    for _ in range(steps):
        optimizer.zero_grad()
        function(point).backward()
        optimizer.step()
    assert point.detach().tolist() == pytest.approx(minimum, abs=1e-3)


@pytest.mark.parametrize(
    ("spec", "epoch", "expected"),
    [
        ("constant", 50, 0.1),
        ("step:10,0.5", 25, 0.1 * 0.25),
        ("step", 60, 0.1 * 0.5**2),  # default: halve every epochs // 4 = 25
        ("exponential:0.9", 3, 0.1 * 0.9**3),
        ("cosine", 50, 0.05),
        ("cosine", 0, 0.1),
        ("inverse-scaling:0.5", 3, 0.1 / 2),
    ],
)
def test_schedules_are_functions_of_the_epoch(spec: str, epoch: int, expected: float) -> None:
    assert make_schedule(spec, 0.1, 100)(epoch) == pytest.approx(expected)


Stepper = Callable[[torch.optim.Optimizer], Callable[[], object]]


def adam_run(
    steps: int, step: Stepper, during: Callable[[int, torch.optim.Optimizer], None] | None = None
) -> list[torch.Tensor]:
    """The parameters after `steps` Adam steps made by `step(optimizer)`."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    go = step(optimizer)
    X, y = torch.randn(16, 3), torch.randn(16, 1)
    for k in range(steps):
        if during is not None:
            during(k, optimizer)
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(net(X), y).backward()
        go()
    return [p.detach().clone() for p in net.parameters()]


def test_bare_step_takes_the_same_steps_as_optimizer_step() -> None:
    plain = adam_run(50, lambda optimizer: optimizer.step)
    bare = adam_run(50, bare_step)
    assert all(torch.equal(a, b) for a, b in zip(plain, bare, strict=True))
    assert bare_step(GradientDescent([torch.zeros(1)], lr=0.1)).__name__ == "update"


def test_bare_step_still_runs_hooks_registered_before_or_during_the_run() -> None:
    seen: list[str] = []

    def hooks(k: int, optimizer: torch.optim.Optimizer) -> None:
        if k == 0:
            optimizer.register_step_pre_hook(lambda *_: seen.append("own pre"))
        if k == 3:
            optimizer.register_step_post_hook(lambda *_: seen.append("own post"))

    adam_run(5, bare_step, hooks)
    assert seen.count("own pre") == 5 and seen.count("own post") == 2
    seen.clear()
    handle = register_optimizer_step_pre_hook(lambda *_: seen.append("global"))
    try:
        adam_run(4, bare_step)
    finally:
        handle.remove()
    assert seen == ["global"] * 4


def test_bare_step_leaves_each_step_in_a_profile() -> None:
    with torch.profiler.profile() as profile:
        adam_run(3, bare_step)
    names = [event.name for event in profile.events()]
    assert names.count("Optimizer.step#Adam.step") == 3
