"""Jupyter's view of a `gdlab.fit` result and of a watcher: the facts a person reads first,
and charts that are real PNG images of the run."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest
import torch
from torch import nn

import gdlab
from tests.test_watch import batches, mlp, train

pytestmark = pytest.mark.filterwarnings("ignore::gdlab.GdlabWarning")


def images(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r"base64,([A-Za-z0-9+/=]+)", page)]


def test_a_fit_result_shows_its_status_coefficients_and_loss_curve() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    y = X @ np.array([2.0, -1.0]) + 0.5
    result = gdlab.fit(X, y, epochs=300, lr=0.1)
    page = result._repr_html_()
    assert f"<td>{result.status}</td>" in page
    shown = re.search(r"coef</th><td>x0 = ([^;]+); x1 = ([^<]+)<", page)
    assert shown is not None
    exact = np.linalg.lstsq(np.column_stack([X, np.ones(200)]), y, rcond=None)[0]
    np.testing.assert_allclose([float(shown[1]), float(shown[2])], exact[:2], rtol=1e-5)
    charts = images(page)
    assert len(charts) == 2 and all(c.startswith(b"\x89PNG\r\n\x1a\n") for c in charts)


def test_a_watcher_shows_its_diagnoses_and_charts() -> None:
    torch.manual_seed(0)
    model = mlp(depth=9, activation=nn.Sigmoid)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with gdlab.watch(model, optimizer) as w:
        train(model, optimizer, batches(20), w)
    page = w._repr_html_()
    assert "<b>vanishing</b> (step 1)" in page
    assert "skipped: sharpness and the stability threshold: no probe given" in page
    charts = images(page)
    assert len(charts) == 2 and all(c.startswith(b"\x89PNG\r\n\x1a\n") for c in charts)
