"""gdlab descend: gradient descent on a typed-in function, step by step."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import click

from gdlab.cli.app import (
    EXIT_DIVERGED,
    cli,
    optimizer_list,
    run_folder,
)
from gdlab.errors import GdlabError


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
    from gdlab.expression import parse, written
    from gdlab.tools.descend import descend as run_descent
    from gdlab.tools.descend import parse_start
    from gdlab.tools.sweep import parse_optimizers

    if not (math.isfinite(lr) and lr > 0):
        raise GdlabError(f"--lr must be a positive number; got {lr}.")
    parsed = parse(expression)
    names = parse_optimizers(optimizers)
    begin = parse_start(start, parsed, expression)
    from gdlab.outputs import check_out_dir, claim_default_out_dir

    if out is not None:
        check_out_dir(out, overwrite=overwrite)
    paths = [run_descent(parsed, begin, optimizer=name, lr=lr, steps=steps, momentum=momentum)
             for name in names]  # fmt: skip
    variables = parsed.variables
    click.echo(f"f({', '.join(variables)}) = {written(parsed.symbolic)}")
    for name in variables:
        prime = "f'" if len(variables) == 1 else f"∂f/∂{name}"
        suffix = f"({name})" if len(variables) == 1 else ""
        click.echo(f"{prime}{suffix} = {written(parsed.derivative(name))}")
    from gdlab.tools.descend import MINIMA, reached

    for path in paths:
        click.echo("")
        _print_steps(path, variables, full=len(paths) == 1)
        verdict = reached(path, expression)
        if verdict:
            click.echo(verdict)
    out = out or claim_default_out_dir()
    from gdlab.outputs import RunLock
    from gdlab.plot.descent import descent_figure
    from gdlab.plot.training import save

    files = [out / "descend.png"]
    with RunLock(out):  # another gdlab process writing there is refused, as fit refuses it
        save(descent_figure(parsed, paths, MINIMA.get(expression)), out / "descend.png")
        if animate:
            from gdlab.plot.animate import descent_animation, save_gif

            save_gif(descent_animation(parsed, paths)[0], out / "descend.gif")
            files.append(out / "descend.gif")
    click.echo(f"\nwrote {', '.join(map(str, files))}")
    if any(path.status == "diverged" for path in paths):
        sys.exit(EXIT_DIVERGED)


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
