"""gdlab report: a self-contained page, opened in headless Chromium with the network cut off.

Playwright drives Debian's chromium (it cannot download its own browser here); `.ci/run`
installs chromium when it is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gdlab.history import History
from tests.conftest import CliRun

pytestmark = pytest.mark.filterwarnings("ignore::gdlab.GdlabWarning")


@pytest.fixture
def run_with_report(gdlab: Callable[..., CliRun], tmp_path: Path) -> Path:
    out = tmp_path / "run"
    assert gdlab("fit", "tutorial-line", "--epochs", "40", "--lr", "0.05", "--out",
                 str(out)).code == 0  # fmt: skip
    result = gdlab("report", str(out))
    assert result.code == 0, result.err
    return out


def test_the_report_embeds_its_scripts_and_the_run(run_with_report: Path) -> None:
    page = (run_with_report / "report.html").read_text()
    assert "<script src" not in page and "http://" not in page.split("plotly")[0]
    assert 'id="gdlab-data"' in page and "max_epochs" in page
    assert page.count('class="plot"') == 5  # loss, gradients, params, surface, line


@pytest.mark.slow
def test_the_report_works_offline_and_the_slider_moves_the_point_and_line(
    run_with_report: Path, browser: Any
) -> None:
    history = History.load(run_with_report / "history.csv")
    page = browser.new_page()
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))

    def block(route: Any) -> None:
        requests.append(route.request.url)
        route.abort()

    page.route("http*://**", block)  # no network: any request would be recorded and refused
    page.goto((run_with_report / "report.html").as_uri())
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length === 5")
    assert errors == [] and requests == []

    def marker() -> tuple[float, float]:
        x, y = page.evaluate("[document.getElementById('surface').data[2].x[0],"
                             " document.getElementById('surface').data[2].y[0]]")  # fmt: skip
        return float(x), float(y)

    assert marker() == (history.params["coef[x]"][-1], history.params["intercept"][-1])
    page.evaluate("""() => { const s = document.getElementById('epoch'); s.value = 4;
                             s.dispatchEvent(new Event('input')); }""")
    assert marker() == (history.params["coef[x]"][4], history.params["intercept"][4])
    line = page.evaluate("document.getElementById('line').data[1].y")
    x = page.evaluate("document.getElementById('line').data[1].x")
    w, b = history.params["coef[x]"][4], history.params["intercept"][4]
    assert line == pytest.approx([w * x[0] + b, w * x[1] + b])
    assert "epoch 5" in page.text_content("#epoch-label")
    assert errors == []


HOSTILE = ["<!--<script>", "</script><script>alert(1)</script>", "x\u2028&amp;<b>"]


@pytest.fixture
def hostile_report(gdlab: Callable[..., CliRun], tmp_path: Path) -> Path:
    """A one-feature run whose column names try to end or re-mode the page's scripts."""
    feature, target = HOSTILE[1], HOSTILE[0]
    rows = "\n".join(f"{x},{2 * x + 1}" for x in range(8))
    data = tmp_path / "hostile.csv"
    data.write_text(f'"{feature}","{target}"\n{rows}\n')
    out = tmp_path / "run"
    fitted = gdlab("fit", str(data), "--target", target, "--epochs", "30", "--lr", "0.1",
                   "--out", str(out))  # fmt: skip
    assert fitted.code == 0, fitted.err
    assert gdlab("report", str(out)).code == 0
    return out / "report.html"


def test_hostile_names_stay_data_in_the_page(hostile_report: Path) -> None:
    page = hostile_report.read_text()
    payload = page.split('<script type="application/json" id="gdlab-data">')[1]
    payload = payload.split("</script>")[0]
    assert "<" not in payload and ">" not in payload  # nothing the HTML tokenizer acts on
    import json

    assert HOSTILE[1] in json.dumps(json.loads(payload), ensure_ascii=False)
    assert "<script>alert(1)" not in page.split("<h2>Summary</h2>")[1].split("<script>")[0]


@pytest.mark.slow
def test_hostile_names_draw_every_figure_in_chromium(hostile_report: Path, browser: Any) -> None:
    page = browser.new_page()
    errors: list[str] = []
    dialogs: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.route("http*://**", lambda route: route.abort())
    page.goto(hostile_report.as_uri())
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length === 5")
    assert errors == [] and dialogs == []


@pytest.fixture
def large_report(gdlab: Callable[..., CliRun], tmp_path: Path) -> Path:
    """One feature over 1,000,000 rows: the line chart used Math.min(...x), which overflows
    Chromium's stack, and every row made the file grow without bound."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=1_000_000)
    data = tmp_path / "large.npz"
    np.savez(data, x=x, y=3 * x + 1 + rng.normal(size=x.size))
    out = tmp_path / "run"
    assert gdlab("fit", str(data), "--target", "y", "--epochs", "20", "--out", str(out)).code == 0
    assert gdlab("report", str(out)).code == 0
    return out / "report.html"


@pytest.mark.slow
def test_a_million_row_report_is_small_and_draws_in_chromium(
    large_report: Path, browser: Any
) -> None:
    assert large_report.stat().st_size < 6_000_000  # plotly.js is 4.6 MB of it
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.route("http*://**", lambda route: route.abort())
    page.goto(large_report.as_uri())
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length === 5")
    assert errors == []
    title = page.evaluate("document.getElementById('line').layout.title.text")
    assert "5000 of 1000000 rows drawn" in str(title)


def test_every_chart_has_a_title_and_labelled_axes_and_the_summary_reads_plainly(
    run_with_report: Path, browser: Any
) -> None:
    page = browser.new_page()
    page.goto((run_with_report / "report.html").as_uri())
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length === 5")
    for name in ("loss", "gradients", "params", "surface", "line"):
        layout = page.evaluate(f"document.getElementById('{name}').layout")
        texts = [layout["title"]["text"], layout["xaxis"]["title"]["text"],
                 layout["yaxis"]["title"]["text"]]  # fmt: skip
        assert all(text and text.strip() for text in texts), (name, texts)
        assert layout["legend"]["orientation"] == "h"  # below the plot, never on a colorbar
    assert "squared error" in page.evaluate(
        "document.getElementById('loss').layout.yaxis.title.text"
    )
    traces = page.evaluate("document.getElementById('surface').data")
    start = next(t for t in traces if t["name"] == "start")
    contour = traces[0]
    assert min(contour["x"]) < start["x"][0] < max(contour["x"])  # the grid covers the start
    assert min(contour["y"]) < start["y"][0] < max(contour["y"])
    summary = page.text_content("table")
    assert summary is not None and "coef[x]" not in summary
    for python in ("{'", "True", "False", "None"):
        assert python not in page.text_content("body"), python
    assert "x = " in summary  # the coefficients as name = value
