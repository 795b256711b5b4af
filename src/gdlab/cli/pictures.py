"""gdlab plot, report and compare: figures and a page from a run folder."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gdlab.cli.app import (
    cli,
    data_and_options,
    optimizer_list,
    parse_batch_size,
    parse_pair,
    rebuild_problem,
    run_folder,
    training_options_without,
)
from gdlab.errors import GdlabError, GdlabWarning

if TYPE_CHECKING:  # imported by the command that needs them: --help skips torch
    from gdlab.problem import Problem
    from gdlab.result import FitResult
    from gdlab.tools.surface import Surface


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--params", help="two recorded parameters for the loss surface, e.g. "
              "coef[x],intercept  [default: the first weight and the bias]")  # fmt: skip
@click.option("--data", help="the run's data, if it moved (default: the path the run recorded)")
@click.option("--animate", is_flag=True,
              help="also write descent.gif (and line.gif for one-feature regression)")  # fmt: skip
def plot(run_dir: Path, params: str | None, data: str | None, animate: bool) -> None:
    """Figures of a run: loss, parameters, weight and bias against loss, gradient norms by layer,
    and the loss surface of two parameters with the run's path."""
    from gdlab.outputs import RunLock
    from gdlab.plot import training
    from gdlab.runs import load_run

    if not run_dir.is_dir():
        raise GdlabError(f"{run_dir}: no such run folder.")
    if _watched(run_dir, params=params, data=data, animate=animate):
        return _plot_watched(run_dir)
    with RunLock(run_dir):
        result, state = load_run(run_dir)
        history = result.history
        if not len(history):
            raise GdlabError(f"{run_dir} has no epochs in its history; nothing to plot.")
        figures = {
            "loss.png": training.loss_curve(history),
            "gradients.png": training.gradient_norms(history),
        }
        if len(training.weight_layers(history)) >= 3:  # depth: vanishing, exploding
            figures["layers.png"] = training.depth_figure(history)
        if any(math.isfinite(v) for v in history.lambda_max):  # tracked during training
            figures["sharpness.png"] = training.sharpness_figure(history)
        if history.params:
            figures["params.png"] = training.parameter_curves(history)
            from gdlab.tools.surface import check_pair, default_pair, loss_surface

            pair = default_pair(result) if params is None else parse_pair(params)
            check_pair(result, pair)
            figures["weight_bias.png"] = training.weight_bias_vs_loss(history, *pair)
            problem = rebuild_problem(result, state, data)
            surface = loss_surface(problem, result, pair)
            start = problem.initial_parameters()
            figures["surface.png"] = training.surface_figure(surface, history, start)
        for name, figure in figures.items():
            training.save(figure, run_dir / name)
        written = [run_dir / name for name in figures]
        if not history.params:
            from gdlab.recording import MAX_RECORDED_PARAMETERS

            count = sum(p.numel() for p in result.model.parameters())
            click.echo(
                f"skipped params.png, weight_bias.png and surface.png: the model has {count} "
                f"parameters, and runs record each epoch's parameters only up to "
                f"{MAX_RECORDED_PARAMETERS}, so there is no path to draw"
            )
        if animate and history.params:
            written += _animate_run(run_dir, result, problem, surface, pair)
    click.echo(f"wrote {', '.join(map(str, written))}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--params", help="two recorded parameters for the loss surface  [default: the "
              "first weight and the bias]")  # fmt: skip
@click.option("--data", help="the run's data, if it moved (default: the path the run recorded)")
@click.option("--out", type=click.Path(path_type=Path), help="[default: RUN_DIR/report.html]")
@click.option("--overwrite", is_flag=True, help="allow --out to replace an existing file")
def report(
    run_dir: Path, params: str | None, data: str | None, out: Path | None, overwrite: bool
) -> None:
    """One self-contained HTML file with interactive figures of a run (no network needed)."""
    from plotly.offline import get_plotlyjs

    from gdlab.atomic import write_text
    from gdlab.outputs import RunLock, check_out_file
    from gdlab.report import render, report_data
    from gdlab.runs import load_run, read_summary

    if not run_dir.is_dir():
        raise GdlabError(f"{run_dir}: no such run folder.")
    if out is not None:  # the default, RUN_DIR/report.html, is the report's own file
        check_out_file(out, overwrite=overwrite)
    if _watched(run_dir, params=params, data=data):
        _not_the_run(out, run_dir, [])
        return _report_watched(run_dir, out)
    with RunLock(run_dir):
        result, state = load_run(run_dir)
        inputs = [Path(state["data_path"])] if state.get("data_path") else []
        _not_the_run(out, run_dir, [*inputs, *([Path(data)] if data else [])])
        if not len(result.history):
            raise GdlabError(f"{run_dir} has no epochs in its history; nothing to report.")
        summary = read_summary(run_dir)
        surface, line, start = None, None, None
        if result.history.params:
            from gdlab.tools.surface import check_pair, default_pair, loss_surface

            pair = default_pair(result) if params is None else parse_pair(params)
            check_pair(result, pair)
            problem = rebuild_problem(result, state, data)
            surface = loss_surface(problem, result, pair)
            line = _line_data(result, problem, state)
            initial = problem.initial_parameters()
            start = (initial[pair[0]], initial[pair[1]])
        page = render(f"gdlab run {run_dir}", report_data(result, surface, line, start), summary,
                      plotly_js=get_plotlyjs())  # fmt: skip
        target = out or run_dir / "report.html"
        write_text(target, page)
    click.echo(f"wrote {target}")


