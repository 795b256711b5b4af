"""`gdlab plot` and `gdlab report` on a `gdlab.watch` run folder: the folder read back equals
what the watcher recorded, the heatmap's cells are the binned log norms by hand, and the page
draws every figure in Chromium with the network cut off."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from gdlab import watch
from gdlab.plot.watch import binned_log
from gdlab.watching.folder import is_watch_folder, read
from tests.conftest import CliRun
from tests.test_watch import batches, mlp, train

pytestmark = pytest.mark.filterwarnings("ignore::gdlab.GdlabWarning")


def deep_sigmoid_run(out: Path, steps: int = 120) -> Any:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(6):
        layers += [nn.Linear(4 if i == 0 else 16, 16), nn.Sigmoid()]
    model = nn.Sequential(*layers, nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    x_probe = torch.randn(64, 4, generator=g)
    y_probe = x_probe.sum(1, keepdim=True).sin()

    def probe() -> torch.Tensor:
        return nn.functional.mse_loss(model(x_probe), y_probe)

    with watch(model, optimizer, out=out, probe=probe, every=20, budget=None) as w:
        for _ in range(steps):
            x = torch.randn(32, 4, generator=g)
            loss = nn.functional.mse_loss(model(x), x.sum(1, keepdim=True).sin())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            w.step(loss)
    return w


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("watch") / "run"
    return out, deep_sigmoid_run(out)


def test_the_folder_reads_back_what_the_watcher_recorded(watched: tuple[Path, Any]) -> None:
    out, w = watched
    assert is_watch_folder(out)
    run = read(out)
    steps = w.recorded()
    assert run.layers == w.layers
    np.testing.assert_array_equal(run.step, steps.step)
    np.testing.assert_allclose(run.grad, steps.grad, rtol=1e-5)
    np.testing.assert_allclose(run.grad_norm, np.sqrt((steps.grad**2).sum(1)), rtol=1e-6)
    measured = np.isfinite(run.ratio).any(1)
    # every `ratio_every` (10) steps, and the two steps whose updates a probe's cosine compares
    expected = [s for s in range(1, 121) if s % 10 == 0 or s % 20 == 19]
    assert run.step[measured].tolist() == expected
    np.testing.assert_allclose(run.ratio[measured], (steps.update / steps.weight)[measured],
                               rtol=1e-5)  # fmt: skip
    assert [p["step"] for p in run.probes] == [20, 40, 60, 80, 100, 120]


def test_the_heatmap_cells_are_the_mean_log_norm_of_each_bin() -> None:
    values = np.array([[1.0, 10.0], [100.0, 0.0], [1e-3, math.nan], [10.0, 1e4], [1.0, 1.0]])
    edges, cells = binned_log(values, columns=2)
    assert edges.tolist() == [0, 2, 5]  # five steps into two bins
    # by hand: layer 0, bin 0: mean(log10 1, log10 100) = 1; layer 1, bin 0: only 10 counts
    np.testing.assert_allclose(cells, [[1.0, (-3 + 1 + 0) / 3], [1.0, (4 + 0) / 2]])
    _, empty = binned_log(np.array([[0.0], [math.inf]]), columns=1)
    assert math.isnan(empty[0, 0])  # nothing finite and positive: drawn grey


def test_plot_writes_the_watch_figures(
    watched: tuple[Path, Any], gdlab: Callable[..., CliRun]
) -> None:
    out, _ = watched
    result = gdlab("plot", str(out))
    assert result.code == 0, result.err
    for name in ("loss.png", "depth.png", "update_ratios.png", "sharpness.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run = read(out)
    _, cells = binned_log(run.grad)
    assert np.nanmean(cells[0]) < np.nanmean(cells[-1]) - 2  # vanishing toward the input


def test_without_a_probe_plot_says_why_there_is_no_sharpness_figure(
    tmp_path: Path, gdlab: Callable[..., CliRun]
) -> None:
    torch.manual_seed(0)
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, optimizer, out=tmp_path / "run") as w:
        train(model, optimizer, batches(30), w)
    result = gdlab("plot", str(tmp_path / "run"))
    assert result.code == 0, result.err
    assert "skipped sharpness.png: sharpness and the stability threshold: no probe" in result.out
    assert not (tmp_path / "run" / "sharpness.png").exists()


def test_fit_only_options_on_a_watch_folder_are_one_line_errors(
    watched: tuple[Path, Any], gdlab: Callable[..., CliRun]
) -> None:
    out, _ = watched
    result = gdlab("plot", str(out), "--animate")
    assert result.code != 0 and "Traceback" not in result.err
    assert "gdlab.watch folder: --animate applies to gdlab fit runs only" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_the_report_never_overwrites_the_watch_folder_s_own_files(
    watched: tuple[Path, Any], gdlab: Callable[..., CliRun]
) -> None:
    out, _ = watched
    before = (out / "history.csv").read_bytes()
    result = gdlab("report", str(out), "--out", str(out / "history.csv"), "--overwrite")
    assert result.code != 0 and "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert (out / "history.csv").read_bytes() == before


def test_a_damaged_history_is_named(tmp_path: Path, gdlab: Callable[..., CliRun]) -> None:
    out = tmp_path / "run"
    deep_sigmoid_run(out, steps=10)
    (out / "history.csv").write_text("not,a,history\n1,2,3\n")
    result = gdlab("report", str(out))
    assert result.code != 0 and "history.csv is missing or damaged" in result.err


@pytest.mark.parametrize("command", ["report", "plot"])
def test_a_damaged_summary_is_named_not_taken_for_another_folder(
    tmp_path: Path, gdlab: Callable[..., CliRun], command: str
) -> None:
    out = tmp_path / "run"
    deep_sigmoid_run(out, steps=10)
    (out / "summary.json").write_text('{"source": "gdlab.wat')  # cut off mid-write
    result = gdlab(command, str(out))
    assert result.code == 2 and "summary.json is missing or damaged" in result.err
    assert "model.pt" not in result.err and "Traceback" not in result.err


def test_the_report_lists_the_diagnoses_and_carries_the_figures(
    watched: tuple[Path, Any], gdlab: Callable[..., CliRun]
) -> None:
    out, w = watched
    result = gdlab("report", str(out))
    assert result.code == 0, result.err
    page = (out / "report.html").read_text()
    assert "<b>vanishing</b> at step 1 in 0" in page
    data = json.loads(page.split('id="gdlab-data">')[1].split("</script>")[0])
    assert data["layers"] == w.layers
    assert data["probes"]["step"] == [p["step"] for p in w.probes]
    assert page.count('class="plot"') == 4  # loss, depth, sharpness, update ratios


@pytest.mark.slow
def test_the_watch_report_draws_every_figure_in_chromium(
    watched: tuple[Path, Any], gdlab: Callable[..., CliRun], browser: Any
) -> None:
    out, _ = watched
    assert gdlab("report", str(out)).code == 0
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.route("http*://**", lambda route: route.abort())
    page.goto((out / "report.html").as_uri())
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length === 4")
    cells = page.evaluate("document.getElementById('depth').data[0].z.length")
    assert cells == len(read(out).layers) and errors == []


def test_each_parameter_group_has_its_scheduled_lr_and_momentum(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    optimizer = torch.optim.SGD([{"params": model[0].parameters(), "lr": 0.1, "momentum": 0.9},
                                 {"params": model[2].parameters(), "lr": 0.01}])  # fmt: skip
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    expected = []
    with watch(model, optimizer, out=tmp_path / "run") as w:
        for _ in range(7):
            x = torch.randn(8, 3)
            loss = model(x).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            expected.append([g["lr"] for g in optimizer.param_groups])
            w.step(loss)
            schedule.step()
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(tmp_path / "run" / "history.csv").to_pydict()
    np.testing.assert_allclose(table["lr"], [e[0] for e in expected])
    np.testing.assert_allclose(table["lr:group1"], [e[1] for e in expected])
    assert table["lr"][:4] == [0.1, 0.1, 0.1, 0.05]  # StepLR halves it after 3 steps
    assert set(table["momentum"]) == {0.9} and set(table["momentum:group1"]) == {0.0}
