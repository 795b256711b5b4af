"""gdlab descend: the tutorials' derivative and update, by hand, and a parser that runs no code."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch

from gdlab.errors import GdlabError
from gdlab.expression import SURFACES, parse
from gdlab.plot.descent import descent_figure, evaluate
from gdlab.tools.descend import descend, parse_start
from tests.conftest import CliRun

matplotlib.use("Agg")


def test_the_tutorial_derivative_and_steps_match_a_hand_calculation() -> None:
    expression = parse("(3+3*A)**2")
    assert str(expression.derivative("A")) == "18*A + 18"  # dLoss/dA = 18(A+1)
    path = descend(expression, {"A": 0.5}, lr=0.05, steps=10)
    a = 0.5
    for t in range(10):
        assert path.points[t][0] == pytest.approx(a, abs=1e-15)
        assert path.values[t] == pytest.approx((3 + 3 * a) ** 2, rel=1e-14)
        assert path.gradients[t][0] == pytest.approx(18 * (a + 1), rel=1e-14)
        a = a - 0.05 * 18 * (a + 1)
    assert path.points[10][0] == pytest.approx(a, rel=1e-13)


@pytest.mark.parametrize("name", list(SURFACES))
def test_surfaces_have_symbolic_gradients_equal_to_autograd(name: str) -> None:
    expression = parse(name)
    point = {"x": 0.3, "y": -0.7}
    tensors = {
        k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in point.items()
    }
    expression(tensors).backward()
    import sympy

    for variable in ("x", "y"):
        symbolic = expression.derivative(variable).subs(
            {sympy.Symbol(k, real=True): v for k, v in point.items()}
        )
        assert float(tensors[variable].grad) == pytest.approx(float(symbolic), rel=1e-12)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("__import__('os').system('echo hacked')", ["call is not allowed", "column 1"]),
        ("(3+3*a", ["column", "never closed"]),
        ("a.real", ["attribute is not allowed"]),
        ("a^2", ["write **"]),
        ("x + y + z", ["one or two variables", "3 (x, y, z)"]),
        ("3 + 4", ["0 (none)"]),
        ("exp", ["exp is a function"]),
        ("[a for a in ()]", ["not allowed"]),
        ("a" * 600, ["under 500"]),
    ],
)
def test_a_bad_expression_is_one_line_naming_the_place(text: str, words: list[str]) -> None:
    with pytest.raises(GdlabError) as error:
        parse(text)
    message = str(error.value)
    assert "\n" not in message and all(word in message for word in words), message


def test_the_drawn_path_is_the_descent_and_the_contour_minimum_is_the_true_one() -> None:
    expression = parse("rosenbrock")
    start = parse_start(None, expression, "rosenbrock")
    paths = [descend(expression, start, optimizer=o, lr=1e-3, steps=300) for o in ("gd", "adam")]
    figure = descent_figure(expression, paths)
    lines = [line for line in figure.axes[0].lines if line.get_label().startswith(("gd", "adam"))]
    for line, path in zip(lines, paths, strict=True):
        np.testing.assert_array_equal(line.get_xdata(), [p[0] for p in path.points])
        np.testing.assert_array_equal(line.get_ydata(), [p[1] for p in path.points])
    X, Y = np.meshgrid(np.linspace(0.5, 1.5, 201), np.linspace(0.5, 1.5, 201))
    Z = evaluate(expression, [X, Y])
    row, column = np.unravel_index(np.argmin(Z), Z.shape)
    assert (X[row, column], Y[row, column]) == pytest.approx((1.0, 1.0))


def test_a_one_variable_figure_draws_the_curve_and_the_points() -> None:
    expression = parse("(3+3*a)**2")
    path = descend(expression, {"a": 0.5}, lr=0.05, steps=8)
    axes = descent_figure(expression, [path]).axes[0]
    curve, drawn = axes.lines[0], axes.lines[1]
    np.testing.assert_allclose(curve.get_ydata(), (3 + 3 * curve.get_xdata()) ** 2)
    np.testing.assert_array_equal(drawn.get_ydata(), path.values)


def test_gdlab_descend_prints_the_derivative_and_the_update(
    gdlab: Callable[..., CliRun], tmp_path: Path
) -> None:
    run = gdlab("descend", "(3+3*a)**2", "--start", "a=0.5", "--steps", "3",
                "--out", str(tmp_path))  # fmt: skip
    assert run.code == 0, run.err
    assert "f'(a) = 18a + 18" in run.out
    assert "0.5 - 0.05*27 = -0.85" in run.out
    assert (tmp_path / "descend.png").stat().st_size > 10_000
    many = gdlab("descend", "himmelblau", "--optimizer", "gd,momentum,adam", "--lr", "0.005",
                 "--out", str(tmp_path / "m"))  # fmt: skip
    assert many.code == 0 and many.out.count("after 50 steps") == 3
    wild = gdlab("descend", "(3+3*a)**2", "--lr", "0.2", "--out", str(tmp_path / "w"))
    assert wild.code == 1 and "lr < 2/λmax = 0.1111" in wild.err
    bad = gdlab("descend", "(1-x)**2", "--start", "y=1")
    assert bad.code == 2 and "a finite value for each variable" in bad.err


def test_a_named_surface_says_whether_each_optimizer_reached_its_minimum() -> None:
    from gdlab.expression import SURFACES, parse
    from gdlab.tools.descend import descend, reached

    expression = parse("rosenbrock")
    start = dict(SURFACES["rosenbrock"][1])
    momentum = descend(expression, start, optimizer="momentum", lr=0.002, steps=1500, momentum=0.9)
    gd = descend(expression, start, optimizer="gd", lr=0.002, steps=1500, momentum=0.9)
    assert reached(momentum, "rosenbrock").startswith("reached the minimum at (1, 1)")
    assert max(abs(v - 1.0) for v in momentum.points[-1]) < 1e-4
    text = reached(gd, "rosenbrock")
    distance = ((gd.points[-1][0] - 1) ** 2 + (gd.points[-1][1] - 1) ** 2) ** 0.5
    assert text.startswith("not at the minimum (1, 1) yet") and f"{distance:.3g} away" in text
    assert "still falling" in text  # gd's values fall at every step on the valley's floor
    assert all(b <= a for a, b in zip(gd.values[-150:], gd.values[-149:], strict=False))
    assert reached(gd, "saddle").startswith("this surface has no minimum")
