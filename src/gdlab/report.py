"""`gdlab report`: one self-contained HTML file with interactive figures of a run.

plotly.js is embedded (no network needed to view it); the run's numbers travel as one JSON
block that a short script turns into figures: loss, parameters, gradient norms, the loss
surface with the path, and for one-feature regression the fitted line through the data.
A slider over epochs moves the point on the surface, the line and a marker on the loss.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

import numpy as np

from gdlab.result import FitResult
from gdlab.tools.surface import Surface

SCRIPT = """
const D = JSON.parse(document.getElementById('gdlab-data').textContent);
const n = D.epoch.length;
const config = {responsive: true, displaylogo: false};
// plotly.js reads titles as {text: ...}; a bare string is ignored by the embedded version.
const T = (text) => ({text: text});
const axis = (text, more) => Object.assign({title: T(text), automargin: true}, more || {});
const below = {orientation: 'h', x: 0, y: -0.25, yanchor: 'top'};  // never over a colorbar
const vline = (x) => ({type: 'line', x0: x, x1: x, yref: 'paper', y0: 0, y1: 1,
                        line: {color: '#888', dash: 'dot'}});
const loss = [{x: D.epoch, y: D.train_loss, name: 'training', mode: 'lines'}];
if (D.val_loss.some((v) => v !== null)) {
  loss.push({x: D.epoch, y: D.val_loss, name: 'validation', mode: 'lines'});
}
Plotly.newPlot('loss', loss, {title: T('Loss by epoch'), xaxis: axis('epoch'),
  yaxis: axis(D.units.loss, {type: 'log'}), legend: below, shapes: [vline(D.epoch[n - 1])]},
  config);
Plotly.newPlot('gradients', Object.entries(D.grad_norms).map(([name, values]) =>
  ({x: D.epoch, y: values, name: name, mode: 'lines'})),
  {title: T('Gradient norm by layer'), xaxis: axis('epoch'),
   yaxis: axis(D.units.gradient, {type: 'log'}), legend: below}, config);
if (Object.keys(D.params).length) {
  Plotly.newPlot('params', Object.entries(D.params).map(([name, values]) =>
    ({x: D.epoch, y: values, name: name, mode: 'lines'})), {title: T('Parameters by epoch'),
    xaxis: axis('epoch'), yaxis: axis(D.units.params), legend: below}, config);
}
if (D.surface) {
  const s = D.surface;
  Plotly.newPlot('surface', [
    {type: 'contour', x: s.a, y: s.b, z: s.loss, colorscale: 'Viridis', name: 'loss',
     contours: {coloring: 'lines'}, line: {width: 1},
     colorbar: {title: T(D.units.loss), tickformat: '.3g'}},
    {x: s.path_a, y: s.path_b, mode: 'lines+markers', name: 'path',
     marker: {size: 3, color: 'red'}, line: {color: 'red'}},
    {x: [s.path_a[n - 1]], y: [s.path_b[n - 1]], mode: 'markers', name: 'epoch',
     marker: {size: 12, color: 'black'}},
    {x: [s.start[0]], y: [s.start[1]], mode: 'markers', name: 'start',
     marker: {size: 10, color: 'white', line: {color: 'black', width: 2}}},
    {x: [s.lowest[0]], y: [s.lowest[1]], mode: 'markers', name: 'lowest on this plane',
     marker: {size: 12, symbol: 'x', color: '#1f77b4'}}],
    {title: T('Loss surface and the path of descent'), xaxis: axis(s.names[0]),
     yaxis: axis(s.names[1]), legend: below}, config);
}
if (D.line) {
  const l = D.line;
  const ends = l.ends;
  const drawn = l.x.length < l.rows ? ` (${l.x.length} of ${l.rows} rows drawn)` : '';
  Plotly.newPlot('line', [
    {x: l.x, y: l.y, mode: 'markers', name: 'data', marker: {color: '#555'}},
    {x: ends, y: ends.map((v) => l.w[n - 1] * v + l.b[n - 1]), mode: 'lines', name: 'fit',
     line: {color: 'red'}}],
    {title: T('Fitted line' + drawn), xaxis: axis(l.feature), yaxis: axis(l.target),
     legend: below}, config);
}
function show(i) {
  document.getElementById('epoch-label').textContent = 'epoch ' + D.epoch[i] +
    ', loss ' + D.train_loss[i].toPrecision(6);
  Plotly.relayout('loss', {shapes: [vline(D.epoch[i])]});
  if (D.surface) {
    Plotly.restyle('surface', {x: [[D.surface.path_a[i]]], y: [[D.surface.path_b[i]]]}, [2]);
  }
  if (D.line) {
    const l = D.line;
    const ends = l.ends;
    Plotly.restyle('line', {y: [ends.map((v) => l.w[i] * v + l.b[i])]}, [1]);
  }
}
const slider = document.getElementById('epoch');
slider.addEventListener('input', (event) => show(Number(event.target.value)));
show(n - 1);
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 1100px; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 0.5rem; }
.plot { height: 420px; }
table { border-collapse: collapse; font-size: 0.9rem; }
td, th { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: left; }
.warning { color: #a15c00; }
#slider { position: sticky; top: 0; background: white; padding: 0.5rem 0; }
"""


def json_safe(value: Any) -> Any:
    """JSON without NaN or infinity (null instead), from numpy or plain values."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def report_data(
    result: FitResult,
    surface: Surface | None,
    line: dict[str, Any] | None,
    start: tuple[float, float] | None = None,
) -> dict[str, Any]:
    history = result.history
    data: dict[str, Any] = {
        "epoch": history.epoch,
        "train_loss": history.train_loss,
        "val_loss": history.val_loss,
        "grad_norms": history.grad_norms or {"all parameters": history.grad_norm},
        "params": history.params,
        "surface": None,
        "line": line,
        "units": units(result),
    }
    if surface is not None:
        data["surface"] = {
            "names": list(surface.names),
            "a": surface.a,
            "b": surface.b,
            "loss": surface.loss,
            "path_a": history.params[surface.names[0]],
            "path_b": history.params[surface.names[1]],
            "start": list(start or (math.nan, math.nan)),
            "lowest": list(surface.lowest),
        }
    cleaned: dict[str, Any] = json_safe(data)
    return cleaned


