"""The command line. Training options come from `gdlab.config.OPTIONS`; torch loads lazily."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from gdlab.config import (
    OPTIONS,
    OPTIONS_BY_NAME,
    PARSED,
    FitOptions,
    Option,
    invalid,
    make_options,
    parse_value,
)
from gdlab.errors import GdlabError, GdlabWarning, listed
from gdlab.interrupts import Interrupted

if TYPE_CHECKING:
    from gdlab.history import History
    from gdlab.result import FitResult

EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 1, 130


def visible(text: str) -> str:
    """Text as the terminal should show it: control characters (escape sequences, newlines in
    a column name) written as Python escapes, never acted on; everything else as it is."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


# Parameters a message may name that are flags here but not training options.
CLI_PARAMETERS = ("target", "features", "resume", "out", "overwrite")
_NAMED = re.compile(r"`([a-z_]+)(?:=([^`]*))?`")


def as_flags(message: str) -> str:
    """The core names parameters as Python does (`batch_size`, `lr=0.4`); here they are
    flags (--batch-size, --lr 0.4, --no-standardize). Other backticked text is kept."""

    def flag(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        if name not in OPTIONS_BY_NAME and name not in CLI_PARAMETERS:
            return match.group(0)
        dashed = "--" + name.replace("_", "-")
        if value in ("True", "False"):
            return dashed if value == "True" else "--no-" + name.replace("_", "-")
        return dashed if value is None else f"{dashed} {value}"

    return _NAMED.sub(flag, message)


def fail(message: str) -> NoReturn:
    click.echo(f"gdlab: error: {visible(as_flags(message))}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def warn(message: str) -> None:
    click.echo(f"gdlab: warning: {visible(as_flags(message))}", err=True)


def _echo(text: str, **kwargs: Any) -> None:
    """click.echo for lines that carry names from the user's data."""
    click.echo("\n".join(visible(line) for line in text.split("\n")), **kwargs)


def _batch_size(value: str | None) -> int | None:
    """A batch size written as text ('full' or N), read as `gdlab.fit` reads it."""
    size = parse_value("batch_size", value or "full")
    if not OPTIONS_BY_NAME["batch_size"].constraint.check(size):
        raise invalid("batch_size", value, OPTIONS_BY_NAME["batch_size"].constraint.describe)
    return size  # type: ignore[no-any-return]


def _option_decorator(option: Option) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """One click option per row of the table, with its default shown in --help."""
    flag = "--" + option.name.replace("_", "-")
    if isinstance(option.default, bool):
        return click.option(
            f"{flag}/--no-{flag[2:]}", default=option.default, show_default=True, help=option.help
        )
    if option.name in PARSED:  # text, read by config.parse_value as gdlab.fit reads it
        default = option.default
        if default is None:  # the word for "not set": every row, or the automatic budget
            default = "full" if option.name == "batch_size" else "auto"
        return click.option(flag, default=default, show_default=True, help=option.help)
    kind: Any = str
    if isinstance(option.default, float):
        kind = float
    elif isinstance(option.default, int):
        kind = int
    described = option.help if kind is not str else f"{option.help} ({option.constraint.describe})"
    return click.option(flag, type=kind, default=option.default, show_default=True, help=described)


def training_options(
    command: Callable[..., Any],
    exclude: tuple[str, ...] = (),
    defaults: dict[str, Any] | None = None,
) -> Callable[..., Any]:
    """The table's options as click options; `defaults` replaces some defaults for a command
    whose runs are pictures of a fixed length (sweep, compare) rather than fits to the end."""
    for option in reversed(OPTIONS):
        if option.name not in exclude:
            if defaults and option.name in defaults:
                option = dataclasses.replace(option, default=defaults[option.name])
            command = _option_decorator(option)(command)
    return command


def model_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of `gdlab fit` that describe the model and its training, less the rate."""
    return training_options(command, exclude=("lr",))


# Pictures of descent (a sweep of rates, batch sizes side by side) run a fixed 1000 epochs at a
# rate the user compares, as the tutorials do, rather than fitting to the end.
PICTURE_DEFAULTS = {"epochs": 1000, "lr": "0.01"}


def training_options_without(
    *names: str,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return lambda command: training_options(command, exclude=names, defaults=PICTURE_DEFAULTS)


def run_folder(holds: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--out (a run folder, by default runs/<time>) and --overwrite, for commands that write one."""

    def add(command: Callable[..., Any]) -> Callable[..., Any]:
        command = click.option(
            "--overwrite", is_flag=True, help="allow --out to be a folder that holds files"
        )(command)
        return click.option(
            "--out", type=click.Path(path_type=Path), help=f"{holds}  [default: runs/<time>]"
        )(command)

    return add


optimizer_list = click.option(
    "--optimizer", "optimizers", default="gd", show_default=True,
    help="one or more, comma-separated: gd,momentum,adam",
)  # fmt: skip


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gdlab")
def cli() -> None:
    """Train models by gradient descent and see every step."""


@cli.command()
def datasets() -> None:
    """List the built-in data sets (use their names in place of a file)."""
    from gdlab.data.builtin import DATASETS

    for dataset in DATASETS.values():
        click.echo(
            f"{dataset.name:<15} target {dataset.target:<6} model {dataset.model:<9} "
            f"{dataset.description}"
        )


@cli.command()
@click.argument("data", required=False)
@click.option("--target", help="column to predict (default for built-in data sets: theirs)")
@click.option("--features", help="comma-separated feature columns (default: every other column)")
@training_options
@run_folder("run folder")
@click.option(
    "--resume",
    type=click.Path(path_type=Path),
    help="continue the run in this folder (to --epochs); data and options come from it",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="epochs between checkpoints (0: only at the end or when stopped); checkpoints "
    "that take over a second are spaced out to a tenth of the run time",
)
@click.option(
    "--log-every",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="epochs between log lines",
)
@click.option(
    "--json", "as_json", is_flag=True, help="print one JSON object on stdout, nothing else"
)
def fit(
    data: str | None,
    target: str | None,
    features: str | None,
    out: Path | None,
    overwrite: bool,
    resume: Path | None,
    checkpoint_every: int,
    log_every: int,
    as_json: bool,
    **raw: Any,
) -> None:
    """Fit a model to DATA (a CSV, Parquet, .npz or .npy file, or a built-in data set).

    Ctrl-C or SIGTERM stops after the current step and saves the run; `--resume RUN_DIR`
    continues it exactly where it stopped.
    """
    raw["batch_size"] = _batch_size(raw["batch_size"])
    for name, value, low in (
        ("log_every", log_every, 1),
        ("checkpoint_every", checkpoint_every, 0),
    ):
        if value < low:
            raise GdlabError(
                f"The `{name}` option must be an integer >= {low}. Got {value} instead."
            )
    context = click.get_current_context()
    given = {
        name: value
        for name, value in raw.items()
        if context.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
    }
    columns = None if features is None else [name.strip() for name in features.split(",")]
    run = _RunSettings(checkpoint_every, log_every, as_json)
    if resume is not None:
        _resume(resume, data, target, columns, given, out, run)
        return
    if data is None:
        raise GdlabError(
            "DATA is missing: give a CSV, Parquet, .npz or .npy file or a built-in data set "
            "(gdlab datasets), or --resume RUN_DIR."
        )
    from gdlab.data.builtin import DATASETS

    if data in DATASETS and "model" not in given:
        raw["model"] = DATASETS[data].model  # each built-in set comes with its natural model
    options = make_options(**raw)  # every option is checked before any data is read
    from gdlab.runs import RUN_FILES, check_not_input, check_out_dir, claim_default_out_dir

    if out is not None:
        check_out_dir(out, overwrite=overwrite)
        check_not_input([out / name for name in RUN_FILES], [Path(data)])
    source, frame, default_target = _load(data)
    target = target or default_target
    if target is None:
        raise GdlabError(f"--target is required: name the column of {source} to predict.")
    from gdlab.data.columns import select

    X, y, names = select(frame, source, target, columns)
    from gdlab.runs import RunLock

    claimed = out is None
    out = out or claim_default_out_dir()
    with RunLock(out, created=claimed):
        check_out_dir(out, overwrite=overwrite)  # another process may have filled it meanwhile
        saved = _SavedRun(out, target, source, _data_path(data))
        _run(X, y, names, options, saved, run, previous=None)


@dataclass(frozen=True)
class _RunSettings:
    checkpoint_every: int
    log_every: int
    as_json: bool


@dataclass(frozen=True)
class _SavedRun:
    """Where a run is written and what it records about its data."""

    out: Path
    target: str
    source: str
    data_path: str | None


def _data_path(data: str) -> str | None:
    """An absolute path for a file (a resumed run finds it from anywhere); None for built-ins."""
    from gdlab.data.builtin import DATASETS

    if data in DATASETS and not Path(data).exists():
        return None
    return str(Path(data).resolve())


def _resume(
    run_dir: Path,
    data: str | None,
    target: str | None,
    columns: list[str] | None,
    given: dict[str, Any],
    out: Path | None,
    run: _RunSettings,
) -> None:
    if out is not None and out.resolve() != run_dir.resolve():
        raise GdlabError("--resume writes into the run's own folder; drop --out.")
    from gdlab.runs import MODEL_FILE, RunLock, load_run, resume_options

    if not run_dir.is_dir():
        raise GdlabError(f"--resume {run_dir}: no such run folder.")
    with RunLock(run_dir):
        previous, state = load_run(run_dir)
        options, notes = resume_options(state, given, run_dir / MODEL_FILE)
        for name, value, saved in (("target", target, state["target"]),
                                   ("features", columns, state["features"])):  # fmt: skip
            if value is not None and value != saved:
                raise GdlabError(
                    f"{run_dir} was trained with --{name} {saved}; drop --{name} to resume."
                )
        data = data or state["data_path"] or state["data"]
        assert data is not None
        source, frame, _ = _load(data)
        from gdlab.data.arrays import as_matrix, as_vector, fingerprint
        from gdlab.data.columns import select

        X, y, names = select(frame, source, state["target"], state["features"])
        matrix = as_matrix(X)[0]
        if fingerprint(matrix, as_vector(y, len(matrix))) != state["fingerprint"]:
            raise GdlabError(
                f"{source} is not the data {run_dir} was trained on (its rows or values "
                f"differ); resume with the original data, or start a new run."
            )
        for note in notes:
            warn(note)
        if not run.as_json:
            click.echo(
                f"resuming {run_dir} after epoch {len(previous.history)} of {options.epochs}"
            )
        saved = _SavedRun(run_dir, state["target"], state["data"], state["data_path"])
        _run(X, y, names, options, saved, run, previous=previous)


def _run(
    X: Any,
    y: Any,
    names: list[str],
    options: FitOptions,
    saved: _SavedRun,
    run: _RunSettings,
    previous: FitResult | None,
) -> None:
    """Train with checkpoints, save, report; Ctrl-C and SIGTERM end in a saved, resumable run."""
    from gdlab.interrupts import Interrupts
    from gdlab.runs import save_run

    def save(result: FitResult) -> dict[str, Any]:
        return save_run(
            result, saved.out, target=saved.target, source=saved.source, data_path=saved.data_path
        )

    with Interrupts() as interrupts:  # also covers the final save: a second Ctrl-C waits for it
        result = _train(X, y, names, options, run, previous, interrupts.requested, save)
        interrupts.armed = True  # a signal now waits for the save (the closed form never polls)
        summary = save(result)
        if result.status == "interrupted":
            interrupts.ignore_from_now()  # the process ends below; nothing left to interrupt
    if result.lr_choice:
        click.echo(f"gdlab: {result.lr_choice}", err=True)
    for message in result.warnings:
        warn(message)
    if run.as_json:
        keys = ("status", "epochs", "kept_epoch", "loss", "val_loss", "stop", "coef",
                "intercept", "path", "out")  # fmt: skip
        click.echo(json.dumps({key: summary[key] for key in keys if key in summary}))
    else:
        _print_result(result, summary, saved.out)
    if result.status == "diverged":
        click.echo(f"gdlab: {as_flags(result.message)}", err=True)
        sys.exit(EXIT_DIVERGED)
    if result.status == "interrupted":
        click.echo(
            f"gdlab: interrupted after epoch {result.history.last_epoch}; continue with: "
            f"gdlab fit --resume {saved.out}",
            err=True,
        )
        sys.exit(interrupts.exit_code)


@cli.command("lr")
@click.argument("data")
@click.option("--target", help="column to predict (default for built-in data sets: theirs)")
@click.option("--features", help="comma-separated feature columns (default: every other column)")
@model_options
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="range tests, one per initialisation seed")  # fmt: skip
@run_folder("folder for lr.png and lr.json")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object, nothing else")
def lr_command(
    data: str,
    target: str | None,
    features: str | None,
    seeds: int,
    out: Path | None,
    overwrite: bool,
    as_json: bool,
    **raw: Any,
) -> None:
    """Predict good learning rates for a model on DATA, before training it."""
    raw["batch_size"] = _batch_size(raw["batch_size"])
    X, y, names, options = _data_and_options(data, target, features, raw | {"lr": "auto"})
    from gdlab.runs import check_not_input, check_out_dir, claim_default_out_dir

    if out is not None:
        check_out_dir(out, overwrite=overwrite)
        check_not_input([out / name for name in ("lr.png", "lr.json")], [Path(data)])
    from gdlab.rates import advise

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GdlabWarning)
        advice = advise(X, y, seeds=seeds, feature_names=names, **options.to_dict())
    out = out or claim_default_out_dir()
    from gdlab.atomic import write_text
    from gdlab.plot.rates import range_test_figure
    from gdlab.plot.training import save
    from gdlab.runs import RunLock

    report = advice.to_dict() | {"figure": str(out / "lr.png")}
    with RunLock(out):  # another gdlab process writing there is refused, as fit refuses it
        save(range_test_figure(advice), out / "lr.png")
        write_text(out / "lr.json", json.dumps(report, indent=2) + "\n")
    if as_json:
        click.echo(json.dumps(report))
        return
    _print_advice(advice, options, report)


