"""The per-epoch and per-step hooks a run hands its loop: the caller's, joined with gdlab's own
(the sharpness tracker), and a closed-form history handed to them as the loop would have."""

from __future__ import annotations

from collections.abc import Callable

from gdlab.history import History


def replayed(
    history: History,
    on_epoch: Callable[[History], None] | None,
    on_step: Callable[[dict[str, float]], None] | None,
) -> History:
    """A closed-form run's history handed to the hooks as the loop would have: every row to
    `on_epoch` (the progress bar, log lines), and, one update per epoch, to `on_step`."""
    if on_epoch is not None:
        history = history.replay(on_epoch)
    if on_step is not None and history.params:
        for k in range(len(history)):
            on_step({name: values[k] for name, values in history.params.items()})
    return history


def both(
    first: Callable[[History], None], then: Callable[[History], None] | None
) -> Callable[[History], None]:
    """One per-epoch hook that calls `first`, then `then` (the caller's) when given."""

    def hook(history: History) -> None:
        first(history)
        if then is not None:
            then(history)

    return hook


def each_step(
    on_step: Callable[[dict[str, float]], None] | None,
    record: Callable[[], dict[str, float]] | None,
) -> Callable[[], None] | None:
    """The loop's per-step hook: the recorded parameters handed to `on_step`."""
    if on_step is None or record is None:
        return None
    return lambda: on_step(record())
