"""Command-line text read as a value of its key's type.

An option's value is text (``--epochs 5``, ``--milestones 80,120``,
``--bdr.m1 0.6``); :func:`parse_value` reads it by the type hint of its
key (:func:`~.schema.config_keys`), so that ``5`` is an int for
``epochs`` and text for ``name``. Ranges are checked afterwards, by
:class:`~.schema.ExperimentConfig`.
"""

from __future__ import annotations

import typing
from typing import Any

import yaml

from .messages import ConfigError, _quote, _yaml_problem
from .schema import config_keys, did_you_mean
from .types import is_union, type_name

__all__ = ["parse_value"]

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_NULL = ("null", "none", "")


def parse_value(key: str, text: str) -> Any:
    """Parse a command-line value by the type of ``key`` (a record's field:
    its dotted key, ``bdr.m1``).

    Text keys take the text as it is (``null``, ``~``, ``run #2`` and
    ``a: b`` are text); for a text key that may be null, the empty text
    means null (the default). Numbers are read by ``int`` or ``float``
    (``1e-3``), booleans from true/false, yes/no, on/off, 1/0; keys that
    may be null also take null, none or the empty text. Lists are a YAML
    flow list ``[80, 120]`` or comma-separated ``80,120``, each item read
    by the item type. Raise :class:`ConfigError` (one line) when the text
    is not of the key's type; ranges are checked by :class:`ExperimentConfig`.
    """
    keys = config_keys()
    if key not in keys:
        near = did_you_mean(key)
        hint = f"did you mean {' or '.join(map(repr, near))}?" if near else "see --help"
        raise ConfigError(f"unknown key {_quote(key)}; {hint}")
    return _parse(key, text, keys[key].hint)


def _parse(key: str, text: str, hint: Any) -> Any:
    """``text`` as a value of the type ``hint``, for key ``key``."""
    args = typing.get_args(hint)
    optional = is_union(hint) and type(None) in args
    if optional:
        others = [h for h in args if h is not type(None)]
        hint = others[0] if len(others) == 1 else hint
    if hint is str:
        return None if optional and text == "" else text
    if optional and text.strip().lower() in _NULL:
        return None
    origin = typing.get_origin(hint)
    if origin is list:
        return _parse_list(key, text, typing.get_args(hint)[0])
    if hint is dict or origin is dict:
        return _parse_mapping(key, text)
    try:
        return _parse_scalar(text, hint)
    except ValueError as err:
        null = ", or null, none or an empty value for the default" if optional else ""
        raise ConfigError(f"{key}={_quote(text)} {err}{null}") from None


def _parse_scalar(text: str, hint: Any) -> Any:
    """``text`` as a ``hint`` (str, int, float or bool); ``ValueError``
    with what was expected when it is not one."""
    if hint is str:
        return text
    if hint is bool:
        word = text.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        pairs = ", ".join(f"{t}/{f}" for t, f in zip(_TRUE, _FALSE, strict=True))
        raise ValueError(f"is not a boolean; expected one of {pairs}")
    if hint is int:
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError("is not an integer; expected int") from None
    if hint is float:
        try:
            return float(text.strip())
        except ValueError:
            raise ValueError(
                "is not a number; expected float (e.g. 0.1 or 1e-3)"
            ) from None
    return text  # a type without a parser of its own: checked by the config


def _parse_list(key: str, text: str, item: Any) -> list[Any]:
    """A YAML flow list (``[80, 120]``) or comma-separated items, each
    item read by ``_parse_scalar`` as an ``item`` (text items literally)."""
    form = f"expected a list of {type_name(item)} as [a, b] or a,b"
    body = text.strip()
    if body.startswith("["):
        try:
            node = yaml.compose(body, Loader=yaml.SafeLoader)
        except yaml.YAMLError as err:
            raise ConfigError(
                f"{key}={_quote(text)} is not a list: "
                f"{_yaml_problem(err, lines=False)}; {form}"
            ) from None
        if not isinstance(node, yaml.SequenceNode) or not all(
            isinstance(n, yaml.ScalarNode) for n in node.value
        ):
            raise ConfigError(
                f"{key}={_quote(text)} is not a list of single values; {form}"
            )
        items = [n.value for n in node.value]
    else:
        items = [part.strip() for part in body.split(",")]
        items = [part for part in items if part]
    values = []
    for part in items:
        try:
            values.append(_parse_scalar(part, item))
        except ValueError as err:
            raise ConfigError(
                f"{key}={_quote(text)}: item {_quote(part)} {err}"
            ) from None
    return values


def _parse_mapping(key: str, text: str) -> dict[Any, Any]:
    """A YAML mapping, e.g. ``{a: 1, b: 2}``; ``{}`` for the empty text."""
    try:
        value = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as err:
        raise ConfigError(
            f"{key}={_quote(text)} is not a mapping: " + _yaml_problem(err, lines=False)
        ) from None
    if not isinstance(value, dict):
        raise ConfigError(
            f"{key}={_quote(text)} is not a mapping; expected {{key: value}}"
        )
    return value