@cli.command("sweep")
@click.argument("data")
@click.option("--target", help="column to predict (default for built-in data sets: theirs)")
@click.option("--features", help="comma-separated feature columns (default: every other column)")
@click.option("--lr", "rates", default="1e-4:1:16", show_default=True,
              help="LOW:HIGH:COUNT, log-spaced, or a comma list")  # fmt: skip
@optimizer_list
@training_options_without("lr", "optimizer")
@run_folder("folder for sweep.csv and the figures")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object, nothing else")
def sweep_command(
    data: str,
    target: str | None,
    features: str | None,
    rates: str,
    optimizers: str,
    out: Path | None,
    overwrite: bool,
    as_json: bool,
    **raw: Any,
) -> None:
    """Train many learning rates (and optimizers) at once, reading each batch once for all."""
    from gdlab.sweep import parse_optimizers, parse_rates, sweep

    lrs, names = parse_rates(rates), parse_optimizers(optimizers)
    raw["batch_size"] = _batch_size(raw["batch_size"])
    X, y, columns, options = _data_and_options(data, target, features, raw | {"lr": 1.0})
    from gdlab.runs import check_not_input, check_out_dir, claim_default_out_dir

    if out is not None:
        check_out_dir(out, overwrite=overwrite)
        check_not_input(
            [
                out / name
                for name in (
                    "sweep.csv",
                    "sweep_history.csv",
                    "sweep_curves.png",
                    "sweep_final.png",
                )
            ],
            [Path(data)],
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GdlabWarning)
        runs, trainer = sweep(X, y, lrs=lrs, optimizers=names, feature_names=columns,
                              **options.to_dict())  # fmt: skip
        from gdlab.rates import advise_trainer

        advice = advise_trainer(trainer, seeds=0)
    limits = {"2/λmax": advice.max_stable_lr}
    if any(name in ("momentum", "nesterov") for name in names):
        limits[f"2(1+{options.momentum:g})/λmax"] = advice.max_stable_lr_momentum
    out = out or claim_default_out_dir()
    _write_sweep(runs, limits, out)
    if as_json:
        click.echo(json.dumps({"limits": limits, "runs": [_run_row(run) for run in runs],
                               "out": str(out)}))  # fmt: skip
        return
    click.echo(f"{'optimizer':<10} {'lr':>10}  {'label':<12} {'final loss':>12}  reason")
    for run in runs:
        click.echo(f"{run.optimizer:<10} {run.lr:>10.4g}  {run.label:<12} {run.final:>12.5g}  "
                   f"{run.reason}")  # fmt: skip
    shown = ", ".join(f"{name} = {value:.4g}" for name, value in limits.items())
    click.echo(f"predicted stability limits: {shown}")
    click.echo(f"wrote {out}/sweep.csv, sweep_history.csv, sweep_curves.png, sweep_final.png")


