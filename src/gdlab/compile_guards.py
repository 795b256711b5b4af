"""torch.compile's guards on the optimizer's bookkeeping, skipped in the command-line process.

`torch.optim.Optimizer` marks `add_param_group`, `state_dict`, `load_state_dict` and
`zero_grad` as never to be compiled; the mark imports `torch._dynamo` the first time one of
them runs, about 1.6 s on a 2-core machine, more than the whole of a small fit. The command
line never compiles anything, so it fills the mark's cache with the method itself (what the
mark computes, minus the guard against tracing) before the first optimizer is made. The Python
API leaves torch as it is: a user's process may compile.

This module imports nothing, so the command line can set `skip` before torch is loaded.
"""

from __future__ import annotations

skip = False  # set by gdlab.cli.app.main
_GUARDED = ("add_param_group", "state_dict", "load_state_dict", "zero_grad")


def apply() -> None:
    """Where `skip` is set: seed the cache of each guarded method (once; harmless if torch
    changes how it marks them: a method without the cache attribute is left alone)."""
    if not skip:
        return
    import torch

    for name in _GUARDED:
        raw = getattr(getattr(torch.optim.Optimizer, name), "__wrapped__", None)
        if raw is not None and getattr(raw, "__dynamo_disable", None) is None:
            raw.__dynamo_disable = raw
