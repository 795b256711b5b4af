"""The one exception type for mistakes in a user's input or options."""

from __future__ import annotations


class GdlabError(ValueError):
    """A problem with the user's data or options; the message names it and the fix.

    The command line prints the message on one line and exits with status 2, without a traceback.
    """


class GdlabWarning(UserWarning):
    """Training finished but the result deserves attention (conditioning, no convergence, ...)."""