def _run_row(run: Any) -> dict[str, Any]:
    final = run.final if math.isfinite(run.final) else None
    return {"optimizer": run.optimizer, "lr": run.lr, "label": run.label, "final_loss": final,
            "epochs": len(run.losses), "reason": run.reason}  # fmt: skip


def _write_sweep(runs: list[Any], limits: dict[str, float], out: Path) -> None:
    import csv
    import io

    from gdlab.atomic import write_text
    from gdlab.plot.rates import sweep_curves, sweep_final
    from gdlab.plot.training import save

    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(_run_row(runs[0])), lineterminator="\n")
    writer.writeheader()
    writer.writerows(_run_row(run) for run in runs)
    write_text(out / "sweep.csv", table.getvalue())
    history = io.StringIO()
    rows = csv.writer(history, lineterminator="\n")
    rows.writerow(["optimizer", "lr", "epoch", "train_loss"])
    for run in runs:
        rows.writerows([run.optimizer, run.lr, k + 1, repr(v)] for k, v in enumerate(run.losses))
    write_text(out / "sweep_history.csv", history.getvalue())
    save(sweep_curves(runs), out / "sweep_curves.png")
    save(sweep_final(runs, limits), out / "sweep_final.png")


@cli.command()
@click.argument("expression")
@click.option("--start", help="NAME=VALUE[,NAME=VALUE]  [default: 0.5 each; surfaces: their own]")
@click.option("--lr", type=float, default=0.05, show_default=True, help="learning rate")
@click.option("--steps", type=click.IntRange(1, 100_000), default=50, show_default=True)
@optimizer_list
@click.option("--momentum", type=float, default=0.9, show_default=True)
@run_folder("folder for descend.png")
@click.option("--animate", is_flag=True, help="also write descend.gif")
def descend(
    expression: str,
    start: str | None,
    lr: float,
    steps: int,
    optimizers: str,
    momentum: float,
    out: Path | None,
    overwrite: bool,
    animate: bool,
) -> None:
    """Gradient descent on a function you type, e.g. "(3+3*a)**2", or a surface by name:
    quadratic-bowl, elongated-bowl, rosenbrock, himmelblau, saddle."""
    from gdlab.descend import descend as run_descent
    from gdlab.descend import parse_start
    from gdlab.expression import parse
    from gdlab.sweep import parse_optimizers

    if not (math.isfinite(lr) and lr > 0):
        raise GdlabError(f"--lr must be a positive number; got {lr}.")
    parsed = parse(expression)
    names = parse_optimizers(optimizers)
    begin = parse_start(start, parsed, expression)
    from gdlab.runs import check_out_dir, claim_default_out_dir

    if out is not None:
        check_out_dir(out, overwrite=overwrite)
    paths = [run_descent(parsed, begin, optimizer=name, lr=lr, steps=steps, momentum=momentum)
             for name in names]  # fmt: skip
    variables = parsed.variables
    click.echo(f"f({', '.join(variables)}) = {_symbols(parsed.symbolic)}")
    for name in variables:
        prime = "f'" if len(variables) == 1 else f"∂f/∂{name}"
        suffix = f"({name})" if len(variables) == 1 else ""
        click.echo(f"{prime}{suffix} = {_symbols(parsed.derivative(name))}")
    for path in paths:
        click.echo("")
        _print_steps(path, variables, full=len(paths) == 1)
    out = out or claim_default_out_dir()
    from gdlab.plot.descent import descent_figure
    from gdlab.plot.training import save
    from gdlab.runs import RunLock

    written = [out / "descend.png"]
    with RunLock(out):  # another gdlab process writing there is refused, as fit refuses it
        save(descent_figure(parsed, paths), out / "descend.png")
        if animate:
            from gdlab.plot.animate import descent_animation, save_gif

            save_gif(descent_animation(parsed, paths)[0], out / "descend.gif")
            written.append(out / "descend.gif")
    click.echo(f"\nwrote {', '.join(map(str, written))}")
    if any(path.status == "diverged" for path in paths):
        sys.exit(EXIT_DIVERGED)


