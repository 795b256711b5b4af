"""The command group, its shared options and messages, and the entry point.

Training options come from `gdlab.config.OPTIONS`; torch loads lazily, inside the commands.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from gdlab import compile_guards
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
from gdlab.errors import GdlabError, GdlabWarning
from gdlab.interrupts import Interrupted

EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 1, 130


def visible(text: str) -> str:
    """Text as the terminal should show it: control characters (escape sequences, newlines in
    a column name) written as Python escapes, never acted on; everything else as it is."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


# Parameters a message may name that are flags here but not training options.
CLI_PARAMETERS = ("target", "features", "resume", "out", "overwrite", "port")
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
    parallel = sys.modules.get("gdlab.train.parallel")  # (loaded only by a run that uses it)
    world = parallel.current() if parallel is not None else None
    if world is not None and world.parallel and not message.startswith("rank "):
        message = f"rank {world.rank} of {world.size}: {message}"
    click.echo(f"gdlab: error: {visible(as_flags(message))}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def warn(message: str) -> None:
    click.echo(f"gdlab: warning: {visible(as_flags(message))}", err=True)


def echo_visible(text: str, **kwargs: Any) -> None:
    """click.echo for lines that carry names from the user's data."""
    click.echo("\n".join(visible(line) for line in text.split("\n")), **kwargs)


def parse_batch_size(value: str | None) -> int | None:
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
        return click.option(flag, default=option.text_default, show_default=True, help=option.help)
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


def parse_pair(text: str) -> tuple[str, str]:
    chosen = [name.strip() for name in text.split(",")]
    if len(chosen) != 2:
        raise GdlabError(f"--params {text!r}: name exactly two parameters.")
    return chosen[0], chosen[1]


def rebuild_problem(result: Any, state: dict[str, Any], data: str | None) -> Any:
    """The run's data prepared as it was for training (scalers, rows, classes)."""
    from gdlab.data.arrays import as_matrix, as_vector
    from gdlab.data.columns import select
    from gdlab.problem import Problem

    source, frame, _ = load_data(data or state["data_path"] or state["data"])
    X, y, names = select(frame, source, state["target"], state["features"])
    matrix = as_matrix(X)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GdlabWarning)
        return Problem(result.options, matrix, as_vector(y, len(matrix)), names, None)


def data_and_options(
    data: str,
    target: str | None,
    features: str | None,
    raw: dict[str, Any],
    stream: bool | None = False,
) -> tuple[Any, Any, list[str], FitOptions]:
    """Read DATA and select columns; a built-in set brings its model unless --model is given.
    With `stream` True or None (as `gdlab.data.open` decides), X may be the file to stream."""
    from gdlab.data.builtin import DATASETS

    context = click.get_current_context()
    model_given = context.get_parameter_source("model") is not click.core.ParameterSource.DEFAULT
    if data in DATASETS and not model_given:
        raw["model"] = DATASETS[data].model
    options = make_options(**raw)
    columns = None if features is None else [name.strip() for name in features.split(",")]
    _, X, y, names, _ = load_columns(data, target, columns, stream, options)
    return X, y, names, options


def load_data(data: str) -> tuple[str, Any, str | None]:
    from gdlab.data.builtin import DATASETS
    from gdlab.data.files import read_table

    if data in DATASETS and not Path(data).exists():
        dataset = DATASETS[data]
        return dataset.name, read_table(dataset.path), dataset.target
    return data, read_table(Path(data)), None


stream_option = click.option(
    "--stream/--no-stream",
    default=None,
    help="read a CSV or Parquet file a block at a time, never whole (default: when reading "
    "it whole would not fit --memory-budget)",
)


def load_columns(
    data: str, target: str | None, features: list[str] | None, stream: bool | None, opts: Any
) -> tuple[str, Any, Any, list[str], str]:
    """(source, X, y, feature names, target) of a file or built-in set; X is the file to
    stream (`gdlab.data.stream.TableFile`, y None) when it streams (`gdlab.data.open`)."""
    from gdlab.data.builtin import DATASETS

    builtin = data in DATASETS and not Path(data).exists()
    chosen = target or (DATASETS[data].target if builtin else None)
    if chosen is None:
        raise GdlabError(f"--target is required: name the column of {data} to predict.")
    if builtin:
        if stream:
            raise GdlabError(f"{data} is a built-in data set, held in memory; drop --stream.")
        from gdlab.data.columns import select

        source, frame, _ = load_data(data)
        return (source, *select(frame, source, chosen, features), chosen)
    from gdlab.data.open import open_data

    opened = open_data(Path(data), chosen, features, stream=stream, budget=opts.memory_budget)
    if isinstance(opened, tuple):
        return (data, *opened, chosen)
    return data, opened, None, opened.features, chosen


def not_the_data(source: str, run_dir: Path) -> str:
    return (
        f"{source} is not the data {run_dir} was trained on (its rows or values differ); "
        f"resume with the original data, or start a new run."
    )


OUT_OF_MEMORY = (
    "out of memory; stream the file (--stream), or use a smaller --batch-size, model or "
    "--memory-budget; a run folder keeps its last checkpoint."
)


def main(argv: list[str] | None = None) -> None:
    """Entry point: input mistakes become one line on stderr and exit status 2."""
    compile_guards.skip = True  # this process never compiles: see gdlab/compile_guards.py
    try:
        _refuse_parallel(argv)
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
    except MemoryError:
        fail(OUT_OF_MEMORY)
    except RuntimeError as error:  # torch's allocator (after click's Abort, a RuntimeError too)
        if "allocate memory" not in str(error):
            raise
        fail(OUT_OF_MEMORY)
    finally:
        parallel = sys.modules.get("gdlab.train.parallel")
        if parallel is not None:  # a data-parallel run closes its process group
            parallel.leave()


PARALLEL_COMMANDS = {"fit", ""}


def _refuse_parallel(argv: list[str] | None) -> None:
    """Only `fit` shares its rows among torchrun's ranks; any other command started as one
    of several would run N copies that race for the same output."""
    size = os.environ.get("WORLD_SIZE", "1")
    command = _command(argv)
    if size.isdigit() and int(size) > 1 and command not in PARALLEL_COMMANDS:
        raise GdlabError(
            f"`gdlab {command}` does not run data-parallel (WORLD_SIZE={size}); only "
            f"`gdlab fit` does: run `gdlab {command}` in one process, without torchrun."
        )


def _command(argv: list[str] | None) -> str:
    words = [
        word for word in (argv if argv is not None else sys.argv[1:]) if not word.startswith("-")
    ]
    return words[0] if words else ""
