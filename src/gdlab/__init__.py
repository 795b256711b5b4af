"""gdlab: train models by gradient descent and see every step.

The package imports torch only when training starts, so `gdlab --help` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gdlab.config import FitOptions
from gdlab.errors import GdlabError, GdlabWarning

if TYPE_CHECKING:
    from gdlab.estimators import GDClassifier, GDRegressor
    from gdlab.result import FitResult
    from gdlab.training import fit

__all__ = [
    "FitOptions",
    "FitResult",
    "GDClassifier",
    "GDRegressor",
    "GdlabError",
    "GdlabWarning",
    "fit",
    "watch",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "fit":
        from gdlab.training import fit

        return fit
    if name in ("watch", "Watcher"):
        from gdlab import watching

        return getattr(watching, name)
    if name == "FitResult":
        from gdlab.result import FitResult

        return FitResult
    if name in ("GDRegressor", "GDClassifier"):
        try:
            from gdlab import estimators
        except ModuleNotFoundError as error:
            if (error.name or "").split(".")[0] != "sklearn":
                raise
            raise ImportError(
                f"gdlab.{name} needs scikit-learn: pip install 'gdlab[sklearn]'"
            ) from None
        return getattr(estimators, name)
    raise AttributeError(f"module 'gdlab' has no attribute {name!r}")
