"""`gdlab report` on a watch folder: one self-contained HTML page (plotly.js embedded) with the
diagnoses first, then the loss, the gradient norm by depth over time, the sharpness against its
threshold and the update ratios per layer, and what the watcher skipped and why."""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from gdlab.plot.watch import POINTS, binned_log
from gdlab.report import embedded_json, html_page, json_safe, readable
from gdlab.watching.folder import WatchedRun

SCRIPT = """
const D = JSON.parse(document.getElementById('gdlab-data').textContent);
const config = {responsive: true, displaylogo: false};
const T = (text) => ({text: text});
const axis = (text, more) => Object.assign({title: T(text), automargin: true}, more || {});
const below = {orientation: 'h', x: 0, y: -0.25, yanchor: 'top'};
const marks = D.diagnoses.map((d) => ({type: 'line', x0: d.step, x1: d.step, yref: 'paper',
  y0: 0, y1: 1, line: {color: '#d62728', dash: 'dot'}}));
Plotly.newPlot('loss', [{x: D.step, y: D.loss, mode: 'lines', name: 'loss'}],
  {title: T('Loss by step (dotted: a diagnosis)'), xaxis: axis('step'),
   yaxis: axis('loss', {type: D.log_loss ? 'log' : 'linear'}), shapes: marks}, config);
// layer names such as "0" or "12" are names, not numbers: a category axis keeps each row
Plotly.newPlot('depth', [{type: 'heatmap', x: D.heat.step, y: D.layers, z: D.heat.log10,
  colorscale: 'Viridis', colorbar: {title: T('log10 ‖g‖')},
  hovertemplate: 'step %{x}<br>layer %{y}<br>log10 ‖g‖ %{z:.2f}<extra></extra>'}],
  {title: T('Gradient norm by depth over time (grey: zero or not finite)'),
   xaxis: axis('step'), plot_bgcolor: '#bbbbbb',
   yaxis: axis('layer (input side at the top)', {type: 'category', autorange: 'reversed'})},
  config);
if (D.probes.step.length) {
  const p = D.probes;
  const traces = [{x: p.step, y: p.sharpness, mode: 'lines+markers', name: 'sharpness λmax'}];
  if (p.threshold.some((v) => v !== null)) {
    traces.push({x: p.step, y: p.threshold, mode: 'lines', name: 'threshold ' + p.rule,
                 line: {dash: 'dash', color: '#d62728'}});
  }
  Plotly.newPlot('sharpness', traces, {title: T('Sharpness against the stability threshold'),
    xaxis: axis('step'), yaxis: axis('curvature', {type: 'log'}), legend: below}, config);
}
Plotly.newPlot('ratios', D.layers.map((name, i) => ({x: D.ratio_step, y: D.ratio[i],
  mode: 'lines', name: name})), {title: T('Update-to-weight ratio by layer'),
  xaxis: axis('step'), yaxis: axis('‖Δθ‖ / ‖θ‖ a step', {type: 'log'}), legend: below,
  shapes: D.bounds.map((b) => ({type: 'line', xref: 'paper', x0: 0, x1: 1, y0: b, y1: b,
    line: {color: '#888', dash: 'dash'}}))}, config);
"""


def page_data(run: WatchedRun) -> dict[str, Any]:
    from gdlab.watching.diagnoses import RATIO_HIGH, RATIO_LOW

    drawn = slice(None, None, max(1, -(-len(run.step) // POINTS)))
    edges, cells = binned_log(run.grad)
    measured = np.isfinite(run.ratio).any(1)
    ratio_rows = np.flatnonzero(measured)[:: max(1, -(-int(measured.sum()) // POINTS))]
    probes = run.estimates
    finite = run.loss[np.isfinite(run.loss)]
    data = {
        "step": run.step[drawn], "loss": run.loss[drawn],
        "log_loss": bool(len(finite) and finite.min() > 0),
        "layers": run.layers,
        "heat": {"step": run.step[edges[:-1]], "log10": cells},
        "ratio_step": run.step[ratio_rows], "ratio": run.ratio[ratio_rows].T,
        "bounds": [RATIO_LOW, RATIO_HIGH],
        "probes": {
            "step": [p["step"] for p in probes],
            "sharpness": [p["sharpness"] for p in probes],
            "threshold": [p.get("threshold") for p in probes],
            "rule": probes[0].get("rule", "") if probes else "",
        },
        "diagnoses": run.diagnoses,
    }  # fmt: skip
    cleaned: dict[str, Any] = json_safe(data)
    return cleaned


def render(title: str, run: WatchedRun, *, plotly_js: str) -> str:
    data = page_data(run)
    said = "".join(
        f'<li class="warning"><b>{html.escape(str(d["kind"]))}</b> at step {d["step"]}'
        f"{' in ' + html.escape(str(d['layer'])) if d.get('layer') else ''}: "
        f"{html.escape(str(d['message']))}</li>"
        for d in run.diagnoses
    )
    skipped = "".join(f"<li>{html.escape(str(s))}</li>" for s in run.summary.get("skipped", []))
    facts = {"steps": run.summary.get("steps"), "last loss": run.summary.get("loss"),
             "layers": len(run.layers), "probes": len(run.probes),
             "probe seconds": run.summary.get("probe_seconds"),
             **run.summary.get("settings", {})}  # fmt: skip
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(readable(v))}</td></tr>"
        for k, v in facts.items()
    )
    panels = ["loss", "depth", *(["sharpness"] if data["probes"]["step"] else []), "ratios"]
    divs = "".join(f'<div id="{name}" class="plot"></div>' for name in panels)
    body = f"""<h2>Diagnoses</h2><ul>{said or "<li>nothing wrong found</li>"}</ul>
<div class="grid">{divs}</div>
<h2>Run</h2><table>{rows}</table>
<h2>Skipped measures</h2><ul>{skipped or "<li>none</li>"}</ul>"""
    return html_page(title, body, embedded_json(data), SCRIPT, plotly_js)
