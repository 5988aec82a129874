"""A ``bdr-avalanche`` command that stops itself at a known point of training.

Tests that act on a running command (send it a signal, start a second
command beside it, kill it) must know where it is when they act, however
fast or slow the machine. Started by :func:`start`, the command installs an
optimizer-step hook that, at the chosen step, creates a marker file and
stops the process with SIGSTOP; :func:`wait_stopped` (a child process) or
:func:`wait_for_marker` (a grandchild, e.g. a ``torchrun`` worker) returns
once it is there. The test then acts and sends SIGCONT or SIGKILL.

Run as a script: ``python paused_run.py AFTER STEPS MARKER ARGS...`` runs
``bdr-avalanche ARGS`` and stops at the ``STEPS``-th optimizer step taken
once the file ``AFTER`` exists (``""``: from the start). Under ``torchrun``
only rank 0 stops (the others then wait for it in their next collective).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["SCRIPT", "start", "wait_for_marker", "wait_stopped"]

SCRIPT = str(Path(__file__).resolve())
LIMIT_S = 900
"""How long to wait for the command to reach its stop: a bound for a
broken run, never reached by a working one."""


def start(
    args: list[str],
    marker: Path,
    after: Path | None = None,
    steps: int = 1,
    **popen,
) -> subprocess.Popen:
    """Start ``bdr-avalanche args`` to stop at the ``steps``-th optimizer
    step taken once ``after`` exists (see the module's docstring)."""
    command = [sys.executable, SCRIPT, str(after or ""), str(steps), str(marker)]
    return subprocess.Popen([*command, *args], **popen)


def wait_stopped(process: subprocess.Popen, stderr: Path | None = None) -> None:
    """Return once ``process`` (a child of this one) has stopped itself;
    fail the test, with the end of ``stderr``, if it ended instead."""
    deadline = time.monotonic() + LIMIT_S
    while True:
        pid, status = os.waitpid(process.pid, os.WNOHANG | os.WUNTRACED)
        if pid and os.WIFSTOPPED(status):
            return
        if pid:  # it ended, and waitpid has reaped it: tell Popen
            process.returncode = os.waitstatus_to_exitcode(status)
            text = stderr.read_text()[-3000:] if stderr is not None else ""
            raise AssertionError(
                f"the command ended ({process.returncode}) before its stop:\n{text}"
            )
        assert time.monotonic() < deadline, "timed out waiting for the stop"
        time.sleep(0.01)


def wait_for_marker(marker: Path, process: subprocess.Popen) -> None:
    """Return once ``marker`` exists (a process under ``process`` reached
    its stop); fail the test if ``process`` ends first."""
    deadline = time.monotonic() + LIMIT_S
    while not marker.exists():
        assert process.poll() is None, "the command ended before its stop"
        assert time.monotonic() < deadline, "timed out waiting for the stop"
        time.sleep(0.01)


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
            marker.touch()
            os.kill(os.getpid(), signal.SIGSTOP)

    if os.environ.get("RANK", "0") == "0":
        register_optimizer_step_post_hook(pause)
    return main(sys.argv[4:])


if __name__ == "__main__":
    sys.exit(_main())
