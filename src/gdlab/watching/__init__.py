"""Watching a user's own PyTorch training loop: `gdlab.watch(model, optimizer)`.

`watching.folder` (a run folder read back, for `gdlab plot` and `gdlab report`) imports
without torch; the watcher itself is loaded on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Watcher", "watch"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from gdlab.watching import watcher

        return getattr(watcher, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
