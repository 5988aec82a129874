"""Atomic file writes: a results file is either whole or absent.

Every file of a results folder (configuration, tables, figures, weights,
checkpoint) and every entry of the base-model cache is written to a
temporary file beside it, flushed to disk and renamed over the target. A
crash, a signal or a full disk therefore leaves the previous version or
nothing, never a truncated file.

Each write has a temporary file of its own, ``.<pid>-<random>.<name>.tmp``
(hidden, and never the name of a results file or of a cache entry): two
processes that write the same file at once (two runs storing one entry of
the shared base-model cache) do not write into one file, the last rename
wins and either version is whole. The writer holds an exclusive ``flock``
on its temporary file until the rename, so a temporary file left behind by
a killed process (SIGKILL cannot be caught) is told apart from one being
written: :func:`remove_stale_temporaries` deletes the former, never the
latter. Where ``fcntl`` is missing (Windows) nothing is locked and stale
temporary files are left alone; they are never read.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]  # the module, or None where missing

__all__ = ["WriteError", "atomic_write", "remove_stale_temporaries", "write_text"]

_TEMPORARY = re.compile(r"\.\d+-[0-9a-f]{8}\..+\.tmp")
"""The names of :func:`atomic_write`'s temporary files."""


class WriteError(OSError):
    """A results file could not be written (full disk, read-only file
    system, permissions); the message names the file, on one line."""


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        named = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new temporary file beside ``path``, open for writing and locked."""
    while True:
        tmp = path.with_name(f".{os.getpid()}-{secrets.token_hex(4)}.{path.name}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        if fcntl is None:
            return fd, tmp
        fcntl.flock(fd, fcntl.LOCK_EX)
        # between the creation and the lock a cleaner may have taken the
        # file for a stale one and removed it: then start with another
        if _same_file(fd, tmp):
            return fd, tmp
        os.close(fd)


@contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "w", **kwargs: Any
) -> Iterator[IO]:
    """Open a temporary file of its own beside ``path`` for writing; on
    leaving the block without an error, flush it to disk and rename it to
    ``path``.

    On any error (or an interrupt) the temporary file is removed and
    ``path`` keeps its previous content. An ``OSError`` is raised again as
    :class:`WriteError` naming ``path``.

    :param mode: ``"w"`` (text) or ``"wb"`` (binary); ``kwargs`` go to
        :func:`open` (e.g. ``newline=""`` for CSV files).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode={mode!r} is not allowed; use 'w' or 'wb'")
    path = Path(path)
    tmp = None
    try:
        fd, tmp = _create_temporary(path)
        try:
            opened = os.fdopen(fd, mode, **kwargs)
        except BaseException:
            os.close(fd)
            raise
        with opened as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
            if fcntl is not None:  # renamed while locked: never taken as stale
                os.replace(tmp, path)
        if fcntl is None:
            os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, WriteError):
            reason = err.strerror or str(err) or type(err).__name__
            error = WriteError(f"cannot write {path}: {reason}")
            error.errno = err.errno
            raise error from err
        raise


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of :func:`atomic_write` in ``folder``
    whose writer is gone (killed while writing); return them.

    A file whose writer is alive is locked by it and left alone. Nothing
    is deleted where ``fcntl`` is missing, and a folder that cannot be
    listed is skipped.
    """
    if fcntl is None:  # pragma: no cover - Windows
        return []
    try:
        names = [name for name in os.listdir(folder) if _TEMPORARY.fullmatch(name)]
    except OSError:
        return []
    removed = []
    for name in names:
        path = Path(folder) / name
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue  # renamed or removed meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _same_file(fd, path):
                path.unlink()
                removed.append(path)
        except OSError:
            continue  # locked: its writer is alive
        finally:
            os.close(fd)
    return removed


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path) as file:
        file.write(text)
