"""Presets: the YAML config files shipped inside the package, found by name.

A preset is a file of ``bdr_avalanche/presets/``, named by its path there
without ``.yaml``: ``digits``, ``cifar100/b50_5phases_lucir_cwd_bdr``. The
command line's ``-c`` (and a file's ``inherit:``) takes a path or such a
name; ``bdr-avalanche presets`` lists them with their descriptions (the
first line of each file, a ``#`` comment). The folder is found through
:mod:`importlib.resources`, so a wheel installed anywhere finds its own.

The ``base`` presets of a folder (``cifar100/base``) hold the settings
that the others of that folder inherit; they are listed too, since a file
of one's own may inherit them.

Without ``-c``, ``run`` and ``compare`` on the digits dataset (the default
one) read the ``digits`` preset, the demo's schedule
(:data:`DEFAULT_PRESETS`); on another dataset, no file: the defaults,
which are the paper's CIFAR-100 protocol.
"""

from __future__ import annotations

import difflib
import functools
from importlib.resources import files
from pathlib import Path

from .messages import ConfigError, _show

__all__ = [
    "DEFAULT_PRESETS",
    "close_presets",
    "default_files",
    "describe",
    "find_preset",
    "preset_names",
    "preset_path",
    "presets_folder",
]

DEFAULT_PRESETS = {"digits": "digits"}
"""Dataset -> the preset that ``run`` and ``compare`` read for it when no
``-c`` is given: for the embedded digits stream, the demo's schedule (30
epochs, batch 32; CPU minutes) instead of the paper's 160 epochs."""

SUFFIX = ".yaml"

_CLOSE = 0.7
"""How alike (:class:`difflib.SequenceMatcher`'s ratio) a preset's name
must be to a name given to be offered in its place."""

_MATCH_LIMIT = 200
"""Characters of a name beyond which no close match is looked for (a
path given by mistake may be long; matching is quadratic in it)."""


def presets_folder() -> Path:
    """The folder of the presets inside the installed package."""
    folder = files("bdr_avalanche") / "presets"
    if not isinstance(folder, Path):  # a zipped package: no folder to read
        raise ConfigError(
            f"the presets are in {folder}, which is not a folder; install "
            "bdr-avalanche unzipped (pip install) to use them"
        )
    return folder


def preset_names() -> list[str]:
    """Every preset's name, sorted (``base`` presets included)."""
    return list(_names())


@functools.cache
def _names() -> tuple[str, ...]:
    """The presets' names, read from the folder once: the package's files
    do not change while it runs."""
    folder = presets_folder()
    return tuple(
        sorted(
            path.relative_to(folder).with_suffix("").as_posix()
            for path in folder.rglob(f"*{SUFFIX}")
        )
    )


def find_preset(name: str) -> Path | None:
    """The file of the preset ``name`` (with or without ``.yaml``), or
    ``None`` when no preset has that name."""
    name = name.removesuffix(SUFFIX)
    if name not in _names():
        return None
    return presets_folder().joinpath(*name.split("/")).with_suffix(SUFFIX)


def preset_path(name: str) -> Path:
    """The file of the preset ``name`` (with or without ``.yaml``); raise
    :class:`ConfigError`, with the close names, when there is none."""
    path = find_preset(name)
    if path is None:
        raise ConfigError(f"no preset is named {_show(name)}{_hint(name)}")
    return path


def default_files(dataset: str) -> list[Path]:
    """The config files read for ``dataset`` when no ``-c`` is given: its
    preset of :data:`DEFAULT_PRESETS` (the package's file, never one of that
    name in the working folder), or none."""
    name = DEFAULT_PRESETS.get(dataset)
    return [] if name is None else [preset_path(name)]


def describe(name: str) -> str:
    """The one-line description of the preset ``name``: its first line,
    a ``#`` comment (``""`` if it has none)."""
    with preset_path(name).open(encoding="utf-8") as file:
        first = file.readline().strip()
    return first.removeprefix("#").strip() if first.startswith("#") else ""


def close_presets(text: str, n: int = 3) -> list[str]:
    """Up to ``n`` preset names close to ``text``: to the whole of it or,
    unless it names a presets' folder, to its last part, so that
    ``b50_5phases_lucir`` or ``/x/digits.yaml`` finds the presets of that
    name in every folder."""
    name = text.strip().removesuffix(SUFFIX)
    if not name or len(name) > _MATCH_LIMIT:
        return []
    names = _names()
    folder, _, tail = name.rpartition("/")
    by_tail = folder not in {n.rpartition("/")[0] for n in names} - {""}

    def score(candidate: str) -> float:
        whole = difflib.SequenceMatcher(None, name, candidate).ratio()
        end = candidate.rpartition("/")[2]
        part = difflib.SequenceMatcher(None, tail, end).ratio() if by_tail else 0
        return max(whole, part)

    scored = sorted((-score(c), c) for c in names)
    return [c for minus, c in scored[:n] if -minus >= _CLOSE]


def _hint(text: str) -> str:
    """The end of a message about ``text``, which names no preset: the close
    names, and the command that lists them all."""
    near = close_presets(text)
    did = f" (did you mean {' or '.join(map(repr, near))}?)" if near else ""
    return f"{did}; run `bdr-avalanche presets` to list them"