def _symbols(expression: Any) -> str:
    """sympy's text, as the tutorials write it: 18a + 18, a^2."""
    import re

    text = str(expression).replace("**", "^")
    return re.sub(r"(\d)\*([A-Za-z(])", r"\1\2", text)


def _print_steps(path: Any, variables: tuple[str, ...], *, full: bool) -> None:
    click.echo(f"{path.optimizer}, lr = {path.lr:g}")
    one = len(variables) == 1
    name = variables[0]
    if one:
        update = f"{name}_(t+1) = {name}_t - lr*f'({name}_t)" if path.optimizer == "gd" else (
            f"{name}_(t+1)")  # fmt: skip
        click.echo(f"{'t':>5} {name + '_t':>14} {'f':>14} {'f_prime':>14}   {update}")
    else:
        heads = "".join(f"{v + '_t':>14}" for v in variables)
        grads = "".join(f"{'df/d' + v:>14}" for v in variables)
        click.echo(f"{'t':>5}{heads}{'f':>14}{grads}")
    rows = range(len(path.gradients))
    shown = rows if full or len(rows) <= 6 else [*rows[:3], *rows[-3:]]
    for t in shown:
        point, gradient, after = path.points[t], path.gradients[t], path.points[t + 1]
        if one:
            detail = (f"{point[0]:.6g} - {path.lr:g}*{gradient[0]:.6g} = {after[0]:.6g}"
                      if path.optimizer == "gd" else f"{after[0]:.6g}")  # fmt: skip
            click.echo(f"{t:>5} {point[0]:>14.6g} {path.values[t]:>14.6g} {gradient[0]:>14.6g}"
                       f"   {detail}")  # fmt: skip
        else:
            values = "".join(f"{v:>14.6g}" for v in point)
            slopes = "".join(f"{g:>14.6g}" for g in gradient)
            click.echo(f"{t:>5}{values}{path.values[t]:>14.6g}{slopes}")
    final = ", ".join(f"{v}={x:.6g}" for v, x in zip(variables, path.points[-1], strict=True))
    click.echo(f"after {len(path.gradients)} steps: {final}, f = {path.values[-1]:.6g}")
    if path.message:
        click.echo(f"gdlab: {path.message}", err=True)


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
    from gdlab.plot import training
    from gdlab.runs import RunLock, load_run

    if not run_dir.is_dir():
        raise GdlabError(f"{run_dir}: no such run folder.")
    with RunLock(run_dir):
        result, state = load_run(run_dir)
        history = result.history
        if not len(history):
            raise GdlabError(f"{run_dir} has no epochs in its history; nothing to plot.")
        figures = {
            "loss.png": training.loss_curve(history),
            "gradients.png": training.gradient_norms(history),
        }
        if history.params:
            figures["params.png"] = training.parameter_curves(history)
            from gdlab.surface import check_pair, default_pair, loss_surface

            pair = default_pair(result) if params is None else _pair(params)
            check_pair(result, pair)
            figures["weight_bias.png"] = training.weight_bias_vs_loss(history, *pair)
            trainer = _run_trainer(result, state, data)
            surface = loss_surface(trainer, result, pair)
            start = trainer.initial_parameters()
            figures["surface.png"] = training.surface_figure(surface, history, start)
        for name, figure in figures.items():
            training.save(figure, run_dir / name)
        written = [run_dir / name for name in figures]
        if animate and history.params:
            written += _animate_run(run_dir, result, trainer, surface, pair)
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
    from gdlab.report import render, report_data
    from gdlab.runs import RunLock, check_not_input, check_out_file, load_run, read_summary

    if not run_dir.is_dir():
        raise GdlabError(f"{run_dir}: no such run folder.")
    if out is not None:  # the default, RUN_DIR/report.html, is the report's own file
        check_out_file(out, overwrite=overwrite)
    with RunLock(run_dir):
        result, state = load_run(run_dir)
        if out is not None:  # never the run's own files, nor its data
            own = [path for path in run_dir.iterdir() if path.name != "report.html"]
            inputs = [Path(state["data_path"])] if state.get("data_path") else []
            check_not_input([out], [*own, *inputs, *([Path(data)] if data else [])])
        if not len(result.history):
            raise GdlabError(f"{run_dir} has no epochs in its history; nothing to report.")
        summary = read_summary(run_dir)
        surface, line = None, None
        if result.history.params:
            from gdlab.surface import check_pair, default_pair, loss_surface

            pair = default_pair(result) if params is None else _pair(params)
            check_pair(result, pair)
            trainer = _run_trainer(result, state, data)
            surface = loss_surface(trainer, result, pair)
            line = _line_data(result, trainer, state)
        page = render(f"gdlab run {run_dir}", report_data(result, surface, line), summary,
                      plotly_js=get_plotlyjs())  # fmt: skip
        target = out or run_dir / "report.html"
        write_text(target, page)
    click.echo(f"wrote {target}")


