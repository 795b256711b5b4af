"""The tutorial script (tests/data/seeds/002) and `gdlab fit` from one seed end in one place."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from gdlab.demo import run_demo, tutorial_loop
from tests.conftest import DATA

SEED_SCRIPT = DATA / "seeds" / "002_cc428f9d804c1b8a.txt"


def tutorial_script() -> str:
    """The script as the tutorial prints it, up to its final print."""
    text = SEED_SCRIPT.read_text()
    start = text.index("Example") + len("Example")
    code = text[start : text.index("Output", start)].strip()
    assert "optim.SGD(model.parameters(), lr=0.01)" in code
    return code


def test_gdlab_fit_matches_the_seeded_tutorial_script(gdlab, tmp_path: Path) -> None:
    namespace: dict[str, object] = {}
    torch.manual_seed(0)
    exec(compile(tutorial_script().replace("print(", "_ = ("), "tutorial", "exec"), namespace)
    model = namespace["model"]
    assert isinstance(model, torch.nn.Linear)
    run = gdlab(
        "fit", "tutorial-line", "--seed", "0", "--optimizer", "sgd", "--lr", "0.01",
        "--epochs", "1000", "--batch-size", "full", "--no-standardize", "--json",
        "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert run.code == 0, run.err
    summary = json.loads(run.out)
    assert summary["epochs"] == 1000
    assert summary["coef"]["x"] == pytest.approx(model.weight.item(), abs=1e-6)
    assert summary["intercept"] == pytest.approx(model.bias.item(), abs=1e-6)


def test_demo_reaches_the_tutorial_loop_and_draws_its_figures(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_demo(tmp_path, echo=lines.append)
    reference = tutorial_loop()
    assert result.coef_ is not None and result.intercept_ is not None
    assert result.coef_[0, 0] == reference.weight.item()  # bit for bit
    assert result.intercept_[0] == reference.bias.item()
    logged = [line for line in lines if re.match(r"epoch +\d+ ", line)]
    assert [int(line.split()[1]) for line in logged] == [1, *range(100, 1001, 100)]
    for name in ("loss.png", "weight_bias_loss.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(str(tmp_path / "loss.png") in line for line in lines)
    # The hand-computed first step equals what autograd and the update produced.
    hand = next(line for line in "\n".join(lines).splitlines() if line.strip().startswith("w = "))
    assert float(hand.rsplit("=", 1)[1]) == pytest.approx(
        result.history.params["coef[x]"][0], abs=1e-6
    )
