"""Type checks of configuration values against their fields' type hints.

A config file may give ``epochs: ten``; the field's hint (``int``) says
what is expected, and :func:`check_type` says so in one line. Only the
hints the config uses are understood: ``str``, ``int``, ``float`` (an
``int`` is a float too), ``bool`` (never an ``int``), ``None``, unions and
``list[...]``.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from .messages import ConfigError, _quote

__all__ = ["check_type", "is_union", "matches", "type_name"]


def check_type(key: str, value: Any, hint: Any) -> None:
    """Raise :class:`ConfigError` unless ``value`` is of the type ``hint``."""
    if not matches(value, hint):
        raise ConfigError(
            f"{key}={_quote(value)} has the wrong type; expected {type_name(hint)}"
        )


def is_union(hint: Any) -> bool:
    """Whether ``hint`` is a union (``int | None``)."""
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the type ``hint``."""
    if is_union(hint):
        return any(matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(matches(v, item) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def type_name(hint: Any) -> str:
    """``hint`` as messages name it: ``int or null``, ``a list of int``."""
    if is_union(hint):
        return " or ".join(type_name(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is list:
        return f"a list of {type_name(typing.get_args(hint)[0])}"
    return hint.__name__
