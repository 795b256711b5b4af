"""gdlab datasets, predict and demo."""

from __future__ import annotations

import math
from pathlib import Path

import click

from gdlab.cli.app import (
    cli,
    load_data,
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
def predict(run_dir: Path, data: str, out: Path | None, overwrite: bool) -> None:
    """Predict with the model of RUN_DIR on DATA; classifiers add class probabilities."""
    from gdlab.outputs import check_not_input, check_out_file
    from gdlab.runs import RUN_FILES, load_run

    if out is not None:
        check_out_file(out, overwrite=overwrite)
        check_not_input([out], [Path(data), *(run_dir / name for name in RUN_FILES)])

    result, _ = load_run(run_dir)
    source, frame, _ = load_data(data)
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
