"""gdlab: train models by gradient descent and see every step.

The package imports torch only when training starts, so `gdlab --help` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gdlab.config import FitOptions
from gdlab.errors import GdlabError, GdlabWarning

if TYPE_CHECKING:
    from gdlab.api import FitResult, fit

__all__ = ["FitOptions", "FitResult", "GdlabError", "GdlabWarning", "fit"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("fit", "FitResult"):
        from gdlab import api

        return getattr(api, name)
    raise AttributeError(f"module 'gdlab' has no attribute {name!r}")
