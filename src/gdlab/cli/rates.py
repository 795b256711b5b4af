"""gdlab lr and gdlab sweep: learning-rate advice, and many rates trained at once."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import click

from gdlab.cli.app import (
    cli,
    data_and_options,
    model_options,
    optimizer_list,
    run_folder,
    stream_option,
    training_options_without,
)
from gdlab.config import (
    FitOptions,
)
from gdlab.errors import GdlabWarning
from gdlab.optim.kinds import kind_of


@cli.command("lr")
@click.argument("data")
@click.option("--target", help="column to predict (default for built-in data sets: theirs)")
@click.option("--features", help="comma-separated feature columns (default: every other column)")
@model_options
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="range tests, one per initialisation seed")  # fmt: skip
@run_folder("folder for lr.png and lr.json")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object, nothing else")
@stream_option
def lr_command(
    data: str,
    target: str | None,
    features: str | None,
    seeds: int,
    out: Path | None,
    overwrite: bool,
    as_json: bool,
    stream: bool | None,
    **raw: Any,
) -> None:
    """Predict good learning rates for a model on DATA, before training it."""
    X, y, names, options = data_and_options(data, target, features, raw | {"lr": "auto"}, stream)
    from gdlab.outputs import check_not_input, check_out_dir, claim_default_out_dir

    if out is not None:
        check_out_dir(out, overwrite=overwrite)
        check_not_input([out / name for name in ("lr.png", "lr.json")], [Path(data)])
    from gdlab.tools.rates import advise

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GdlabWarning)
        advice = advise(X, y, seeds=seeds, feature_names=names, **options.to_dict())
    out = out or claim_default_out_dir()
    from gdlab.atomic import write_text
    from gdlab.outputs import RunLock
    from gdlab.plot.rates import range_test_figure
    from gdlab.plot.training import save

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
@stream_option
def sweep_command(
    data: str,
    target: str | None,
    features: str | None,
    rates: str,
    optimizers: str,
    out: Path | None,
    overwrite: bool,
    as_json: bool,
    stream: bool | None,
    **raw: Any,
) -> None:
    """Train many learning rates (and optimizers) at once, reading each batch once for all."""
    from gdlab.tools.sweep import parse_optimizers, parse_rates, sweep

    lrs, names = parse_rates(rates), parse_optimizers(optimizers)
    X, y, columns, options = data_and_options(data, target, features, raw | {"lr": 1.0}, stream)
    from gdlab.outputs import check_not_input, check_out_dir, claim_default_out_dir

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
        runs, problem = sweep(X, y, lrs=lrs, optimizers=names, feature_names=columns,
                              **options.to_dict())  # fmt: skip
        from gdlab.tools.rates import advise_problem

        advice = advise_problem(problem, seeds=0)
    limits = {"2/λmax": advice.max_stable_lr}
    if any(kind_of(name).momentum for name in names):
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
    validation = any(run.val_losses for run in runs)
    rows.writerow(["optimizer", "lr", "epoch", "train_loss", *(["val_loss"] * validation)])
    for run in runs:
        for k, value in enumerate(run.losses):
            val = [repr(run.val_losses[k]) if k < len(run.val_losses) else ""] * validation
            rows.writerow([run.optimizer, run.lr, k + 1, repr(value), *val])
    write_text(out / "sweep_history.csv", history.getvalue())
    save(sweep_curves(runs), out / "sweep_curves.png")
    save(sweep_final(runs, limits), out / "sweep_final.png")


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
