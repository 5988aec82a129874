"""Hyper-parameters declared once: default, help text and allowed range.

A plugin or strategy lists its hyper-parameters as a class attribute
``HPARAMS`` (a mapping from argument name to :class:`HParam`); its
``__init__`` takes the defaults from there and checks its arguments with
:meth:`HParam.check`, :func:`document_hparams` writes the ``:param`` lines
of its docstring from the same mapping, and
:class:`~bdr_avalanche.experiment.config.ExperimentConfig` takes the default, the
help text of ``--help`` and the validation of the matching keys from it.
The texts therefore cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import inspect
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from ._checks import (
    check_fraction,
    check_non_negative,
    check_positive,
    check_positive_int,
)

__all__ = ["KINDS", "HParam", "Kind", "document_hparams", "renamed"]


def _check_non_negative_int(name: str, value: int) -> int:
    return check_positive_int(name, value, minimum=0)


SEED_MAX = 2**32 - 1
"""The largest seed NumPy's ``RandomState`` accepts."""


def _check_seed(name: str, value: int) -> int:
    """Raise ``ValueError`` unless ``value`` is an integer in
    ``[0, SEED_MAX]``, the seeds NumPy's ``RandomState`` accepts."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 0 <= value <= SEED_MAX
    ):
        raise ValueError(f"{name} must be an integer in [0, {SEED_MAX}], got {value!r}")
    return value


def _check_milestones(name: str, value: Sequence[int]) -> list[int]:
    """Raise ``ValueError`` unless ``value`` is a sequence of increasing
    integers ``>= 1``."""
    ok = isinstance(value, Sequence) and not isinstance(value, str)
    if ok:
        ok = all(
            isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in value
        ) and list(value) == sorted(value)
    if not ok:
        raise ValueError(
            f"{name} must be a list of increasing epochs >= 1, got {value!r}"
        )
    return list(value)


class Kind(NamedTuple):
    """A range of values: how error messages state it, and its check."""

    bound: str
    """The range as messages state it, e.g. ``in [0, 1]`` or ``>= 1``."""
    check: Callable[[str, Any], Any]
    """``check(name, value)`` returns the value (converted, e.g. to float)
    or raises ``ValueError`` with a message that contains ``bound``."""


KINDS: dict[str, Kind] = {
    "fraction": Kind("in [0, 1]", check_fraction),
    "positive": Kind("> 0", check_positive),
    "non_negative": Kind(">= 0", check_non_negative),
    "positive_int": Kind(">= 1", check_positive_int),
    "non_negative_int": Kind(">= 0", _check_non_negative_int),
    "milestones": Kind("a list of increasing epochs >= 1", _check_milestones),
    "seed": Kind(f"in [0, {SEED_MAX}]", _check_seed),
}
"""The ranges a hyper-parameter may have, by name."""


@dataclass(frozen=True)
class HParam:
    """One hyper-parameter: its default, its help text and its range.

    :param default: the default value; ``None`` means "derived from
        another value" and is then always allowed.
    :param help: one sentence saying what the value does, used verbatim by
        the docstrings and by ``--help``.
    :param kind: a key of :data:`KINDS`, or ``None`` for no range check.
    """

    default: Any
    help: str
    kind: str | None = None

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is not one of {', '.join(KINDS)}")
        self.check("default", self.default)

    @property
    def bound(self) -> str | None:
        """The allowed range as error messages state it (``None``: any)."""
        return None if self.kind is None else KINDS[self.kind].bound

    def check(self, name: str, value: Any) -> Any:
        """``value``, converted by the kind's check (e.g. an int to a float);
        raise ``ValueError`` naming ``name`` when it is out of range."""
        if self.kind is None or (value is None and self.default is None):
            return value
        return KINDS[self.kind].check(name, value)

    def allows(self, value: Any) -> bool:
        """Whether :meth:`check` accepts ``value``."""
        try:
            self.check("value", value)
        except ValueError:
            return False
        return True

    def doc(self) -> str:
        """The help text with the default and the range, for docstrings."""
        extra = [] if self.default is None else [f"default {self.default!r}"]
        if self.bound is not None:
            extra.append(f"must be {self.bound}")
        return "; ".join([self.help, ", ".join(extra)] if extra else [self.help]) + "."


def renamed(
    hparams: Mapping[str, HParam], names: Mapping[str, str], prefix: str = ""
) -> dict[str, HParam]:
    """Another owner's hyper-parameters under new argument names.

    :param hparams: the owner's mapping (e.g. ``BDRPlugin.HPARAMS``).
    :param names: new name -> the owner's name, e.g.
        ``{"bdr_momentum": "momentum"}``; only these are taken.
    :param prefix: put before each help text, e.g. ``"BDR: "``.
    """
    return {
        new: dataclasses.replace(hparams[old], help=prefix + hparams[old].help)
        for new, old in names.items()
    }


T = TypeVar("T", bound=type)


def document_hparams(cls: T) -> T:
    """Class decorator: add a ``:param name: help`` line for every entry of
    ``cls.HPARAMS`` to the class docstring, before its first ``:param``
    line (or at its end), so that Sphinx and ``help()`` show the texts of
    ``--help``."""
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    params = [_param_line(name, hp) for name, hp in cls.HPARAMS.items()]
    at = next((i for i, line in enumerate(lines) if line.startswith(":param ")), None)
    if at is None:
        lines += ["", *params]
    else:
        lines[at:at] = params
    cls.__doc__ = "\n".join(lines) + "\n"
    return cls


def _param_line(name: str, hp: HParam) -> str:
    """``:param name: ...`` wrapped at 79 columns, never inside the range."""
    nbsp = "\N{NO-BREAK SPACE}"
    text = f":param {name}: {hp.doc()}"
    if hp.bound is not None:
        text = text.replace(hp.bound, hp.bound.replace(" ", nbsp))
    wrapped = textwrap.fill(
        text,
        width=79,
        subsequent_indent="    ",
        break_long_words=False,
        break_on_hyphens=False,
    )
    return wrapped.replace(nbsp, " ")
