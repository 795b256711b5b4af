"""gdlab: train models by gradient descent and see every step.

The package imports torch only when training starts, so `gdlab --help` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gdlab.config import FitOptions
from gdlab.errors import GdlabError, GdlabWarning

if TYPE_CHECKING:
    from gdlab.api import fit
    from gdlab.result import FitResult

__all__ = ["FitOptions", "FitResult", "GdlabError", "GdlabWarning", "fit"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "fit":
        from gdlab.api import fit

        return fit
    if name == "FitResult":
        from gdlab.result import FitResult

        return FitResult
    raise AttributeError(f"module 'gdlab' has no attribute {name!r}")
