"""Avalanche's built-in class-incremental strategies as baselines for LUCIR.

:func:`make_baseline` builds Naive, Replay, iCaRL, LwF, BiC, GDumb or DER
(Avalanche 0.6) on one of our backbones so that it can be compared with
:class:`~bdr_avalanche.LUCIR` on the same stream: same backbone, epochs,
SGD schedule (reset at every experience) and, wherever the strategy keeps
one, the paper's memory of ``mem_per_class`` exemplars for *every* seen
class (a budget that grows with the classes; :data:`MEMORY_MATCHING` says
how for each strategy). Evaluation is task-agnostic over the classes seen
so far: every model's argmax at eval time ranges over seen classes only.

- :mod:`.registry`: one factory per baseline, with its hyper-parameters.
- :mod:`.memory`: the memory matched to the paper's.
- :mod:`.fixes`: workarounds of Avalanche 0.6 bugs, to drop on upgrade.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from avalanche.core import BasePlugin
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.plugins.evaluation import default_evaluator
from avalanche.training.templates import SupervisedTemplate
from torch import nn

from .._checks import check_positive_int
from ..strategy import LUCIR
from ..training.speed import Speed
from .memory import MEMORY_MATCHING, GrowingMemoryBudget, exemplars_per_class
from .registry import REGISTRY, Schedule, Setup

__all__ = [
    "BASELINES",
    "DEFAULT_HPARAMS",
    "MEMORY_MATCHING",
    "GrowingMemoryBudget",
    "exemplars_per_class",
    "make_baseline",
]

logger = logging.getLogger(__name__)

BASELINES: tuple[str, ...] = tuple(REGISTRY)
"""Names accepted by :func:`make_baseline`, those of
:data:`~bdr_avalanche.baselines.registry.REGISTRY`."""

DEFAULT_HPARAMS: dict[str, dict[str, Any]] = {
    name: {key: hp.default for key, hp in baseline.hparams.items()}
    for name, baseline in REGISTRY.items()
}
"""Per baseline, its hyper-parameters and their defaults (from its table,
:attr:`Baseline.hparams <bdr_avalanche.baselines.registry.Baseline.hparams>`);
override them with :func:`make_baseline`'s ``hparams``."""

_SHARED = LUCIR.HPARAMS
"""The schedule and memory size are LUCIR's: same defaults and ranges."""


