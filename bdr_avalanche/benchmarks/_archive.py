"""Data sets given as a ``.zip`` of one top folder, extracted once to a cache.

Reading tens of thousands of small JPEGs straight out of a zip every epoch
would be slow, so the archive is extracted once, into
``$BDR_AVALANCHE_DATA/<zip stem>/`` or else
``~/.cache/bdr-avalanche/data/<zip stem>/``. Extraction goes to a temporary
folder that is renamed into place only when complete, so an interrupted
extraction is never reused; a stamp of the archive's contents (size and
member CRCs) makes a changed archive be extracted again.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

from ._common import DatasetError, error_reason

__all__ = ["DATA_ENV", "data_cache_dir", "extracted_root"]

logger = logging.getLogger(__name__)

DATA_ENV = "BDR_AVALANCHE_DATA"
"""Environment variable naming the folder archives are extracted into."""

_STAMP = ".bdr-avalanche-source"


def data_cache_dir() -> Path:
    """``$BDR_AVALANCHE_DATA`` if set, else ``~/.cache/bdr-avalanche/data``."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "bdr-avalanche" / "data"


def extracted_root(archive: str | os.PathLike, layout: str) -> Path:
    """The top folder of the zip ``archive``, extracted to the cache if needed.

    ``layout`` describes the expected contents for error messages.
    """
    archive = Path(archive)
    target = data_cache_dir() / archive.stem
    try:
        with zipfile.ZipFile(archive) as zf:
            top = _top_folder(zf, archive, layout)
            stamp = _stamp(archive, zf)
            if _read_stamp(target) == stamp and (target / top).is_dir():
                logger.info("using %s, extracted from %s", target / top, archive)
                return target / top
            _extract(zf, archive, target, stamp)
    except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, OSError) as err:
        # RuntimeError: encrypted members or (NotImplementedError) an unknown
        # compression; OSError EINVAL: a seek to an offset a corrupt header gave
        if isinstance(err, OSError) and err.errno != errno.EINVAL:
            raise DatasetError(
                f"could not extract {archive} into {target}: {error_reason(err)}; "
                f"set {DATA_ENV} to a writable folder with enough space, or "
                "extract the archive yourself and pass its top folder"
            ) from err
        raise DatasetError(
            f"{archive}: not a readable zip file ({error_reason(err)}); it is "
            "truncated or corrupt: expected a zip holding one top folder with "
            f"{layout}"
        ) from err
    return target / top


def _top_folder(zf: zipfile.ZipFile, archive: Path, layout: str) -> str:
    """The single top-level folder of the archive's members."""
    names = [n for n in zf.namelist() if not n.startswith("__MACOSX/")]
    tops = sorted({n.split("/", 1)[0] for n in names})
    if len(tops) != 1 or any("/" not in n for n in names):
        raise DatasetError(
            f"{archive} must hold exactly one top folder with {layout} inside; "
            f"its top-level entries are {tops[:10]}"
        )
    return tops[0]


def _stamp(archive: Path, zf: zipfile.ZipFile) -> str:
    """A fingerprint of the archive: its size and its members' names and CRCs."""
    digest = hashlib.sha256()
    for info in zf.infolist():
        digest.update(f"{info.filename}\0{info.CRC}\0{info.file_size}\n".encode())
    return f"{archive.stat().st_size} {digest.hexdigest()}"


def _read_stamp(target: Path) -> str | None:
    try:
        return (target / _STAMP).read_text().strip()
    except OSError:
        return None


def _extract(zf: zipfile.ZipFile, archive: Path, target: Path, stamp: str) -> None:
    """Extract to a temporary sibling of ``target``, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    logger.info("extracting %s (%d files) into %s", archive, len(zf.infolist()), target)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        zf.extractall(partial)
        (partial / _STAMP).write_text(stamp + "\n")
        if _read_stamp(target) == stamp:  # another process finished first
            return
        if target.exists():
            logger.info("replacing %s: it holds another version of %s", target, archive)
            stale = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
            os.replace(target, stale / target.name)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(partial, target)
        except OSError:
            if _read_stamp(target) != stamp:  # not a concurrent identical extraction
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    logger.info("extracted %s in %.1f s", archive, time.perf_counter() - start)
