"""Animations: each frame shows the history's row it claims to, and the GIF has every frame."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

import gdlab
from gdlab.expression import parse
from gdlab.plot.animate import (
    descent_animation,
    frame_indices,
    line_animation,
    save_gif,
)
from gdlab.tools.descend import descend
from tests.conftest import CliRun
from tests.test_resume import load

matplotlib.use("Agg")
pytestmark = [
    pytest.mark.filterwarnings("ignore::gdlab.GdlabWarning"),
    # frames are checked by calling the update function; not every animation is encoded
    pytest.mark.filterwarnings("ignore:Animation was deleted without rendering"),
]


def test_frames_cover_first_and_last_and_are_increasing() -> None:
    assert frame_indices(5) == [0, 1, 2, 3, 4]
    frames = frame_indices(10_000, 40)
    assert frames[0] == 0 and frames[-1] == 9999 and len(frames) <= 42
    assert all(a < b for a, b in itertools.pairwise(frames))


def test_the_line_turns_through_the_data_as_the_history_says(tmp_path: Path) -> None:
    X, y = load("tutorial-line")
    history = gdlab.fit(X, y, lr=0.05, epochs=30, feature_names=["x"]).history
    animation, indices = line_animation(X[:, 0], y, history, "coef[x]", "intercept")
    line = animation._fig.axes[0].lines[0]  # type: ignore[attr-defined]
    for frame in (0, len(indices) // 2, len(indices) - 1):
        animation._func(frame)  # type: ignore[attr-defined]
        t = indices[frame]
        w, b = history.params["coef[x]"][t], history.params["intercept"][t]
        np.testing.assert_allclose(line.get_ydata(), w * line.get_xdata() + b)
    save_gif(animation, tmp_path / "line.gif")
    assert Image.open(tmp_path / "line.gif").n_frames == len(indices)
    assert [p.name for p in tmp_path.iterdir()] == ["line.gif"]  # no temporary left


def test_the_descent_point_follows_the_path() -> None:
    expression = parse("(3+3*a)**2")
    path = descend(expression, {"a": 0.5}, lr=0.05, steps=12)
    animation, indices = descent_animation(expression, [path])
    marker = animation._fig.axes[0].lines[-1]  # type: ignore[attr-defined]
    animation._func(3)  # type: ignore[attr-defined]
    assert marker.get_xdata()[0] == path.points[indices[3]][0]
    assert marker.get_ydata()[0] == path.values[indices[3]]


@pytest.mark.slow
def test_animate_flags_write_gifs(gdlab: Callable[..., CliRun], tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert gdlab("fit", "tutorial-line", "--epochs", "25", "--lr", "0.05", "--out",
                 str(run)).code == 0  # fmt: skip
    assert gdlab("plot", str(run), "--animate").code == 0
    assert (run / "descent.gif").is_file() and (run / "line.gif").is_file()
    assert gdlab("descend", "saddle", "--steps", "10", "--animate", "--out",
                 str(tmp_path / "d")).code == 0  # fmt: skip
    assert Image.open(tmp_path / "d" / "descend.gif").n_frames == 11
    assert gdlab("compare", "tutorial-line", "--epochs", "10", "--batch-sizes", "full,1",
                 "--animate", "--out", str(tmp_path / "c")).code == 0  # fmt: skip
    assert (tmp_path / "c" / "compare.gif").is_file()