MAX_PRINTED_COEFFICIENTS = 50  # the rest are in summary.json
MAX_DRAWN_POINTS = 5000  # data points a report draws: a page of bounded size on any data


def _line_data(result: Any, trainer: Any, state: dict[str, Any]) -> dict[str, Any] | None:
    """For one-feature regression: the data and the line's weight and bias per epoch."""
    coefficients = [name for name in result.history.params if name.startswith("coef[")]
    regression = result.options.resolved_loss in ("mse", "mae", "huber")
    if not (regression and result.spec.degree == 1 and len(coefficients) == 1):
        return None
    history = result.history
    x, y = trainer.X[:, 0], trainer.y
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


def _animate_run(run_dir: Path, result: Any, trainer: Any, surface: Any, pair: Any) -> list[Path]:
    from gdlab.plot.animate import line_animation, save_gif, surface_animation

    save_gif(surface_animation(surface, {"run": result.history})[0], run_dir / "descent.gif")
    written = [run_dir / "descent.gif"]
    coefficients = [name for name in result.history.params if name.startswith("coef[")]
    regression = result.options.resolved_loss in ("mse", "mae", "huber")
    if regression and result.spec.degree == 1 and len(coefficients) == 1:
        bias = "intercept"
        animation = line_animation(
            trainer.X[:, 0], trainer.y, result.history, coefficients[0], bias
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
    from gdlab.sweep import parse_optimizers

    names = parse_optimizers(optimizers)
    sizes = [_batch_size(size.strip()) for size in batch_sizes.split(",") if size.strip()]
    if not sizes:
        raise GdlabError("--batch-sizes: give one or more of full or N, comma-separated.")
    X, y, columns, options = _data_and_options(data, target, features, raw | {"batch_size": None})
    from gdlab.runs import check_not_input, check_out_dir, claim_default_out_dir

    if out is not None:
        check_out_dir(out, overwrite=overwrite)
        check_not_input(
            [out / name for name in ("compare.png", "compare.csv", "compare.gif")], [Path(data)]
        )
    from gdlab.api import Trainer, fit
    from gdlab.data.arrays import as_matrix, as_vector

    results = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GdlabWarning)
        for name in names:
            for size in sizes:
                label = f"{name}, {'batch' if size is None else f'batch size {size}'}"
                chosen = options.to_dict() | {"optimizer": name, "batch_size": size}
                results[label] = fit(X, y, feature_names=columns, stop=lambda: False, **chosen)
        first = next(iter(results.values()))
        matrix = as_matrix(X)[0]
        trainer = Trainer(first.options, matrix, as_vector(y, len(matrix)), columns, None)
    if not first.history.params:
        raise GdlabError("the model has over 20 parameters, so no paths were recorded to compare.")
    from gdlab.plot.training import compare_figure, save
    from gdlab.surface import check_pair, default_pair, loss_surface

    pair = default_pair(first) if params is None else _pair(params)
    check_pair(first, pair)
    surface = loss_surface(trainer, first, pair)
    out = out or claim_default_out_dir()
    histories = {label: r.history for label, r in results.items()}
    save(compare_figure(surface, histories, trainer.initial_parameters()), out / "compare.png")
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

        save_gif(surface_animation(surface, histories)[0], out / "compare.gif")
    gif = f", {out / 'compare.gif'}" if animate else ""
    click.echo(f"wrote {out / 'compare.png'}, {out / 'compare.csv'}{gif}")