def make_baseline(
    name: str,
    *,
    backbone: nn.Module,
    num_classes: int,
    mem_per_class: int = _SHARED["mem_per_class"].default,
    lr: float = _SHARED["lr"].default,
    momentum: float = _SHARED["momentum"].default,
    weight_decay: float = _SHARED["weight_decay"].default,
    milestones: Sequence[int] = _SHARED["milestones"].default,
    lr_decay: float = _SHARED["lr_decay"].default,
    train_mb_size: int = _SHARED["train_mb_size"].default,
    train_epochs: int = _SHARED["train_epochs"].default,
    eval_mb_size: int = _SHARED["eval_mb_size"].default,
    device: str | torch.device | None = None,
    evaluator: EvaluationPlugin | None = None,
    plugins: Sequence[BasePlugin] = (),
    hparams: Mapping[str, Any] | None = None,
    speed: Speed | None = None,
) -> SupervisedTemplate:
    """One of Avalanche's strategies, set up like :class:`~bdr_avalanche.LUCIR`.

    All baselines train ``backbone`` (its last ReLU kept: ``last_relu`` is
    set to ``True``) with ``SGD(lr, momentum, weight_decay)`` and a
    ``MultiStepLR(milestones, lr_decay)`` stepped per epoch, both reset at
    every experience, for ``train_epochs`` epochs of ``train_mb_size``.
    Their classifiers, memories and hyper-parameters (``hparams``, with
    defaults, ranges and help texts) are documented by their factories in
    :mod:`bdr_avalanche.baselines.registry`:
    :func:`~bdr_avalanche.baselines.registry.naive`,
    :func:`~bdr_avalanche.baselines.registry.replay`,
    :func:`~bdr_avalanche.baselines.registry.icarl`,
    :func:`~bdr_avalanche.baselines.registry.lwf`,
    :func:`~bdr_avalanche.baselines.registry.bic`,
    :func:`~bdr_avalanche.baselines.registry.gdumb` and
    :func:`~bdr_avalanche.baselines.registry.der`.

    :param name: one of :data:`BASELINES`.
    :param backbone: a backbone from :mod:`bdr_avalanche.models` (maps images
        to ``(N, out_dim)`` features; must have ``out_dim``).
    :param num_classes: classes in the whole benchmark (ids ``0..num_classes-1``,
        contiguous in order of arrival).
    :param mem_per_class: exemplars kept per seen class (see
        :data:`MEMORY_MATCHING`).
    :param evaluator: Avalanche's default evaluator if ``None``.
    :param plugins: extra plugins, run after the baseline's own.
    :param hparams: overrides of the baseline's own hyper-parameters (see
        :data:`DEFAULT_HPARAMS`); an unknown key or a value out of range
        raises ``ValueError``.
    :param speed: the speed switches (:class:`~bdr_avalanche.training.Speed`:
        on-device input path, autocast, channels-last, compile), as
        ``LUCIR`` takes them: the strategy is then the Avalanche class with
        :class:`~bdr_avalanche.training.SpeedMixin` (see
        :mod:`~bdr_avalanche.baselines.templates`). A switch the baseline
        cannot take raises ``ValueError`` with the reason (iCaRL, BiC and
        DER: not the fast input path; BiC: not autocast;
        :data:`~bdr_avalanche.training.support.UNSUPPORTED`).
    :return: the strategy; train it one experience at a time and evaluate on
        the seen part of the test stream, e.g. with
        :func:`bdr_avalanche.protocol.train_and_evaluate`.
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown baseline {name!r}; choose one of {BASELINES}")
    if not isinstance(backbone, nn.Module) or not hasattr(backbone, "out_dim"):
        raise ValueError(
            "backbone must be an nn.Module with an `out_dim` attribute, the size "
            "of its features (see bdr_avalanche.models)"
        )
    baseline = REGISTRY[name]
    own_hparams = baseline.check_hparams(hparams)
    speed = baseline.check_speed(speed or Speed())
    setup = Setup(
        backbone=backbone,
        num_classes=check_positive_int("num_classes", num_classes, minimum=2),
        mem_per_class=_SHARED["mem_per_class"].check("mem_per_class", mem_per_class),
        schedule=Schedule(
            lr=_SHARED["lr"].check("lr", lr),
            momentum=_SHARED["momentum"].check("momentum", momentum),
            weight_decay=_SHARED["weight_decay"].check("weight_decay", weight_decay),
            milestones=_SHARED["milestones"].check("milestones", milestones),
            lr_decay=_SHARED["lr_decay"].check("lr_decay", lr_decay),
        ),
        strategy_args={
            "train_mb_size": _SHARED["train_mb_size"].check(
                "train_mb_size", train_mb_size
            ),
            "train_epochs": _SHARED["train_epochs"].check("train_epochs", train_epochs),
            "eval_mb_size": _SHARED["eval_mb_size"].check("eval_mb_size", eval_mb_size),
            "device": device or ("cuda" if torch.cuda.is_available() else "cpu"),
            "evaluator": evaluator if evaluator is not None else default_evaluator(),
        },
        extra_plugins=tuple(plugins),
        speed=speed,
    )
    if hasattr(backbone, "last_relu"):
        backbone.last_relu = True
    speed.compile_backbone(backbone)
    strategy = baseline.factory(setup, **own_hparams)
    logger.info("baseline %s: %s", name, MEMORY_MATCHING[name])
    return strategy
