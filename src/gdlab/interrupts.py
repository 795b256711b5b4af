"""Ctrl-C and SIGTERM become a request to stop at the next step, never an exception mid-step.

While an `Interrupts` block is active (main thread only: Python delivers signals there), the
first SIGINT or SIGTERM sets a flag that the training loop polls after every optimisation
step; the run then saves itself and exits with 128 + the signal number. Later signals, which
would otherwise arrive in the middle of that save, are acknowledged and ignored.

Before the loop's first poll (loading, choosing the rate, the curvature: seconds of work with
nothing to save yet) a signal raises KeyboardInterrupt as usual, so that it is answered at
once rather than after that work; every long computation there runs in short native calls.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A signal before training began: nothing to save; the exit code is 128 + `number`."""

    def __init__(self, number: int) -> None:
        super().__init__(signal.Signals(number).name)
        self.number = number


class Interrupts:
    def __init__(self) -> None:
        self.received: int | None = None
        self.armed = False  # set by the first poll: from then on a signal is a request
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for number in HANDLED:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def ignore_from_now(self) -> None:
        """For a process about to exit after a saved interrupt: more Ctrl-C has nothing to stop."""
        for number in self._previous:
            signal.signal(number, signal.SIG_IGN)
        self._previous.clear()

    def requested(self) -> bool:
        self.armed = True
        return self.received is not None

    @property
    def exit_code(self) -> int:
        """The shell's convention: 130 after SIGINT, 143 after SIGTERM."""
        return 128 + int(self.received or signal.SIGINT)

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if not self.armed:
            raise Interrupted(number)
        if self.received is None:
            self.received = number
            message = "stopping after this step; saving the run (the files stay intact)"
        else:
            message = "still saving; please wait, nothing will be lost"
        sys.stderr.write(f"\ngdlab: {signal.Signals(number).name}: {message}\n")
        sys.stderr.flush()