def _pair(text: str) -> tuple[str, str]:
    chosen = [name.strip() for name in text.split(",")]
    if len(chosen) != 2:
        raise GdlabError(f"--params {text!r}: name exactly two parameters.")
    return chosen[0], chosen[1]


def _run_trainer(result: Any, state: dict[str, Any], data: str | None) -> Any:
    """The run's data prepared as it was for training (scalers, rows, classes)."""
    from gdlab.api import Trainer
    from gdlab.data.arrays import as_matrix, as_vector
    from gdlab.data.columns import select

    source, frame, _ = _load(data or state["data_path"] or state["data"])
    X, y, names = select(frame, source, state["target"], state["features"])
    matrix = as_matrix(X)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GdlabWarning)
        return Trainer(result.options, matrix, as_vector(y, len(matrix)), names, None)


def _print_advice(advice: Any, options: FitOptions, report: dict[str, Any]) -> None:
    c = advice.curvature
    click.echo(f"loss Hessian at the initial point ({advice.method}, {advice.n_parameters} "
               f"parameters):")  # fmt: skip
    condition = "not convex here" if c.lambda_min <= 0 else f"{c.condition_number:.4g}"
    raw = report["raw_condition_number"]
    unscaled = f" ({raw:.4g} without standardization)" if raw and options.standardize else ""
    click.echo(f"  λmax {c.lambda_max:.6g}   λmin {c.lambda_min:.6g}   condition number "
               f"{condition}{unscaled}")  # fmt: skip
    click.echo("largest stable rates:")
    click.echo(f"  gradient descent            2/λmax = {advice.max_stable_lr:.4g}")
    beta = options.momentum
    click.echo(f"  heavy-ball momentum β={beta:g}   2(1+β)/λmax = "
               f"{c.max_stable_lr_momentum(beta):.4g}")  # fmt: skip
    if advice.optimal_lr is not None:
        click.echo(f"  best constant rate          2/(λmax+λmin) = {advice.optimal_lr:.4g}")
    tests = report["range_test"]
    if tests["suggestion"] is not None:
        batch = "full batch" if options.batch_size is None else f"batches of {options.batch_size}"
        click.echo(f"range test ({batch}, {len(advice.range_tests)} seeds): suggests "
                   f"{tests['suggestion']:.4g} (spread {tests['spread']:.3g}x)")  # fmt: skip
    if advice.predicted_epochs is not None:
        click.echo(f"predicted epochs to tol={options.tol:g} at the recommended rate: "
                   f"{advice.predicted_epochs}")  # fmt: skip
    click.echo(f"advice: --lr {advice.recommended_lr:.3g} ({advice.reason})")
    click.echo(f"wrote {report['figure']} and lr.json")


