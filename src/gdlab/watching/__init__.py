"""Watching a user's own PyTorch training loop: `gdlab.watch(model, optimizer)`."""

from gdlab.watching.watcher import Watcher, watch

__all__ = ["Watcher", "watch"]
