"""How configuration errors speak: one line, with what was given cut short.

Every message of the configuration is one line (the command line prints it
after ``bdr-avalanche: error:``), and quotes what it was given: a value, a
key, a path or a YAML error, each of which may be megabytes long or hold
line breaks. These helpers bound and flatten them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["LISTED_KEYS", "QUOTE_LIMIT", "ConfigError"]


class ConfigError(ValueError):
    """A configuration key has a value that is not allowed."""


QUOTE_LIMIT = 60
"""Characters of a value that an error message quotes (a value, a key, a
file's text can be megabytes long; an error line may not)."""
LISTED_KEYS = 10
"""Unknown keys that an error message names (then: "and N more")."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _cut(text: str) -> str:
    """``text`` for a message: as it is up to :data:`QUOTE_LIMIT`
    characters, else its start, "…" and its length."""
    if len(text) <= QUOTE_LIMIT:
        return text
    return f"{text[:QUOTE_LIMIT]}… ({len(text):,} characters)"


def _quote(value: Any) -> str:
    """``repr(value)`` for a message, cut by :func:`_cut`."""
    return _cut(repr(value))


def _show(path: Path | str) -> str:
    """A path for a message: as it is, or quoted when it holds characters
    (a line break) that would not print on one line."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def _os_problem(err: BaseException) -> str:
    """An ``OSError``'s reason (without the path it repeats), in one line."""
    reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return _one_line(reason)


def _yaml_problem(err: yaml.YAMLError, lines: bool = True) -> str:
    """A YAML error in one line (``str(err)`` quotes the text over several):
    what is wrong and where (``lines``: the line too, else the column)."""
    if isinstance(err, yaml.reader.ReaderError):
        char = err.character
        code = char if isinstance(char, int) else ord(char[:1] or "\0")
        return (
            f"the character #x{code:04x} (at character {err.position + 1}) "
            "is not allowed in YAML"
        )
    if isinstance(err, yaml.MarkedYAMLError):
        parts = [p for p in (err.context, err.problem) if p]
        text = _one_line(": ".join(parts) or type(err).__name__)
        mark = err.problem_mark or err.context_mark
        if mark is not None:
            where = f"line {mark.line + 1}, " if lines else ""
            text += f" ({where}column {mark.column + 1})"
        return text
    return _one_line(str(err)) or type(err).__name__
