"""gdlab plot: each figure is drawn from the run's own numbers (asserted on the drawn data)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from gdlab.history import History
from gdlab.plot.training import (
    colorbar_ticks,
    contour_levels,
    gradient_norms,
    loss_curve,
    surface_figure,
)
from gdlab.runs import load_run
from gdlab.tools.surface import default_pair, loss_surface
from tests.conftest import CliRun
from tests.test_resume import load

matplotlib.use("Agg")


@pytest.fixture
def linear_run(gdlab: Callable[..., CliRun], tmp_path: Path) -> Path:
    out = tmp_path / "run"
    assert gdlab("fit", "noisy-plane", "--lr", "0.05", "--epochs", "300", "--dtype", "float64",
                 "--out", str(out)).code == 0  # fmt: skip
    return out


def problem_for(run: Path):  # type: ignore[no-untyped-def]
    from gdlab.cli.app import rebuild_problem

    result, state = load_run(run)
    return result, rebuild_problem(result, state, None)


def test_the_surface_is_the_loss_and_its_minimum_is_the_closed_form(linear_run: Path) -> None:
    result, problem = problem_for(linear_run)
    pair = default_pair(result)
    assert pair == ("coef[x1]", "intercept")
    surface = loss_surface(problem, result, pair, points=201)
    X, y = load("noisy-plane")
    exact = LinearRegression().fit(X, y)
    row, column = np.unravel_index(np.argmin(surface.loss), surface.loss.shape)
    step_a, step_b = np.diff(surface.a)[0], np.diff(surface.b)[0]
    # the other coefficient is held at its final value, which is the optimum's: the minimum of
    # the plane is the closed form's (coef[x1], intercept), to one grid step
    assert abs(surface.a[column] - exact.coef_[0]) <= step_a
    assert abs(surface.b[row] - exact.intercept_) <= step_b
    best = np.mean((exact.predict(X) - y) ** 2)
    assert surface.loss.min() == pytest.approx(best, rel=1e-4)
    # a point of the grid, recomputed by hand
    coef = [surface.a[3], result.history.params["coef[x2]"][-1]]
    by_hand = np.mean((X @ coef + surface.b[7] - y) ** 2)
    assert surface.loss[7, 3] == pytest.approx(by_hand, rel=1e-12)


@pytest.mark.parametrize(
    ("name", "options"),
    [("noisy-plane", ["--batch-size", "20", "--epochs", "15"]),  # mini-batch: a short path
     ("binary-blobs", ["--epochs", "40"])],  # logistic: the loss row by row
)  # fmt: skip
def test_the_grid_covers_the_whole_path_and_its_final_point_is_the_reported_loss(
    gdlab: Callable[..., CliRun], tmp_path: Path, name: str, options: list[str]
) -> None:
    out = tmp_path / "run"
    assert gdlab("fit", name, "--lr", "0.05", "--dtype", "float64", *options,
                 "--out", str(out)).code == 0  # fmt: skip
    result, problem = problem_for(out)
    pair = default_pair(result)
    surface = loss_surface(problem, result, pair)
    start = problem.initial_parameters()
    for axis, key in ((surface.a, pair[0]), (surface.b, pair[1])):
        path = [start[key], *result.history.params[key]]
        assert axis[0] < min(path) and max(path) < axis[-1]  # with a margin on both sides
    assert surface.rows == surface.of_rows == len(problem.train_rows)  # every training row
    reported = json.loads((out / "summary.json").read_text())["loss"]  # what fit printed
    assert surface.final_loss == pytest.approx(reported, rel=1e-9)


def test_colorbar_ticks_never_read_alike() -> None:
    levels = contour_levels(np.array([[1.0, 1.0 + 1e-5], [1.5, 130.0]]))
    _, labels = colorbar_ticks(levels)
    assert len(set(labels)) == len(labels) >= 5


def test_the_path_drawn_is_the_history(linear_run: Path) -> None:
    result, problem = problem_for(linear_run)
    pair = default_pair(result)
    figure = surface_figure(loss_surface(problem, result, pair), result.history)
    path = next(line for line in figure.axes[0].lines if line.get_label() == "path")
    np.testing.assert_array_equal(path.get_xdata(), result.history.params[pair[0]])
    np.testing.assert_array_equal(path.get_ydata(), result.history.params[pair[1]])
    curve = loss_curve(result.history).axes[0].lines[0]
    np.testing.assert_array_equal(curve.get_ydata(), result.history.train_loss)


def test_gradient_norms_by_layer_draw_each_layer() -> None:
    history = History()
    for epoch, (first, second) in enumerate([(1.0, 0.5), (1e-3, 1e-8), (1e-4, 1e-9)], start=1):
        history.append(
            epoch, 1.0, float("nan"), 0.1, 1.0, None, {"0.weight": first, "2.weight": second}
        )
    axes = gradient_norms(history).axes[0]
    layers = {line.get_label(): line for line in axes.lines}
    np.testing.assert_array_equal(layers["2.weight"].get_ydata(), [0.5, 1e-8, 1e-9])


def test_gdlab_plot_writes_every_figure_for_linear_and_mlp_runs(
    gdlab: Callable[..., CliRun], linear_run: Path, tmp_path: Path
) -> None:
    run = gdlab("plot", str(linear_run))
    assert run.code == 0, run.err
    for name in ("loss.png", "gradients.png", "params.png", "weight_bias.png", "surface.png"):
        assert (linear_run / name).stat().st_size > 10_000
    history = History.load(linear_run / "history.csv")
    assert set(history.grad_norms) == {"weight", "bias"}
    mlp = tmp_path / "mlp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert gdlab("fit", "noisy-plane", "--model", "mlp:3", "--epochs", "50", "--lr", "0.05",
                     "--out", str(mlp)).code == 0  # fmt: skip
    assert gdlab("plot", str(mlp), "--params", "0.weight[0],0.bias[0]").code == 0
    assert (mlp / "surface.png").is_file()
    bad = gdlab("plot", str(mlp), "--params", "0.weight[0]")
    assert bad.code == 2 and "exactly two" in bad.err
    wide = tmp_path / "wide"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert gdlab("fit", "noisy-plane", "--model", "mlp:8", "--epochs", "5", "--lr", "0.05",
                     "--out", str(wide)).code == 0  # fmt: skip
    told = gdlab("plot", str(wide))  # 33 parameters: no per-epoch values were recorded
    assert told.code == 0 and "skipped params.png, weight_bias.png and surface.png" in told.out
    assert "33 parameters" in told.out and not (wide / "surface.png").exists()


def test_compare_draws_every_run_from_one_start(
    gdlab: Callable[..., CliRun], tmp_path: Path
) -> None:
    run = gdlab("compare", "noisy-plane", "--lr", "0.05", "--epochs", "30", "--batch-sizes",
                "full,16,1", "--optimizer", "gd,momentum", "--out", str(tmp_path))  # fmt: skip
    assert run.code == 0, run.err
    rows = (tmp_path / "compare.csv").read_text().splitlines()
    assert len(rows) == 7 and rows[1].startswith('"gd, batch"')
    assert (tmp_path / "compare.png").stat().st_size > 20_000


def test_compare_figure_paths_are_the_histories_after_the_start() -> None:
    import gdlab
    from gdlab.config import make_options
    from gdlab.plot.training import compare_figure
    from gdlab.problem import Problem

    X, y = load("noisy-plane")
    runs = {f"batch {b}": gdlab.fit(X, y, lr=0.05, epochs=20, batch_size=b, stop=lambda: False)
            for b in (None, 8)}  # fmt: skip
    first = next(iter(runs.values()))
    problem = Problem(make_options(lr=0.05), X, y, ["x1", "x2"], None)
    start = problem.initial_parameters()
    surface = loss_surface(problem, first, ("coef[x1]", "intercept"))
    figure = compare_figure(surface, {k: r.history for k, r in runs.items()}, start)
    for label, result in runs.items():
        line = next(line for line in figure.axes[0].lines if line.get_label() == label)
        assert line.get_xdata()[0] == start["coef[x1]"]
        np.testing.assert_array_equal(line.get_xdata()[1:], result.history.params["coef[x1]"])
    losses = {line.get_label(): line for line in figure.axes[1].lines}
    np.testing.assert_array_equal(losses["batch 8"].get_ydata(), runs["batch 8"].history.train_loss)


@pytest.mark.parametrize("batch", [None, 1, 8])
def test_every_update_is_handed_to_on_step_and_drawn_by_compare(batch: int | None) -> None:
    """A mini-batch run's path is its updates, not its epochs: 200 rows in batches of 8 make
    25 updates an epoch; each epoch's last update is the point its history records."""
    import gdlab
    from gdlab.config import make_options
    from gdlab.plot.training import compare_figure
    from gdlab.problem import Problem

    X, y = load("noisy-plane")
    taken: list[dict[str, float]] = []
    result = gdlab.fit(X, y, lr=0.02, epochs=6, batch_size=batch, stop=lambda: False,
                       on_step=taken.append)  # fmt: skip
    per_epoch = 1 if batch is None else -(-len(X) // batch)
    assert len(taken) == 6 * per_epoch
    for name, values in result.history.params.items():
        assert [step[name] for step in taken[per_epoch - 1 :: per_epoch]] == values
    problem = Problem(make_options(lr=0.02), X, y, ["x1", "x2"], None)
    surface = loss_surface(problem, result, ("coef[x1]", "intercept"))
    figure = compare_figure(surface, {"run": result.history}, None, {"run": taken})
    line = next(line for line in figure.axes[0].lines if line.get_label() == "run")
    assert list(line.get_xdata()) == [step["coef[x1]"] for step in taken]


def test_parameter_and_weight_bias_figures_draw_the_history(linear_run: Path) -> None:
    from gdlab.plot.training import parameter_curves, weight_bias_vs_loss

    history = load_run(linear_run)[0].history
    lines = {line.get_label(): line for line in parameter_curves(history).axes[0].lines}
    for name, values in history.params.items():
        np.testing.assert_array_equal(lines[name].get_ydata(), values)
    figure = weight_bias_vs_loss(history, "coef[x1]", "intercept")
    np.testing.assert_array_equal(figure.axes[0].lines[0].get_xdata(), history.params["coef[x1]"])
    np.testing.assert_array_equal(figure.axes[1].lines[0].get_ydata(), history.train_loss)


def test_rate_figures_draw_the_range_tests_sweeps_and_limits() -> None:
    from gdlab.plot.rates import range_test_figure, sweep_curves, sweep_final
    from gdlab.tools.rates import advise
    from gdlab.tools.sweep import sweep

    X, y = load("noisy-plane")
    advice = advise(X, y, seeds=2)
    axes = range_test_figure(advice).axes[0]
    for test, line in zip(advice.range_tests, axes.lines, strict=False):
        np.testing.assert_array_equal(line.get_ydata(), test.smoothed)
    limits = [line.get_xdata()[0] for line in axes.lines if line.get_linestyle() == "--"]
    assert limits == [advice.max_stable_lr]
    marks = {line.get_label(): line for line in axes.lines}
    own = next(line for label, line in marks.items() if label.startswith("range test's"))
    assert own.get_xdata()[0] == advice.range_suggestion  # the test's own rule, drawn
    colours = [str(line.get_color()) for line in axes.lines]
    assert len(set(colours)) == len(colours)  # no seed shares a colour with a mark
    lowest = sorted(t.lrs[int(np.argmin(t.smoothed))] for t in advice.range_tests)[1]  # of 2
    ratio = lowest / advice.max_stable_lr
    note = " ".join(text.get_text() for text in axes.texts)
    assert f"{ratio:.2g}x 2/λmax" in note and ("past the limit" in note) == (ratio > 1)
    runs, _ = sweep(X, y, lrs=[1e-3, 0.1, 2.0], optimizers=["gd"], epochs=30)
    titles = [a.get_title() for a in sweep_curves(runs).axes]
    assert titles == ["too small: gd lr=0.001", "just right: gd lr=0.1", "too large: gd lr=2"]
    final = sweep_final(runs, {"2/λmax": advice.max_stable_lr}).axes[0]
    np.testing.assert_array_equal(final.lines[0].get_ydata(), [runs[0].final, runs[1].final])


def test_a_flat_surface_draws_the_path_without_contours() -> None:
    """An mlp whose units are dead has a flat loss over two parameters: no levels exist."""
    from gdlab.plot.training import compare_figure, contour_levels
    from gdlab.tools.surface import Surface

    grid = np.linspace(-1, 1, 5)
    flat = Surface(("w", "b"), grid, grid, np.full((5, 5), 3.0))
    assert contour_levels(flat.loss) is None
    levels = contour_levels(np.arange(25.0).reshape(5, 5))
    assert levels is not None and levels[0] > 0 and levels[-1] == pytest.approx(24.0)
    history = History()
    for epoch in (1, 2):
        history.append(epoch, 3.0, float("nan"), 0.1, 0.0, {"w": 0.1 * epoch, "b": 0.0})
    figure = surface_figure(flat, history)
    assert figure.axes[0].lines  # the path is drawn
    assert any("flat" in text.get_text() for text in figure.axes[0].texts)
    assert compare_figure(flat, {"gd": history}).axes[0].lines
