"""What a composed method (``replay+bdr``) is made of, and whether it may be.

:mod:`bdr_avalanche.methods` parses a method's name; this module says
which family of strategies its base builds (:data:`FAMILY`), refuses a
plugin the compatibility matrix
(:data:`~bdr_avalanche.plugins.compat.COMPATIBILITY`) refuses for that
family, with the matrix's reason (:func:`check_method`), and builds the
plugins a baseline gets (:func:`baseline_plugins`). Our ``lucir`` base
has CwD and BDR built in (``cwd=``, ``bdr=``).
"""

from __future__ import annotations

from avalanche.core import SupervisedPlugin

from ..methods import PLUGINS, Method, parse_method
from ..plugins import BDRPlugin, CwDPlugin, LUCIRPlugin
from ..plugins.compat import COMPATIBILITY, Family
from .config import ConfigError, ExperimentConfig

__all__ = ["FAMILY", "baseline_plugins", "check_method", "family"]

FAMILY: dict[str, Family] = {
    "lucir": Family.LUCIR,
    "naive": Family.NAIVE,
    "replay": Family.NAIVE_REPLAY,
    "icarl": Family.ICARL,
    "lwf": Family.LWF,
    "bic": Family.BIC,
    "gdumb": Family.GDUMB,
    "der": Family.DER_PP,
    "er_ace": Family.ER_ACE,
    "agem": Family.AGEM,
}
"""Base -> the family of the strategy it builds (``der``: with ``der.beta
> 0``; :func:`family` gives the family of a config's base).
``tests/test_composition.py`` checks each against
:func:`~bdr_avalanche.plugins.compat.identify` of the built strategy."""

_FEATURES = {"icarl": "feature_extractor"}
"""Base -> the submodule of its model whose output is the feature vector,
where it is not ``backbone``."""


def family(cfg: ExperimentConfig) -> Family:
    """The family of the strategy ``cfg``'s base builds with ``cfg``'s
    records (DER with ``der.beta = 0`` is plain DER)."""
    base = parse_method(cfg.method).base
    if base == "der" and cfg.der.beta == 0:
        return Family.DER
    return FAMILY[base]


def check_method(cfg: ExperimentConfig) -> Method:
    """The method of ``cfg``, or :class:`ConfigError` in one line when the
    compatibility matrix refuses one of its plugins for its base (with the
    matrix's reason)."""
    method = parse_method(cfg.method)
    where = family(cfg)
    for plugin in method.plugins:
        support = COMPATIBILITY[where][PLUGINS[plugin]]
        if not support.works:
            raise ConfigError(
                f"method {cfg.method!r}: {PLUGINS[plugin]} does not apply to "
                f"{method.base} ({where.value}): {support.note}"
            )
    return method


def baseline_plugins(cfg: ExperimentConfig) -> list[SupervisedPlugin]:
    """The plugins of ``cfg``'s method that a baseline gets, built from the
    config's records: CwD, BDR, then LUCIR's (whose baseline then has a
    cosine head: :func:`~.factories.build_strategy`)."""
    method = check_method(cfg)
    layer = _FEATURES.get(method.base, "backbone")
    plugins: list[SupervisedPlugin] = []
    if method.has("cwd"):
        plugins.append(CwDPlugin(cfg.cwd, feature_layer=layer))
    if method.has("bdr"):
        plugins.append(BDRPlugin(cfg.bdr, feature_layer=layer))
    if method.has("lucir"):
        plugins.append(
            LUCIRPlugin(cfg.lucir, feature_layer=layer, head_layer="classifier")
        )
    return plugins