def _data_and_options(
    data: str, target: str | None, features: str | None, raw: dict[str, Any]
) -> tuple[Any, Any, list[str], FitOptions]:
    """Read DATA and select columns; a built-in set brings its model unless --model is given."""
    from gdlab.data.builtin import DATASETS

    context = click.get_current_context()
    model_given = context.get_parameter_source("model") is not click.core.ParameterSource.DEFAULT
    if data in DATASETS and not model_given:
        raw["model"] = DATASETS[data].model
    options = make_options(**raw)
    source, frame, default_target = _load(data)
    target = target or default_target
    if target is None:
        raise GdlabError(f"--target is required: name the column of {source} to predict.")
    from gdlab.data.columns import select

    columns = None if features is None else [name.strip() for name in features.split(",")]
    X, y, names = select(frame, source, target, columns)
    return X, y, names, options


def _load(data: str) -> tuple[str, Any, str | None]:
    from gdlab.data.builtin import DATASETS
    from gdlab.data.files import read_table

    if data in DATASETS and not Path(data).exists():
        dataset = DATASETS[data]
        return dataset.name, read_table(dataset.path), dataset.target
    return data, read_table(Path(data)), None


def _train(
    X: Any,
    y: Any,
    names: list[str],
    options: FitOptions,
    run: _RunSettings,
    previous: FitResult | None,
    stop: Callable[[], bool],
    save: Callable[[FitResult], object],
) -> FitResult:
    from gdlab.api import fit as fit_model

    done = len(previous.history) if previous is not None else 0
    budget = options.epochs if isinstance(options.epochs, int) else None  # auto: unknown yet
    progress = _Progress(budget, done, log_every=run.log_every, quiet=run.as_json)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GdlabWarning)  # printed once, after the run
        try:
            return fit_model(
                X,
                y,
                feature_names=names,
                on_epoch=progress.update,
                resume=previous,
                stop=stop,
                checkpoint=save,
                checkpoint_every=run.checkpoint_every,
                **options.to_dict(),
            )
        finally:
            progress.close()


class _Progress:
    """Log lines every N epochs on stdout (stderr with --json); a bar on a terminal."""

    def __init__(self, epochs: int | None, done: int, *, log_every: int, quiet: bool) -> None:
        self.log_every, self.quiet = log_every, quiet
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=epochs, initial=done, unit="epoch", leave=False, file=sys.stderr)

    def update(self, history: History) -> None:
        epoch, loss = history.epoch[-1], history.train_loss[-1]
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        if epoch % self.log_every == 0:
            values = "  ".join(f"{k}={v[-1]:.6g}" for k, v in list(history.params.items())[:6])
            line = f"epoch {epoch:>6}  loss={loss:.6g}  {values}".rstrip()
            if self.bar is not None:
                self.bar.write(line, file=sys.stderr if self.quiet else sys.stdout)
            else:
                _echo(line, err=self.quiet)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


PATH_TEXT = {
    "exact": "exact (gradients from XᵀX, built in one pass: O(d²) per epoch)",
    "closed-form": "closed form (plain gd on least squares: θ_k = θ* + (I − lr·H)^k (θ_0 − θ*))",
    "analytic": "analytic (mini-batch gradients by formula, buffers allocated once)",
    "autograd": "autograd (forward and backward over the rows every step)",
}