def _not_the_run(out: Path | None, run_dir: Path, inputs: list[Path]) -> None:
    """--out is never one of the run's own files (its report.html aside) nor its data."""
    from gdlab.outputs import check_not_input

    if out is not None:
        own = [path for path in run_dir.iterdir() if path.name != "report.html"]
        check_not_input([out], [*own, *inputs])


def _watched(run_dir: Path, **options: Any) -> bool:
    """Whether `run_dir` is a `gdlab.watch` folder; options that only a fit run has are refused."""
    from gdlab.watching.folder import is_watch_folder

    if not is_watch_folder(run_dir):
        return False
    given = [f"--{name}" for name, value in options.items() if value]
    if given:
        raise GdlabError(
            f"{run_dir} is a gdlab.watch folder: {', '.join(given)} applies to gdlab fit runs "
            f"only; leave it out."
        )
    return True


def _plot_watched(run_dir: Path) -> None:
    from gdlab.plot import watch
    from gdlab.plot.training import save
    from gdlab.watching.folder import read

    run = read(run_dir)
    if not len(run.step):
        raise GdlabError(f"{run_dir} has no steps in its history; nothing to plot.")
    figures = {"loss.png": watch.loss_figure(run), "depth.png": watch.depth_heatmap(run),
               "update_ratios.png": watch.update_ratio_figure(run)}  # fmt: skip
    if run.estimates:
        figures["sharpness.png"] = watch.sharpness_figure(run)
    else:
        reasons = [s for s in run.summary.get("skipped", []) if s.startswith("sharpness")]
        click.echo(f"skipped sharpness.png: {reasons[0] if reasons else 'no probe ran'}")
    for name, figure in figures.items():
        save(figure, run_dir / name)
    click.echo(f"wrote {', '.join(str(run_dir / name) for name in figures)}")


def _report_watched(run_dir: Path, out: Path | None) -> None:
    from plotly.offline import get_plotlyjs

    from gdlab.atomic import write_text
    from gdlab.watching.folder import read
    from gdlab.watching.page import render

    run = read(run_dir)
    if not len(run.step):
        raise GdlabError(f"{run_dir} has no steps in its history; nothing to report.")
    target = out or run_dir / "report.html"
    write_text(target, render(f"gdlab watch {run_dir}", run, plotly_js=get_plotlyjs()))
    click.echo(f"wrote {target}")


MAX_DRAWN_POINTS = 5000  # data points a report draws: a page of bounded size on any data


