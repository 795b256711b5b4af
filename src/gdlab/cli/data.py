"""gdlab datasets, predict and demo."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from gdlab.cli.app import (
    cli,
    load_data,
    stream_option,
)
from gdlab.errors import listed


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
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("data")
@click.option("--out", type=click.Path(path_type=Path), help="CSV file to write (default: stdout)")
@click.option("--overwrite", is_flag=True, help="allow --out to replace an existing file")
@stream_option
def predict(
    run_dir: Path, data: str, out: Path | None, overwrite: bool, stream: bool | None
) -> None:
    """Predict with the model of RUN_DIR on DATA; classifiers add class probabilities."""
    from gdlab.outputs import check_not_input, check_out_file
    from gdlab.runs import RUN_FILES, load_run

    if out is not None:
        check_out_file(out, overwrite=overwrite)
        check_not_input([out], [Path(data), *(run_dir / name for name in RUN_FILES)])

    result, _ = load_run(run_dir)
    blocks = _feature_blocks(data, result.feature_names, stream, result.options.memory_budget)
    header = ["prediction"]
    if result.classes_ is not None:
        header += [f"proba_{c}" for c in result.classes_]

    def lines() -> Iterator[str]:
        yield ",".join(header) + "\n"
        for X in blocks:
            table = [result.predict(X)]
            if result.classes_ is not None:
                probabilities = result.predict_proba(X)
                table += [probabilities[:, k] for k in range(len(result.classes_))]
            yield "".join(",".join(_cell(values[i]) for values in table) + "\n"
                          for i in range(len(X)))  # fmt: skip

    if out is None:
        for text in lines():
            click.echo(text, nl=False)
        return
    from gdlab.atomic import write_with

    count = 0

    def write(path: Path) -> None:  # into a temporary file, renamed when whole
        nonlocal count
        with path.open("w") as handle:
            for text in lines():
                handle.write(text)
                count += text.count("\n")

    write_with(out, write)
    click.echo(f"wrote {count - 1} predictions to {out}", err=True)


def _feature_blocks(
    data: str, features: list[str], stream: bool | None, budget: float | None
) -> Iterator[Any]:
    """The model's feature columns of DATA: the whole matrix, or a streamed file's blocks.
    The file is opened and its columns checked now, before any line is printed."""
    from gdlab.data.builtin import DATASETS
    from gdlab.data.open import streamed

    builtin = data in DATASETS and not Path(data).exists()
    table = None if builtin else streamed(Path(data), None, features, stream=stream,
                                          budget=budget)  # fmt: skip
    if table is not None:
        return (block.X for block in table.blocks())
    from gdlab.data.columns import feature_matrix

    source, frame, _ = load_data(data)
    hint = f"the model was trained on {listed(features)}"
    return iter([feature_matrix(frame, source, features, hint=hint)])


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
