"""Methods as a base strategy plus plugins: ``replay+bdr``, ``lucir+cwd+bdr``.

A method name is a base strategy and any of the plugins joined by ``+``,
in any order: ``der+bdr``, ``bdr+der`` and ``der+cwd+bdr`` name DER++
with BDR, and with CwD too. The bases are our ``lucir`` strategy and
Avalanche's strategies as :func:`~bdr_avalanche.baselines.make_baseline`
builds them; the plugins are :class:`~bdr_avalanche.CwDPlugin` (``cwd``),
:class:`~bdr_avalanche.BDRPlugin` (``bdr``) and
:class:`~bdr_avalanche.LUCIRPlugin` (``lucir``). The names of earlier
versions, ``lucir_cwd`` and ``lucir_cwd_bdr``, are kept as aliases.

Only the syntax is checked here (this module imports neither torch nor
Avalanche, so the command line checks a name before loading them); whether
a plugin applies to a base is the compatibility matrix's word
(:data:`~bdr_avalanche.plugins.compat.COMPATIBILITY`), checked by
:func:`~bdr_avalanche.experiment.composition.check_method` before anything
trains.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "ALIASES",
    "BASELINES",
    "BASES",
    "PLUGINS",
    "Method",
    "MethodError",
    "parse_method",
]

BASELINES: tuple[str, ...] = (
    "naive",
    "replay",
    "icarl",
    "lwf",
    "bic",
    "gdumb",
    "der",
    "er_ace",
    "agem",
)
"""Avalanche's strategies, as :func:`~bdr_avalanche.baselines.make_baseline`
names them."""

BASES: tuple[str, ...] = ("lucir", *BASELINES)
"""The base strategies: our LUCIR, then the baselines."""

PLUGINS: Mapping[str, str] = MappingProxyType(
    {"cwd": "CwDPlugin", "bdr": "BDRPlugin", "lucir": "LUCIRPlugin"}
)
"""Plugin name -> its class (a column of the compatibility matrix), in the
order a method's canonical name lists them."""

ALIASES: Mapping[str, str] = MappingProxyType(
    {"lucir_cwd": "lucir+cwd", "lucir_cwd_bdr": "lucir+cwd+bdr"}
)
"""The names of earlier versions and the methods they are."""


class MethodError(ValueError):
    """A method name that does not parse."""


@dataclass(frozen=True)
class Method:
    """A base strategy and the plugins added to it (in :data:`PLUGINS`
    order)."""

    base: str
    plugins: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The canonical name: the base, then the plugins in order."""
        return "+".join((self.base, *self.plugins))

    @property
    def ours(self) -> bool:
        """Whether the base is our LUCIR strategy."""
        return self.base == "lucir"

    def has(self, plugin: str) -> bool:
        """Whether ``plugin`` (a key of :data:`PLUGINS`) is added."""
        return plugin in self.plugins

    def without(self, plugin: str) -> Method:
        """The same method without ``plugin``."""
        return Method(self.base, tuple(p for p in self.plugins if p != plugin))


def parse_method(text: str) -> Method:
    """The :class:`Method` that ``text`` names.

    :raises MethodError: an unknown part, no base or two, or a plugin given
        twice; the message lists the bases and plugins.
    """
    if not isinstance(text, str):
        raise MethodError(f"a method is a name, not {text!r}")
    parts = [p.strip() for p in ALIASES.get(text, text).split("+")]
    known = (
        f"a method is a base ({', '.join(BASES)}) plus any plugins "
        f"({', '.join(PLUGINS)}) joined by '+', e.g. replay+bdr"
    )
    unknown = [p for p in parts if p not in BASES and p not in PLUGINS]
    if unknown:
        raise MethodError(f"method {text!r}: unknown part {unknown[0]!r}; {known}")
    # 'lucir' names our base, or LUCIR's plugin when a baseline is the base
    bases = [p for p in parts if p in BASELINES]
    if not bases and "lucir" in parts:
        bases = ["lucir"]
        parts.remove("lucir")
    if len(bases) != 1:
        which = "no base" if not bases else f"two bases ({', '.join(bases)})"
        raise MethodError(f"method {text!r} has {which}; {known}")
    plugins = [p for p in parts if p in PLUGINS]
    if bases[0] == "lucir" and "lucir" in plugins:
        raise MethodError(
            f"method {text!r}: the lucir base has LUCIR's losses built in; "
            "drop the second 'lucir'"
        )
    repeated = sorted({p for p in plugins if plugins.count(p) > 1})
    if repeated:
        raise MethodError(f"method {text!r} adds {repeated[0]!r} twice")
    return Method(bases[0], tuple(p for p in PLUGINS if p in plugins))
