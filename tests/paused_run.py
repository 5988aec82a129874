"""A ``bdr-avalanche`` command that stops itself at a known point of training.

Tests that act on a running command (send it a signal, start a second
command beside it, kill it) must know where it is when they act, however
fast or slow the machine. Started by :func:`start`, the command installs an
optimizer-step hook that, at the chosen step, writes a byte into a named
pipe (the marker, made by :func:`make_marker`) and stops the process with
SIGSTOP. :func:`wait_stopped` (a child process) or :func:`wait_for_marker`
(a grandchild, e.g. a ``torchrun`` worker) blocks on that pipe, so it
returns when the byte arrives, not after a guess of how long it takes. The
test then acts and sends SIGCONT or SIGKILL.

Run as a script: ``python paused_run.py AFTER STEPS MARKER ARGS...`` runs
``bdr-avalanche ARGS`` and stops at the ``STEPS``-th optimizer step taken
once the file ``AFTER`` exists (``""``: from the start). Under ``torchrun``
only rank 0 stops (the others then wait for it in their next collective).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["SCRIPT", "make_marker", "start", "wait_for_marker", "wait_stopped"]

SCRIPT = str(Path(__file__).resolve())
LIMIT_S = 900
"""How long to wait for the command to reach its stop: a bound for a
broken run, never reached by a working one."""


def make_marker(marker: Path) -> None:
    """Create the named pipe the command writes to when it stops."""
    os.mkfifo(marker)


def start(
    args: list[str],
    marker: Path,
    after: Path | None = None,
    steps: int = 1,
    **popen,
) -> subprocess.Popen:
    """Start ``bdr-avalanche args`` to stop at the ``steps``-th optimizer
    step taken once ``after`` exists (see the module's docstring)."""
    make_marker(marker)
    command = [sys.executable, SCRIPT, str(after or ""), str(steps), str(marker)]
    return subprocess.Popen([*command, *args], **popen)


def wait_for_marker(marker: Path, process: subprocess.Popen) -> None:
    """Return once a process under ``process`` has written ``marker`` (it
    reached its stop); fail the test if ``process`` ends first."""
    deadline = time.monotonic() + LIMIT_S
    fd = os.open(marker, os.O_RDONLY | os.O_NONBLOCK)
    try:
        # select wakes on the byte; its timeout only lets us notice an end
        while not select.select([fd], [], [], 1.0)[0]:
            assert process.poll() is None, "the command ended before its stop"
            assert time.monotonic() < deadline, "timed out waiting for the stop"
        assert os.read(fd, 1) == b"1", "the command ended before its stop"
    finally:
        os.close(fd)


def wait_stopped(process: subprocess.Popen, stderr: Path | None = None) -> None:
    """Return once ``process`` (a child of this one) has stopped itself;
    fail the test, with the end of ``stderr``, if it ended instead."""
    try:
        wait_for_marker(Path(process.args[4]), process)  # the MARKER argument
    except AssertionError:
        text = stderr.read_text()[-3000:] if stderr is not None else ""
        raise AssertionError(f"{sys.exc_info()[1]}:\n{text}") from None
    # it wrote the byte and is stopping itself: block until it has
    _, status = os.waitpid(process.pid, os.WUNTRACED)
    if not os.WIFSTOPPED(status):  # it ended, and waitpid has reaped it
        process.returncode = os.waitstatus_to_exitcode(status)
        raise AssertionError(f"the command ended ({process.returncode}) first")


def _main() -> int:
    after, steps, marker = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from bdr_avalanche.experiment.cli import main

    seen = [0]

    def pause(optimizer, args, kwargs) -> None:
        if after and not os.path.exists(after):
            return
        seen[0] += 1
        if seen[0] == steps:
            with open(marker, "wb") as pipe:  # blocks until the test reads
                pipe.write(b"1")
            os.kill(os.getpid(), signal.SIGSTOP)

    if os.environ.get("RANK", "0") == "0":
        register_optimizer_step_post_hook(pause)
    return main(sys.argv[4:])


if __name__ == "__main__":
    sys.exit(_main())