def _line_data(result: Any, problem: Any, state: dict[str, Any]) -> dict[str, Any] | None:
    """For one-feature regression: the data and the line's weight and bias per epoch."""
    coefficients = [name for name in result.history.params if name.startswith("coef[")]
    regression = result.options.resolved_loss in ("mse", "mae", "huber")
    if not (regression and result.spec.degree == 1 and len(coefficients) == 1):
        return None
    history = result.history
    x, y = problem.X[:, 0], problem.y
    drawn = slice(None, None, max(1, -(-len(x) // MAX_DRAWN_POINTS)))  # evenly spaced rows
    return {
        "x": x[drawn].tolist(),
        "y": y[drawn].tolist(),
        "ends": [float(x.min()), float(x.max())],  # over every row, not only those drawn
        "rows": len(x),
        "w": history.params[coefficients[0]],
        "b": history.params.get("intercept", [0.0] * len(history)),
        "feature": result.feature_names[0],
        "target": state["target"],
    }


def _animate_run(run_dir: Path, result: Any, problem: Any, surface: Any, pair: Any) -> list[Path]:
    from gdlab.plot.animate import line_animation, save_gif, surface_animation

    save_gif(surface_animation(surface, {"run": result.history})[0], run_dir / "descent.gif")
    written = [run_dir / "descent.gif"]
    coefficients = [name for name in result.history.params if name.startswith("coef[")]
    regression = result.options.resolved_loss in ("mse", "mae", "huber")
    if regression and result.spec.degree == 1 and len(coefficients) == 1:
        bias = "intercept"
        animation = line_animation(
            problem.X[:, 0], problem.y, result.history, coefficients[0], bias
        )
        save_gif(animation[0], run_dir / "line.gif")
        written.append(run_dir / "line.gif")
    return written


@cli.command()
@click.argument("data")
@click.option("--target", help="column to predict (default for built-in data sets: theirs)")
@click.option("--features", help="comma-separated feature columns (default: every other column)")
@click.option("--batch-sizes", default="full,32,1", show_default=True,
              help="batch (full), mini-batch (N), stochastic (1) descent to compare")  # fmt: skip
@optimizer_list
@training_options_without("optimizer", "batch_size")
@click.option("--params", help="two recorded parameters for the contour  [default: the first "
              "weight and the bias]")  # fmt: skip
@run_folder("folder for compare.png and compare.csv")
@click.option("--animate", is_flag=True, help="also write compare.gif")
def compare(
    data: str,
    target: str | None,
    features: str | None,
    batch_sizes: str,
    optimizers: str,
    params: str | None,
    out: Path | None,
    overwrite: bool,
    animate: bool,
    **raw: Any,
) -> None:
    """Batch, mini-batch and stochastic descent (and optimizers) from the same start, on one
    contour and one loss axis."""
    from gdlab.tools.sweep import parse_optimizers

    names = parse_optimizers(optimizers)
    sizes = [parse_batch_size(size.strip()) for size in batch_sizes.split(",") if size.strip()]
    if not sizes:
        raise GdlabError("--batch-sizes: give one or more of full or N, comma-separated.")
    X, y, columns, options = data_and_options(data, target, features, raw | {"batch_size": None})
    from gdlab.outputs import check_not_input, check_out_dir, claim_default_out_dir

    if out is not None:
        check_out_dir(out, overwrite=overwrite)
        check_not_input(
            [out / name for name in ("compare.png", "compare.csv", "compare.gif")], [Path(data)]
        )
    from gdlab.data.arrays import as_matrix, as_vector
    from gdlab.problem import Problem
    from gdlab.training import fit

    results: dict[str, FitResult] = {}
    steps: dict[str, list[dict[str, float]]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GdlabWarning)
        for name in names:
            for size in sizes:
                label = f"{name}, {'batch' if size is None else f'batch size {size}'}"
                chosen = options.to_dict() | {"optimizer": name, "batch_size": size}
                taken: list[dict[str, float]] = []  # every update: the zigzag of small batches
                steps[label] = taken
                results[label] = fit(X, y, feature_names=columns, stop=lambda: False,
                                     on_step=taken.append, **chosen)  # fmt: skip
        first = next(iter(results.values()))
        matrix = as_matrix(X)[0]
        problem = Problem(first.options, matrix, as_vector(y, len(matrix)), columns, None)
    if not first.history.params:
        raise GdlabError("the model has over 20 parameters, so no paths were recorded to compare.")
    from gdlab.tools.surface import check_pair, default_pair, loss_surface

    pair = default_pair(first) if params is None else parse_pair(params)
    check_pair(first, pair)
    covered = {name: [p[name] for taken in steps.values() for p in taken] for name in pair}
    surface = loss_surface(problem, first, pair, covering=covered)
    _write_comparison(out or claim_default_out_dir(), results, steps, surface, problem, animate)


def _write_comparison(
    out: Path,
    results: dict[str, FitResult],
    steps: dict[str, list[dict[str, float]]],
    surface: Surface,
    problem: Problem,
    animate: bool,
) -> None:
    """compare.png (and .gif), compare.csv, and a line per run on the terminal."""
    from gdlab.plot.training import compare_figure, save

    histories = {label: r.history for label, r in results.items()}
    start = problem.initial_parameters()
    save(compare_figure(surface, histories, start, steps), out / "compare.png")
    rows = ["run,epochs,final_loss,status"] + [
        f'"{label}",{len(r.history)},{r.history.train_loss[-1]!r},{r.status}'
        for label, r in results.items()
    ]
    from gdlab.atomic import write_text

    write_text(out / "compare.csv", "\n".join(rows) + "\n")
    for label, r in results.items():
        click.echo(f"{label:<32} {r.status:<10} {len(r.history):>6} epochs  "
                   f"loss {r.history.train_loss[-1]:.6g}")  # fmt: skip
    if animate:
        from gdlab.plot.animate import save_gif, surface_animation

        save_gif(surface_animation(surface, histories, start, steps)[0], out / "compare.gif")
    gif = f", {out / 'compare.gif'}" if animate else ""
    click.echo(f"wrote {out / 'compare.png'}, {out / 'compare.csv'}{gif}")