LOSS_NAMES = {
    "mse": "mean squared error (target units²)",
    "mae": "mean absolute error (target units)",
    "huber": "Huber loss (target units)",
    "bce": "log loss (nats per row)",
    "cross-entropy": "cross-entropy (nats per row)",
}


def units(result: FitResult) -> dict[str, str]:
    """The axis titles: what the loss measures, in what units; gradients and parameters."""
    name = LOSS_NAMES.get(result.options.resolved_loss, "loss")
    scaled = result.options.standardize and not result.options.is_classifier
    return {
        "loss": name,
        "gradient": "‖∂L/∂θ‖" + (" (standardized units)" if scaled else ""),
        "params": "value" + (" (original units)" if result.coef_ is not None else ""),
    }


def readable(value: Any) -> str:
    """A summary value as a person reads it: numbers to 6 digits, mappings as name = value,
    yes/no for flags, a dash for nothing (never a Python repr)."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return "; ".join(f"{k} = {readable(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(readable(v) for v in value)
    return str(value)


def embedded_json(data: Any) -> str:
    """JSON that no string inside it can end or re-mode a <script> element: '<', '>' and '&'
    are written as \\u escapes (valid JSON, the same values), so names such as '<!--<script>'
    or '</script>' stay data (json.dumps already escapes U+2028/2029)."""
    text = json.dumps(data, allow_nan=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escape)
    return text


def render(
    title: str,
    data: dict[str, Any],
    summary: dict[str, Any],
    *,
    plotly_js: str,
) -> str:
    """The whole page; `plotly_js` is embedded as it is."""
    payload = embedded_json(data)
    options = summary.get("options", {})
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(readable(v))}</td></tr>"
        for k, v in options.items()
    )
    facts = {key: summary.get(key) for key in ("status", "epochs", "loss", "val_loss", "data",
                                               "target", "features", "message")}  # fmt: skip
    facts |= {key: summary[key] for key in ("coef", "intercept") if key in summary}
    fact_rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(readable(v))}</td></tr>"
        for k, v in facts.items()
        if v not in (None, "", [])
    )
    warnings = "".join(
        f'<li class="warning">{html.escape(w)}</li>' for w in summary.get("warnings", [])
    )
    last = max(0, len(data["epoch"]) - 1)
    panels = ["loss", "gradients"]
    panels += ["params"] if data["params"] else []
    panels += ["surface"] if data["surface"] else []
    panels += ["line"] if data["line"] else []
    divs = "".join(f'<div id="{name}" class="plot"></div>' for name in panels)
    body = f"""<div id="slider"><input type="range" id="epoch" min="0" max="{last}" value="{last}"
 aria-label="epoch" style="width: 60%"> <span id="epoch-label"></span></div>
<div class="grid">{divs}</div>
<h2>Summary</h2><table>{fact_rows}</table>
<h2>Warnings</h2><ul>{warnings or "<li>none</li>"}</ul>
<h2>Options</h2><table>{rows}</table>"""
    return html_page(title, body, payload, SCRIPT, plotly_js)


def html_page(title: str, body: str, payload: str, script: str, plotly_js: str) -> str:
    """A self-contained page: plotly.js and the style inline, the body, the run's numbers as
    one JSON block (`payload`, from `embedded_json`) and the script that draws them."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>{STYLE}</style>
<script>{plotly_js}</script>
</head><body>
<h1>{html.escape(title)}</h1>
{body}
<script type="application/json" id="gdlab-data">{payload}</script>
<script>{script}</script>
</body></html>
"""
