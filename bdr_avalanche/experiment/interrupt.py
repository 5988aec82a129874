"""SIGINT and SIGTERM as an exception that a run can clean up after.

:func:`catch_signals` turns both signals into :class:`Interrupted` (a
``KeyboardInterrupt``, so ``except Exception`` blocks let it through): the
training step in progress is abandoned, ``finally`` blocks flush and close
the logs, and the command line prints one line and exits with
128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as shells do.

Writing a checkpoint or a results file must not be cut in half:
inside :func:`deferred`, a signal is only recorded, and raised when the
block ends.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TypedDict

__all__ = ["SIGNALS", "Interrupted", "catch_signals", "deferred"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _State(TypedDict):
    depth: int  # how many deferred blocks are open
    pending: int | None  # the signal received in them, raised when they end


_state: _State = {"depth": 0, "pending": None}


class Interrupted(KeyboardInterrupt):
    """The process received SIGINT or SIGTERM.

    The runner fills in where the run stopped: ``experience`` (the one in
    progress) and ``resume_from`` (the first experience that running the
    same command again trains).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.experience: int | None = None
        self.resume_from: int | None = None
        self.where = ""

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, the shells' convention."""
        return 128 + self.signum

    def message(self) -> str:
        """The one line the command line prints."""
        if self.experience is None:
            return f"interrupted ({signal.Signals(self.signum).name})"
        return (
            f"interrupted in experience {self.experience}{self.where}; run the same "
            f"command to resume from experience {self.resume_from}"
        )


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state["depth"]:
        _state["pending"] = signum  # raised when the deferred block ends
        return
    raise Interrupted(signum)


@contextmanager
def catch_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted`
    (main thread only; elsewhere the block changes nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def deferred() -> Iterator[None]:
    """A block that a signal does not cut short: under
    :func:`catch_signals`, a signal received inside it raises
    :class:`Interrupted` when the block has finished."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
    pending = _state["pending"]
    if pending is not None and not _state["depth"]:
        _state["pending"] = None
        raise Interrupted(pending)
