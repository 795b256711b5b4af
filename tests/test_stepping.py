"""A run advanced a few epochs at a time equals one uninterrupted run, on every gradient
source, and rewinds to its initial point."""

from __future__ import annotations

import pytest

import gdlab
from gdlab.stepping import SteppedRun
from tests.test_resume import load

CASES = [
    ("noisy-plane", {"lr": 0.1}),  # exact: XᵀX, iterated
    ("noisy-plane", {"lr": 0.05, "batch_size": 8, "optimizer": "momentum"}),  # analytic
    ("binary-blobs", {"model": "logistic", "lr": 0.2, "batch_size": 16}),  # analytic, bce
    ("binary-blobs", {"model": "mlp:4", "lr": 0.01, "optimizer": "adam"}),  # autograd
]
FIXED = {"dtype": "float64", "gtol": 0, "xtol": 0, "tol": 0, "patience": 10**6}


def same_run(a: gdlab.FitResult, b: gdlab.FitResult) -> None:
    assert a.history.train_loss == b.history.train_loss
    assert a.history.epoch == b.history.epoch
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert p.tolist() == q.tolist()


@pytest.mark.parametrize(("name", "options"), CASES)
def test_advances_equal_one_run_bit_for_bit(name: str, options: dict) -> None:
    X, y = load(name)
    stepped = SteppedRun(X, y, **FIXED, **options)
    for epochs in (3, 7, 1, 9):
        result = stepped.advance(epochs)
    assert stepped.epochs_done == 20
    whole = gdlab.fit(X, y, epochs=20, fast_paths="iterate", stop=lambda: False, **FIXED,
                      **options)  # fmt: skip
    assert result.path == whole.path
    same_run(result, whole)


def test_rewind_returns_to_the_initial_point() -> None:
    X, y = load("noisy-plane")
    stepped = SteppedRun(X, y, lr=0.1, **FIXED)
    first = stepped.advance(12)
    first_losses = list(first.history.train_loss)
    stepped.advance(5)
    stepped.rewind()
    assert stepped.epochs_done == 0
    again = stepped.advance(12)
    assert again.history.train_loss == first_losses


def test_a_stop_test_ends_an_advance_as_it_ends_a_fit() -> None:
    X, y = load("noisy-plane")
    stepped = SteppedRun(X, y, lr=0.5, dtype="float64")
    while (result := stepped.advance(25)).status == "max_epochs":
        assert stepped.epochs_done < 10_000
    whole = gdlab.fit(X, y, lr=0.5, dtype="float64", epochs=10_000, fast_paths="iterate")
    assert result.status == whole.status == "converged"
    assert len(result.history) == len(whole.history)


def test_an_advance_of_no_epochs_is_refused_by_name() -> None:
    X, y = load("noisy-plane")
    with pytest.raises(gdlab.GdlabError, match="`epochs`"):
        SteppedRun(X, y, lr=0.1).advance(0)


def test_taking_updates_stops_inside_an_epoch_and_resumes_bit_for_bit() -> None:
    X, y = load("noisy-plane")  # 200 rows in batches of 16: 13 updates an epoch
    options = {"lr": 0.05, "batch_size": 16, "optimizer": "momentum", **FIXED}
    stepped = SteppedRun(X, y, **options)
    path: list[dict[str, float]] = []
    for updates in (5, 8, 13, 1, 12):  # 39 updates: three epochs, stopped inside two of them
        result = stepped.take(updates)
        assert len(stepped.steps) == updates and result.status == "interrupted"
        path += stepped.steps
    assert stepped.epochs_done == 3 and result.loop_state is not None
    assert result.loop_state.position == 0  # the 39th update ended the third epoch
    stepped.take(3)
    assert stepped.result is not None and stepped.result.loop_state is not None
    assert stepped.result.loop_state.position == 48  # three batches of 16 into the fourth
    path += stepped.steps
    result = stepped.advance(1)  # ends the fourth epoch
    assert stepped.epochs_done == 4
    every: list[dict[str, float]] = []
    whole = gdlab.fit(X, y, epochs=4, fast_paths="iterate", stop=lambda: False,
                      on_step=every.append, **options)  # fmt: skip
    same_run(result, whole)
    assert path == every[: len(path)]
    with pytest.raises(gdlab.GdlabError, match="`updates`"):
        stepped.take(0)
