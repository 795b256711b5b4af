"""`device=cuda` on every path (closed form, exact, analytic, autograd, sweep) against the
same run on the CPU; skipped without a GPU (CI has none), run on a lent GPU machine with
`pytest -m cuda`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gdlab
from gdlab.tools.sweep import sweep

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    pytest.mark.filterwarnings("ignore::gdlab.GdlabWarning"),
]


def data(classes: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.1 * rng.normal(size=500)
    return X, (y > 0).astype(float) if classes else y


CASES = [
    ("closed-form", dict(model="linear")),
    ("exact", dict(model="linear", fast_paths="iterate", epochs=200)),
    ("analytic", dict(model="logistic", batch_size=32, epochs=5)),
    ("autograd", dict(model="mlp:8", lr=0.05, epochs=30)),
    ("autograd", dict(model="linear", fast_paths="off", epochs=200)),
]


@pytest.mark.parametrize(("path", "options"), CASES, ids=[c[0] for c in CASES])
def test_each_path_on_cuda_equals_the_cpu_run(path: str, options: dict) -> None:
    X, y = data(classes=options["model"] == "logistic")
    on_cpu = gdlab.fit(X, y, device="cpu", **options)
    on_gpu = gdlab.fit(X, y, device="cuda", **options)
    assert on_cpu.path == on_gpu.path == path
    assert on_gpu.history.last_epoch == on_cpu.history.last_epoch
    # float64 on both; reductions differ in order only
    assert on_gpu.loss == pytest.approx(on_cpu.loss, rel=1e-9, abs=1e-12)


def test_auto_trains_on_the_gpu_when_there_is_one() -> None:
    from gdlab.config import make_options
    from gdlab.problem import Problem, given_data

    X, y = data()
    problem = Problem(make_options(model="mlp:4"), *given_data(X, y, None), custom_model=None)
    assert problem._device().type == "cuda"


def test_a_sweep_on_cuda_equals_the_cpu_sweep() -> None:
    X, y = data()
    runs = {}
    for device in ("cpu", "cuda"):
        found, _ = sweep(X, y, lrs=[0.01, 0.1], optimizers=["gd", "momentum"], device=device,
                         epochs=40)  # fmt: skip
        runs[device] = [run.final for run in found]
    assert all(np.isfinite(runs["cpu"]))
    assert runs["cuda"] == pytest.approx(runs["cpu"], rel=1e-9)
