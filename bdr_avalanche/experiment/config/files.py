"""Config files: YAML read with its inheritance, and merged into a config.

A file holds a mapping of keys; a record's fields are a nested mapping
(``bdr: {m1: 0.6}``) or dotted keys (``bdr.m1: 0.6``). A file may name the
files it extends with ``inherit:`` (relative to itself; its own keys win,
field by field for the records). A file is named by a path or, where no
file has that path, by a preset's name (:mod:`.presets`: ``digits``,
``cifar100/base``). Only a regular file of at most
:data:`MAX_CONFIG_BYTES` is read, and every problem is one
:class:`~.messages.ConfigError` line that names the file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from .messages import ConfigError, _os_problem, _quote, _show, _yaml_problem
from .presets import _hint, find_preset
from .schema import ExperimentConfig, config_keys, flatten, nest, unknown_keys
from .types import type_name

__all__ = ["MAX_CONFIG_BYTES", "load_config", "locate", "read_file"]

MAX_CONFIG_BYTES = 1 << 20
"""The largest config file that is read (1 MiB; a config is a few lines)."""


def load_config(
    files: Iterable[str | Path] = (), overrides: Mapping[str, Any] | None = None
) -> ExperimentConfig:
    """Merge YAML ``files`` (later ones win) and ``overrides`` (dotted keys
    or records' mappings) over the defaults; raise :class:`ConfigError`
    for unknown keys or bad values. Each of ``files`` is a path or, where
    no file has that path, a preset's name (:func:`locate`)."""
    values: dict[Any, Any] = {}
    for file in files:
        values.update(_read_yaml(locate(file)))
    values.update(flatten(overrides or {}))
    unknown = unknown_keys(values, see="see --help")
    if unknown:
        raise ConfigError(unknown)
    values = {k: _float_from_text(k, v) for k, v in values.items()}
    return ExperimentConfig(**nest(values))


def read_file(given: str | Path) -> dict[str, Any]:
    """The keys that the config file ``given`` (a path or a preset's name)
    sets, with those it inherits, records' fields as dotted keys; not
    checked against each other (:func:`load_config` does)."""
    return _read_yaml(locate(given))


def locate(given: str | Path, folder: Path | None = None, by: str = "") -> Path:
    """The config file that ``given`` names: the path ``given`` (relative to
    ``folder``, for ``inherit:``) if something is there, else the preset of
    that name; raise :class:`ConfigError`, with the close preset names,
    where there is neither (``by``: who inherits it, for the message). A
    path that cannot be looked at (a parent without permission, a NUL
    character) is returned as it is, for the reading to name the problem."""
    path = Path(given) if folder is None else folder / given
    try:
        path.lstat()
    except FileNotFoundError:
        preset = find_preset(str(given))
        if preset is not None:
            return preset
        raise ConfigError(
            f"config file {_show(path)}{by} does not exist and is not a preset "
            f"name{_hint(str(given))}"
        ) from None
    except (OSError, ValueError):
        pass
    return path


def _float_from_text(key: str, value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string: for a float key, a
    string that is a number is taken as that number."""
    spec = config_keys().get(key)
    if spec is not None and isinstance(value, str):
        if type_name(spec.hint).startswith("float"):
            try:
                return float(value)
            except ValueError:
                pass
    return value


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The keys of the YAML file ``path`` over those of the files it
    inherits, records' fields as dotted keys; ``seen``: the files that
    inherit it, innermost last."""
    by = f" (inherited by {_show(seen[-1])})" if seen else ""
    try:
        path = path.resolve()
    except (OSError, RuntimeError, ValueError) as err:
        raise ConfigError(
            f"config file {_show(path)}{by} cannot be read: {_os_problem(err)}"
        ) from None
    what = f"config file {_show(path)}{by}"
    if path in seen:
        raise ConfigError(f"config {_show(path)} inherits from itself")
    data = _load_mapping(path, what)
    parents = data.pop("inherit", [])
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError(
            f"{what}: inherit={_quote(parents)} is not allowed; it must be a file "
            "name or a list of file names"
        )
    merged: dict[str, Any] = {}
    for parent in parents:
        inherited_by = f" (inherited by {_show(path)})"
        parent_path = locate(parent, path.parent, inherited_by)
        merged.update(_read_yaml(parent_path, (*seen, path)))
    data = flatten(data)
    unknown = unknown_keys(data, f" in {_show(path)}", "see --help for the keys")
    if unknown:
        raise ConfigError(unknown)
    merged.update(data)
    return merged


def _load_mapping(path: Path, what: str) -> dict[Any, Any]:
    """The mapping that the YAML file ``path`` holds (``{}`` when empty)."""
    try:
        text = _read_text(path, what)
    except FileNotFoundError:
        raise ConfigError(f"{what} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} is a folder, not a YAML file") from None
    except PermissionError:
        raise ConfigError(f"{what} cannot be read: permission denied") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{what} is not a YAML text file: byte {err.start + 1} is not UTF-8"
        ) from None
    except ConfigError:
        raise
    except (OSError, ValueError) as err:
        raise ConfigError(f"{what} cannot be read: {_os_problem(err)}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} is not valid YAML: {_yaml_problem(err)}") from None
    if data is None:  # an empty file, or only comments
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} must hold a mapping of keys to values")
    return data


def _read_text(path: Path, what: str) -> str:
    """The text of the config file ``path`` (``what`` names it): only a
    regular file, of at most :data:`MAX_CONFIG_BYTES`, is read, so that
    ``-c /dev/zero`` or a pipe is refused instead of read without end."""
    mode = path.stat().st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError
    if not stat.S_ISREG(mode):
        raise ConfigError(
            f"{what} is not a regular file (a device, a pipe or a socket); "
            "give a YAML file"
        )
    with path.open("rb") as file:
        data = file.read(MAX_CONFIG_BYTES + 1)
        size = max(os.fstat(file.fileno()).st_size, len(data))
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{what} is larger than 1 MiB ({size:,} bytes); a config file is a "
            "few lines of YAML"
        )
    return data.decode("utf-8")
