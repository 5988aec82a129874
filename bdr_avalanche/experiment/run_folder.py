"""Results folders: which folders a run may write to, empty or delete.

Two rules keep a run from losing anybody's data:

- **The marker.** A folder that this tool creates gets a marker file
  (:data:`MARKER`, saying whether it holds a run or a comparison) before
  anything else. A folder without the marker is never written into unless
  it is empty, and never emptied or deleted. A run deletes a folder only
  when this process created it or ``--overwrite`` asked for it.
- **The lock.** While a run (or a comparison) works in its folder it holds
  an exclusive ``flock`` on :data:`LOCK` inside it. A second process that
  asks for the same folder fails at once with :class:`FolderInUseError`
  and changes nothing. The operating system releases the lock when the
  process ends, however it ends, so a run killed with SIGKILL does not
  block the next one. :func:`check_not_in_use` asks the same question
  without taking the lock, so that the command line can refuse a folder
  in use before the seconds of importing torch and Avalanche.

A folder that the file system refuses to create or write (a full disk, a
read-only file system, no permission) raises :class:`FolderWriteError`:
the machine failed, not the input.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import stat
from pathlib import Path

from ._atomic import WriteError, write_text

__all__ = [
    "LOCK",
    "MARKER",
    "FolderInUseError",
    "FolderWriteError",
    "RunExistsError",
    "RunFolder",
    "RunFolderError",
    "check_not_in_use",
]

log = logging.getLogger(__name__)

MARKER = ".bdr-avalanche"
"""The marker file of a results folder (JSON: ``{"kind": "run"}`` or
``{"kind": "compare"}``)."""
LOCK = ".lock"
"""The lock file of a results folder (holds the owner's process id)."""
KINDS = ("run", "compare")
_KEEP = (MARKER, LOCK)


class RunFolderError(RuntimeError):
    """A results folder cannot be used (not ours, not a folder, not
    writable); nothing was changed."""


class RunExistsError(RuntimeError):
    """The results folder holds a finished run and overwriting was not asked."""


class FolderInUseError(RunFolderError):
    """Another process holds the folder's lock."""


class FolderWriteError(RunFolderError):
    """The file system refused to create, read or write the folder (full
    disk, read-only file system, permissions); nothing was changed."""


def folder_kind(path: Path) -> str | None:
    """The kind its marker gives ``path`` (``None``: no readable marker)."""
    try:
        kind = json.loads((path / MARKER).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if kind in KINDS else None


class RunFolder:
    """A results folder, locked by this process.

    :meth:`open` creates the folder (with its marker) or checks that an
    existing one carries the marker of the right kind, then takes its lock;
    :meth:`close` releases it. Use it as a context manager.

    :param path: the folder.
    :param kind: ``"run"`` or ``"compare"``.
    """

    def __init__(
        self, path: Path, kind: str, created: bool, claimed: bool, fd: int
    ) -> None:
        self.path = path
        self.kind = kind
        self.created = created
        """Whether this process created the folder (and may delete it)."""
        self.claimed = claimed
        """Whether the folder existed, empty and unmarked, and was claimed."""
        self._fd: int | None = fd
        self._made_parents: list[Path] = []

    # ------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, kind: str) -> RunFolder:
        """Create or claim ``path`` and lock it.

        :raises FolderInUseError: another process holds the lock.
        :raises FolderWriteError: the folder (or its parents) cannot be
            created, read or written.
        :raises RunFolderError: ``path`` or its parent is not a folder, or
            the folder holds files but no marker of ``kind``.
        """
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r} is not one of {', '.join(KINDS)}")
        path = Path(path)
        parent = path.parent
        if parent.exists() and not parent.is_dir():
            raise RunFolderError(f"output_dir {parent} is a file, not a folder")
        missing = [p for p in (parent, *parent.parents) if not p.exists()]
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            _remove_empty(missing)
            raise FolderWriteError(
                f"cannot create output_dir {parent}: {_reason(err)}"
            ) from None
        created = False
        try:
            path.mkdir()
            created = True
        except FileExistsError:
            if not path.is_dir():
                raise RunFolderError(
                    f"{path} is a file, not a results folder"
                ) from None
        except OSError as err:
            _remove_empty(missing)
            raise FolderWriteError(f"cannot create {path}: {_reason(err)}") from None
        if not created:
            _check_ours(path, kind)
        fd = None
        claimed = not created and folder_kind(path) is None
        try:
            fd = _lock(path)
            if created or claimed:
                write_text(path / MARKER, json.dumps({"kind": kind}) + "\n")
        except FolderInUseError:
            raise
        except OSError as err:
            if fd is not None:
                os.close(fd)
            if created:
                shutil.rmtree(path, ignore_errors=True)
                _remove_empty(missing)
            else:  # leave the empty folder as it was
                (path / LOCK).unlink(missing_ok=True)
            raise FolderWriteError(f"cannot write to {path}: {_reason(err)}") from None
        folder = cls(path, kind, created, claimed, fd)
        folder._made_parents = missing
        return folder

    def is_bare(self) -> bool:
        """Whether the folder holds nothing but its marker and lock."""
        return all(entry.name in _KEEP for entry in self.path.iterdir())

    def clear(self) -> None:
        """Delete everything in the folder but its marker and lock."""
        for entry in self.path.iterdir():
            if entry.name in _KEEP:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def discard(self, delete: bool) -> None:
        """Undo the folder: delete it when ``delete`` (allowed when this
        process created it or was asked to overwrite it), else empty it
        down to its marker (an empty folder it was given: back to empty).
        Releases the lock."""
        if delete:
            shutil.rmtree(self.path, ignore_errors=True)
            if self.created:
                _remove_empty(self._made_parents)
        else:
            self.clear()
            if self.claimed:
                for name in _KEEP:
                    (self.path / name).unlink(missing_ok=True)
        self.close()

    def close(self) -> None:
        """Release the lock (the lock file stays)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_ours(path: Path, kind: str) -> None:
    """Raise unless ``path`` carries the marker of ``kind`` or is empty."""
    found = folder_kind(path)
    if found == kind:
        return
    if found is not None:
        raise RunFolderError(
            f"{path} holds a {_KIND_NAMES[found]}, not a {_KIND_NAMES[kind]}; "
            "choose another name or output_dir"
        )
    try:
        empty = not any(path.iterdir())
    except OSError as err:
        raise FolderWriteError(f"cannot read {path}: {_reason(err)}") from None
    if not empty:
        raise RunFolderError(
            f"{path} exists and is not a bdr-avalanche results folder (it has no "
            f"{MARKER} marker); it is left alone: choose another name or output_dir"
        )


_KIND_NAMES = {"run": "run's results", "compare": "comparison's results"}


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) that are still empty: the
    output_dir that a run created and leaves without a result."""
    for folder in folders:
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue  # the one whose creation failed
        except OSError:
            return


def check_not_in_use(path: str | os.PathLike) -> None:
    """Raise :class:`FolderInUseError` if another process holds the lock of
    the results folder ``path``; create, write or take nothing.

    A check, not a claim: :meth:`RunFolder.open` takes the lock later (and
    refuses then if another process took it meanwhile). Its purpose is to
    refuse a folder in use at once, before the command's heavy imports.
    A folder without a lock file, or one that cannot be opened, passes:
    :meth:`RunFolder.open` says what is wrong with it.
    """
    lock = Path(path) / LOCK
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            _try_lock(fd, Path(path))
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _try_lock(fd: int, path: Path) -> None:
    """Take the exclusive lock on ``fd``, the lock file of ``path``; raise
    :class:`FolderInUseError`, naming the holder, if another has it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip()
        raise FolderInUseError(
            f"{path} is in use by another run"
            + (f" (process {owner})" if owner.isdigit() else "")
            + "; wait for it to end, or choose another name or output_dir"
        ) from None


def _lock(path: Path) -> int:
    """Take the exclusive lock of ``path``; return its descriptor."""
    lock = path / LOCK
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _try_lock(fd, path)
        except BaseException:
            os.close(fd)
            raise
        # the lock file may have been deleted (its folder discarded) between
        # open and flock: then the lock is on an orphan, take it again
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
        if not path.is_dir():
            raise RunFolderError(f"{path} was deleted by another process")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _reason(err: OSError) -> str:
    if isinstance(err, WriteError):
        return str(err).rsplit(": ", 1)[-1]
    if err.errno is not None and err.strerror:
        return err.strerror
    return str(err) or errno.errorcode.get(err.errno or 0, type(err).__name__)
