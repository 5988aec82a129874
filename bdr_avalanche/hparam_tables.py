"""The hyper-parameter tables of the plugins and of the LUCIR strategy.

Each table is defined here once and is the ``HPARAMS`` of its class
(:class:`~bdr_avalanche.BDRPlugin`, :class:`~bdr_avalanche.CwDPlugin`,
:class:`~bdr_avalanche.LUCIRPlugin`, :class:`~bdr_avalanche.LUCIR`); see
:mod:`bdr_avalanche.hparams`. This module imports neither torch nor
Avalanche, so :mod:`bdr_avalanche.experiment.config`, and with it the command line's
``--help``, reads the tables without importing them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from .hparams import HParam, renamed

__all__ = [
    "BDR_HPARAMS",
    "CWD_HPARAMS",
    "LUCIR_HPARAMS",
    "LUCIR_PLUGIN_HPARAMS",
    "STRATEGY_PLUGINS",
    "PluginHParams",
]

BDR_HPARAMS: dict[str, HParam] = {
    "m1": HParam(
        0.8,
        "weight of the class-frequency term psi against the inverse-scatter "
        "term omega in the prior measured at the start of an experience",
        "fraction",
    ),
    "m2": HParam(
        0.8,
        "weight of the class-frequency term psi against the inverse-scatter "
        "term omega in the per-step estimate of the prior",
        "fraction",
    ),
    "momentum": HParam(
        0.99,
        "momentum with which the prior follows its per-step estimate, "
        "mu in pi <- mu * pi + (1 - mu) * estimate",
        "fraction",
    ),
    "tau": HParam(
        1.0,
        "exponent tau of the psi/omega mixture in the prior: "
        "pi = log(mixture ** tau + 1e-12)",
        "positive",
    ),
}
""":class:`~bdr_avalanche.BDRPlugin`'s hyper-parameters."""

CWD_HPARAMS: dict[str, HParam] = {
    "coef": HParam(
        0.5,
        "weight eta of the CwD term, which is added in the first experience only",
        "non_negative",
    ),
    "reject_threshold": HParam(
        1,
        "classes with at most this many samples in a batch are skipped",
        "positive_int",
    ),
}
""":class:`~bdr_avalanche.CwDPlugin`'s hyper-parameters."""

LUCIR_PLUGIN_HPARAMS: dict[str, HParam] = {
    "lambda_base": HParam(
        5.0,
        "base weight of the less-forget term: experience t > 0 weighs it "
        "lambda = lambda_base * sqrt(K_old / K_new) (the paper: 5 on "
        "CIFAR-100, 10 on ImageNet)",
        "non_negative",
    ),
    "margin": HParam(
        0.5,
        "margin of the ranking loss between an old-class sample's "
        "ground-truth cosine score and its k highest new-class scores",
        "non_negative",
    ),
    "k": HParam(
        2,
        "number of highest-scoring new classes each old-class sample is "
        "ranked against; at most the new classes of an experience",
        "positive_int",
    ),
    "mr_weight": HParam(1.0, "weight of the margin ranking loss", "non_negative"),
}
""":class:`~bdr_avalanche.LUCIRPlugin`'s hyper-parameters."""


class PluginHParams(NamedTuple):
    """How the LUCIR strategy re-exports one plugin's hyper-parameters."""

    prefix: str
    """Put before each of the plugin's help texts, e.g. ``"BDR: "``."""
    hparams: Mapping[str, HParam]
    """The plugin's table (its ``HPARAMS``)."""
    names: dict[str, str]
    """The strategy's argument name -> the plugin's."""


STRATEGY_PLUGINS: dict[str, PluginHParams] = {
    "LUCIRPlugin": PluginHParams(
        "LUCIR: ",
        LUCIR_PLUGIN_HPARAMS,
        {n: n for n in ("lambda_base", "margin", "k", "mr_weight")},
    ),
    "CwDPlugin": PluginHParams(
        "CwD: ",
        CWD_HPARAMS,
        {"cwd_coef": "coef", "reject_threshold": "reject_threshold"},
    ),
    "BDRPlugin": PluginHParams(
        "BDR: ",
        BDR_HPARAMS,
        {"m1": "m1", "m2": "m2", "bdr_momentum": "momentum", "tau": "tau"},
    ),
}
"""Per plugin of the LUCIR strategy (by class name): the prefix of its help
texts, its table and its hyper-parameters under the strategy's argument
names (strategy's name -> plugin's name)."""

LUCIR_HPARAMS: dict[str, HParam] = {
    "lr": HParam(
        0.1,
        "SGD learning rate at the start of each experience (in the first one, "
        "first_lr replaces it when set)",
        "positive",
    ),
    "momentum": HParam(0.9, "SGD momentum", "fraction"),
    "weight_decay": HParam(5e-4, "SGD weight decay", "non_negative"),
    "milestones": HParam(
        (80, 120),
        "epochs at which the learning rate is multiplied by lr_decay (the "
        "schedule restarts with every experience)",
        "milestones",
    ),
    "lr_decay": HParam(
        0.1, "factor of the learning rate at each milestone", "positive"
    ),
    "first_lr": HParam(
        None, "learning rate of the first experience (default: lr)", "positive"
    ),
    "first_train_mb_size": HParam(
        None,
        "training mini-batch size of the first experience (default: the one "
        "of the other experiences)",
        "positive_int",
    ),
    "mem_per_class": HParam(
        20, "exemplars kept for every seen class, chosen by herding", "positive_int"
    ),
    "train_mb_size": HParam(
        128,
        "training mini-batch size (distributed: of all processes together)",
        "positive_int",
    ),
    "train_epochs": HParam(160, "training epochs per experience", "positive_int"),
    "eval_mb_size": HParam(256, "evaluation mini-batch size", "positive_int"),
    **{
        name: hp
        for plugin in STRATEGY_PLUGINS.values()
        for name, hp in renamed(plugin.hparams, plugin.names, plugin.prefix).items()
    },
}
""":class:`~bdr_avalanche.LUCIR`'s hyper-parameters: its own, then those of
its plugins (LUCIR, CwD, BDR) under its argument names."""