def _print_result(result: FitResult, summary: dict[str, Any], out: Path) -> None:
    verdict = result.verdict
    why = ""
    if verdict is not None and verdict.test:
        why = f" ({verdict.test} test{', ' + verdict.reason if verdict.reason else ''})"
    _echo(f"status: {summary['status']} after {summary['epochs']} epochs{why}")
    if verdict is not None:
        for measure in verdict.measures:
            _echo(f"  {measure}")
    _echo(f"path: {PATH_TEXT.get(result.path, result.path)}")
    kept = f" (the kept model, epoch {summary['kept_epoch']})" if "kept_epoch" in summary else ""
    if summary["loss"] is not None:
        _echo(f"train loss: {summary['loss']:.6g}{kept}")
    if summary.get("val_loss") is not None:
        _echo(f"validation loss: {summary['val_loss']:.6g}{kept}")
    if "coef" in summary:
        _echo("coefficients (original units):")
        coefficients = list(summary["coef"].items())
        for name, value in coefficients[:MAX_PRINTED_COEFFICIENTS]:
            if isinstance(value, dict):
                inner = listed(f"{k}={v + 0.0:.6g}" for k, v in value.items())
                _echo(f"  class {name}: {inner}; intercept={summary['intercept'][name]:.6g}")
            else:
                _echo(f"  {name:<12} {value + 0.0: .10g}")  # + 0.0: -0 prints as 0
        if len(coefficients) > MAX_PRINTED_COEFFICIENTS:
            rest = len(coefficients) - MAX_PRINTED_COEFFICIENTS
            _echo(f"  ... and {rest} more in {out}/summary.json")
        if not isinstance(summary["intercept"], dict):
            _echo(f"  {'intercept':<12} {summary['intercept']: .10g}")
    _echo(f"wrote {out}/model.pt, history.csv, summary.json")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("data")
@click.option("--out", type=click.Path(path_type=Path), help="CSV file to write (default: stdout)")
@click.option("--overwrite", is_flag=True, help="allow --out to replace an existing file")
def predict(run_dir: Path, data: str, out: Path | None, overwrite: bool) -> None:
    """Predict with the model of RUN_DIR on DATA; classifiers add class probabilities."""
    from gdlab.runs import RUN_FILES, check_not_input, check_out_file, load_run

    if out is not None:
        check_out_file(out, overwrite=overwrite)
        check_not_input([out], [Path(data), *(run_dir / name for name in RUN_FILES)])

    result, _ = load_run(run_dir)
    source, frame, _ = _load(data)
    from gdlab.data.columns import feature_matrix

    trained_on = listed(result.feature_names)
    X = feature_matrix(
        frame, source, result.feature_names, hint=f"the model was trained on {trained_on}"
    )
    table = {"prediction": result.predict(X)}
    if result.classes_ is not None:
        probabilities = result.predict_proba(X)
        table |= {f"proba_{c}": probabilities[:, k] for k, c in enumerate(result.classes_)}
    lines = [",".join(table)] + [
        ",".join(_cell(values[i]) for values in table.values()) for i in range(len(X))
    ]
    text = "\n".join(lines) + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        from gdlab.atomic import write_text

        write_text(out, text)
        click.echo(f"wrote {len(X)} predictions to {out}", err=True)


def _cell(value: float) -> str:
    return (
        repr(int(value))
        if float(value).is_integer() and math.isfinite(value)
        else repr(float(value))
    )


@cli.command()
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("runs/demo"), show_default=True
)
def demo(out: Path) -> None:
    """The tutorial regression: y = 2x, nn.Linear, MSELoss, SGD lr=0.01, 1000 epochs."""
    from gdlab.demo import run_demo

    run_demo(out, echo=click.echo)


def main(argv: list[str] | None = None) -> None:
    """Entry point: input mistakes become one line on stderr and exit status 2."""
    try:
        cli.main(args=argv, prog_name="gdlab", standalone_mode=False)
    except GdlabError as error:
        fail(str(error))
    except click.exceptions.NoSuchOption as error:
        fail(f"{error.format_message()} See `gdlab {_command(argv)} --help`.")
    except click.UsageError as error:
        fail(error.format_message().replace("\n", " "))
    except OSError as error:  # a disk that is full, read-only or gone: the old files are intact
        where = f" {error.filename}" if error.filename else ""
        fail(f"could not read or write{where}: {error.strerror or error}; nothing was replaced.")
    except (click.exceptions.Abort, KeyboardInterrupt) as error:  # before training: no save
        click.echo("gdlab: interrupted; nothing was written", err=True)
        cause = error.__context__ if isinstance(error, click.exceptions.Abort) else error
        sys.exit(128 + cause.number if isinstance(cause, Interrupted) else EXIT_INTERRUPTED)


def _command(argv: list[str] | None) -> str:
    words = [
        word for word in (argv if argv is not None else sys.argv[1:]) if not word.startswith("-")
    ]
    return words[0] if words else ""
