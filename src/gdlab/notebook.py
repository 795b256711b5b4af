"""Compact HTML summaries for Jupyter: a `gdlab.fit` result and a `gdlab.watch` watcher show
themselves as a few lines of facts beside small charts (PNG, inline), never a Python repr."""

from __future__ import annotations

import base64
import io
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from gdlab.result import FitResult
    from gdlab.watching.watcher import Watcher

WIDTH = 4.2, 2.6  # inches a chart, drawn at DPI
DPI = 80


def inline_png(figure: Figure) -> str:
    """An <img> holding the figure, small enough for a notebook cell."""
    figure.set_size_inches(*WIDTH)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="chart" style="max-width: 48%" src="data:image/png;base64,{data}">'


def _page(title: str, facts: dict[str, Any], items: list[str], charts: list[str]) -> str:
    from gdlab.report import readable

    rows = "".join(
        f"<tr><th style='text-align:left'>{escape(k)}</th><td>{escape(readable(v))}</td></tr>"
        for k, v in facts.items()
        if v not in (None, "")
    )
    listed = "".join(f"<li>{item}</li>" for item in items)
    return (
        f"<div><b>{escape(title)}</b><table>{rows}</table>"
        f"{f'<ul>{listed}</ul>' if listed else ''}<div>{''.join(charts)}</div></div>"
    )


def fit_html(result: FitResult) -> str:
    from gdlab.plot.training import gradient_norms, loss_curve

    history = result.history
    facts: dict[str, Any] = {
        "status": result.status, "model": result.options.model, "epochs": len(history),
        "loss": result.loss, "lr": result.options.lr, "message": result.message,
    }  # fmt: skip
    if result.coef_ is not None and result.coef_.size <= 10:
        names = result.expanded_names
        facts["coef"] = dict(zip(names, result.coef_.reshape(-1).tolist(), strict=False))
    if result.intercept_ is not None and result.intercept_.size == 1:
        facts["intercept"] = float(result.intercept_.reshape(-1)[0])
    charts = [inline_png(loss_curve(history))] if len(history) else []
    if len(history) and history.grad_norm:
        charts.append(inline_png(gradient_norms(history)))
    return _page("gdlab fit", facts, [escape(w) for w in result.warnings], charts)


def watch_html(watcher: Watcher) -> str:
    from gdlab.plot import watch
    from gdlab.watching.folder import in_memory

    summary = watcher.summary()
    run = in_memory(watcher)
    facts = {"steps": summary["steps"], "layers": len(watcher.layers), "loss": summary["loss"],
             "probes": len(summary["probes"])}  # fmt: skip
    items = [
        f"<b>{escape(d['kind'])}</b> (step {d['step']}): {escape(d['message'])}"
        for d in summary["diagnoses"]
    ] or ["nothing wrong found"]
    items += [f"skipped: {escape(s)}" for s in summary["skipped"]]
    charts = []
    if len(run.step):
        charts = [inline_png(watch.loss_figure(run)), inline_png(watch.depth_heatmap(run))]
        if run.estimates:
            charts.append(inline_png(watch.sharpness_figure(run)))
    return _page("gdlab watch", facts, items, charts)
