"""gdlab fit: train on a file or a built-in data set, with checkpoints, resume and signals."""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gdlab.cli.app import (
    EXIT_DIVERGED,
    as_flags,
    cli,
    load_columns,
    not_the_data,
    run_folder,
    stream_option,
    training_options,
    warn,
)
from gdlab.cli.printing import Progress, print_result
from gdlab.config import (
    FitOptions,
    make_options,
)
from gdlab.errors import GdlabError, GdlabWarning

if TYPE_CHECKING:
    from gdlab.result import FitResult


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
@stream_option
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
    stream: bool | None,
    **raw: Any,
) -> None:
    """Fit a model to DATA (a CSV, Parquet, .npz or .npy file, or a built-in data set).

    Ctrl-C or SIGTERM stops after the current step and saves the run; `--resume RUN_DIR`
    continues it exactly where it stopped.
    """
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
    world = _join(raw.get("device", "auto"))
    run = _RunSettings(checkpoint_every, log_every, as_json or not world.leader, not world.leader)
    if world.restarts and out is not None and (out / "model.pt").exists():
        resume, out = out, None  # torchrun --max-restarts: continue from the last checkpoint
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
    from gdlab.outputs import check_not_input, check_out_dir, claim_default_out_dir
    from gdlab.runs import RUN_FILES

    if out is not None:
        check_out_dir(out, overwrite=overwrite)
        check_not_input([out / name for name in RUN_FILES], [Path(data)])
    source, X, y, names, target = load_columns(data, target, columns, stream, options)
    from gdlab.outputs import RunLock

    claimed = out is None
    if world.leader:
        out = out or claim_default_out_dir()
    out = world.broadcast(out)  # the other ranks of a data-parallel run write nothing
    assert out is not None
    with _locked(world, RunLock(out, created=claimed)):
        if world.leader:  # another process may have filled it meanwhile
            check_out_dir(out, overwrite=overwrite)
        saved = _SavedRun(out, target, source, _data_path(data))
        _run(X, y, names, options, saved, run, previous=None)


def _join(device: str) -> Any:
    """The data-parallel world when torchrun started this process, else a world of one
    (`train/parallel.py`)."""
    from gdlab.train import parallel

    return parallel.join(device)


def _locked(world: Any, lock: Any) -> Any:
    """The run folder's lock, held by rank 0 alone (the others never write)."""
    import contextlib

    return lock if world.leader else contextlib.nullcontext()


@dataclass(frozen=True)
class _RunSettings:
    checkpoint_every: int
    log_every: int
    as_json: bool
    silent: bool = False  # a rank other than 0 prints nothing, not even progress


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
    from gdlab.outputs import RunLock
    from gdlab.runs import MODEL_FILE, load_run, resume_options

    if not run_dir.is_dir():
        raise GdlabError(f"--resume {run_dir}: no such run folder.")
    world = _join("auto")
    with _locked(world, RunLock(run_dir)):
        previous, state = load_run(run_dir)
        options, notes = resume_options(state, given, run_dir / MODEL_FILE)
        for name, value, saved in (("target", target, state["target"]),
                                   ("features", columns, state["features"])):  # fmt: skip
            if value is not None and value != saved:
                raise GdlabError(
                    f"{run_dir} was trained with --{name} {saved}; drop --{name} to resume."
                )
        ranks = int(state.get("ranks", 1))
        if options.batch_size is not None and ranks != world.size:
            raise GdlabError(
                f"{run_dir} is a mini-batch run of {ranks} rank(s): its epoch's order and "
                f"position are those of a global batch of {ranks} x {options.batch_size} rows "
                f"(and, streamed, of each rank's row groups); resume it on {ranks} "
                f"(torchrun --nproc-per-node {ranks}). A full-batch run resumes on any number."
            )
        data = data or state["data_path"] or state["data"]
        assert data is not None
        from gdlab.data.passes import STREAMED

        streamed = str(state["fingerprint"]).startswith(STREAMED)
        source, X, y, names, _ = load_columns(
            data, state["target"], state["features"], streamed, options
        )
        from gdlab.data.arrays import as_matrix, as_vector, fingerprint

        if not streamed:  # (a stream's fingerprint is checked by its first pass)
            matrix = as_matrix(X)[0]
            if fingerprint(matrix, as_vector(y, len(matrix))) != state["fingerprint"]:
                raise GdlabError(not_the_data(source, run_dir))
        for note in notes:
            warn(note)
        if not run.as_json and world.leader:
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

    world = _join("auto")

    def save(result: FitResult) -> dict[str, Any]:
        if not world.leader:  # rank 0 alone writes the run folder
            return {}
        return save_run(
            result, saved.out, target=saved.target, source=saved.source, data_path=saved.data_path
        )

    with Interrupts() as interrupts:  # also covers the final save: a second Ctrl-C waits for it
        result = _train(X, y, names, options, run, previous, interrupts.requested, save)
        interrupts.armed = True  # a signal now waits for the save (the closed form never polls)
        summary = save(result)
        if result.status == "interrupted":
            interrupts.ignore_from_now()  # the process ends below; nothing left to interrupt
    if not world.leader:
        sys.exit(EXIT_DIVERGED if result.status == "diverged" else 0)
    if result.lr_choice:
        click.echo(f"gdlab: {result.lr_choice}", err=True)
    if result.sharpness:
        click.echo(f"gdlab: {result.sharpness}", err=True)
    for message in result.warnings:
        warn(message)
    if run.as_json:
        keys = ("status", "epochs", "kept_epoch", "loss", "val_loss", "stop", "coef",
                "intercept", "path", "out")  # fmt: skip
        click.echo(json.dumps({key: summary[key] for key in keys if key in summary}))
    else:
        print_result(result, summary, saved.out)
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
    from gdlab.training import fit as fit_model

    done = len(previous.history) if previous is not None else 0
    budget = options.epochs if isinstance(options.epochs, int) else None  # auto: unknown yet
    progress = Progress(budget, done, log_every=run.log_every, quiet=run.as_json, silent=run.silent)
    if hasattr(X, "on_read"):  # a streamed file: a bar of the rows read within a pass
        X.on_read = progress.rows
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
