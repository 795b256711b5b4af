"""The one exception type for mistakes in a user's input or options."""

from __future__ import annotations

from collections.abc import Iterable


class GdlabError(ValueError):
    """A problem with the user's data or options; the message names it and the fix.

    Messages name parameters as Python spells them, in backticks: `batch_size`, and settings
    as `lr=0.4`; the command line shows these as its flags (--batch-size, --lr 0.4), prints
    the message on one line and exits with status 2, without a traceback.
    """


class GdlabWarning(UserWarning):
    """Training finished but the result deserves attention (conditioning, no convergence, ...)."""


def listed(items: Iterable[object], limit: int = 8) -> str:
    """Items for a message, comma-separated; past `limit`, the first few and how many more,
    so that a file of a million columns makes a line, not megabytes."""
    names = [str(item) for item in items]
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[: limit - 2])}, ... and {len(names) - limit + 2} more"


def caller_level() -> int:
    """The `stacklevel` that points a warning at the first frame outside gdlab: the user's
    call, however deep inside the package the warning is raised."""
    import sys

    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("gdlab"):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    return level
