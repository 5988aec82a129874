"""Atomic file writes: a results file is either whole or absent.

Every file of a results folder (configuration, tables, figures, weights,
checkpoint) is written to a temporary file beside it, flushed to disk and
renamed over the target. A crash, a signal or a full disk therefore leaves
the previous version or nothing, never a truncated file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["WriteError", "atomic_write", "write_text"]


class WriteError(OSError):
    """A results file could not be written (full disk, read-only file
    system, permissions); the message names the file, on one line."""


@contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "w", **kwargs: Any
) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on leaving the
    block without an error, flush it to disk and rename it to ``path``.

    On any error (or an interrupt) the temporary file is removed and
    ``path`` keeps its previous content. An ``OSError`` is raised again as
    :class:`WriteError` naming ``path``.

    :param mode: ``"w"`` (text) or ``"wb"`` (binary); ``kwargs`` go to
        :func:`open` (e.g. ``newline=""`` for CSV files).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode={mode!r} is not allowed; use 'w' or 'wb'")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, mode, **kwargs) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, WriteError):
            reason = err.strerror or str(err) or type(err).__name__
            error = WriteError(f"cannot write {path}: {reason}")
            error.errno = err.errno
            raise error from err
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path) as file:
        file.write(text)
