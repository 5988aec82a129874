"""Avalanche's built-in class-incremental strategies as baselines for LUCIR.

:func:`make_baseline` builds Naive, Replay, iCaRL, LwF, BiC, GDumb, DER,
ER-ACE or A-GEM (Avalanche 0.6) on one of our backbones so that it can be compared with
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
from ..params import Params, TrainingParams
from ..training.speed import Speed
from .memory import MEMORY_MATCHING, GrowingMemoryBudget, exemplars_per_class
from .registry import COSINE_HEAD, REGISTRY, Baseline, Schedule, Setup

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
"""Per baseline, its hyper-parameters and their defaults (the fields of
its record, :attr:`Baseline.record <bdr_avalanche.baselines.registry.Baseline.record>`);
override them with :func:`make_baseline`'s ``hparams``."""


def make_baseline(
    name: str,
    *,
    backbone: nn.Module,
    num_classes: int,
    training: TrainingParams | None = None,
    device: str | torch.device | None = None,
    evaluator: EvaluationPlugin | None = None,
    plugins: Sequence[BasePlugin] = (),
    hparams: Params | Mapping[str, Any] | None = None,
    speed: Speed | None = None,
    cosine_head: bool = False,
) -> SupervisedTemplate:
    """One of Avalanche's strategies, set up like :class:`~bdr_avalanche.LUCIR`.

    All baselines train ``backbone`` (its last ReLU kept: ``last_relu`` is
    set to ``True``) with ``SGD(lr, momentum, weight_decay)`` and a
    ``MultiStepLR(milestones, lr_decay)`` stepped per epoch, both reset at
    every experience, for ``epochs`` epochs of ``batch_size`` (``training``).
    Their classifiers, memories and hyper-parameters are documented by
    their factories in :mod:`bdr_avalanche.baselines.registry`.

    :param name: one of :data:`BASELINES`.
    :param backbone: a backbone from :mod:`bdr_avalanche.models`, with ``out_dim``.
    :param num_classes: classes in the whole benchmark (ids ``0..num_classes-1``).
    :param training: the schedule, batch sizes and ``mem_per_class``
        (exemplars kept per seen class, see :data:`MEMORY_MATCHING`);
        default ``TrainingParams()``. ``first_lr`` and ``first_batch_size``
        are LUCIR's only: set, they raise ``ValueError``.
    :param evaluator: Avalanche's default evaluator if ``None``.
    :param plugins: extra plugins, run after the baseline's own.
    :param hparams: the baseline's own hyper-parameters: its record
        (``LwFParams(alpha=2)``) or a mapping of its fields
        (:data:`DEFAULT_HPARAMS`); a bad key or value raises ``ValueError``.
    :param speed: the speed switches, as ``LUCIR`` takes them (the Avalanche
        class with :class:`~bdr_avalanche.training.SpeedMixin`); one the
        baseline cannot take raises ``ValueError`` with the reason.
    :param cosine_head: a growing cosine head (``classifier``), as
        :class:`~bdr_avalanche.LUCIRPlugin` needs; ``ValueError`` for a
        baseline not in :data:`~.registry.COSINE_HEAD`.
    :return: the strategy (train it with e.g. ``protocol.train_and_evaluate``).
    """
    baseline = _baseline(name, backbone)
    own = baseline.check_hparams(hparams)
    training = _training(name, training)
    setup = Setup(
        backbone=backbone,
        num_classes=check_positive_int("num_classes", num_classes, minimum=2),
        mem_per_class=training.mem_per_class,
        schedule=Schedule.of(training),
        strategy_args=_strategy_args(training, device, evaluator),
        extra_plugins=tuple(plugins),
        speed=baseline.check_speed(speed or Speed()),
        cosine_head=_cosine_head(name, cosine_head),
    )
    if hasattr(backbone, "last_relu"):
        backbone.last_relu = True  # type: ignore[assignment]  # torch: Tensor | Module
    setup.speed.compile_backbone(backbone)
    logger.info("baseline %s: %s", name, MEMORY_MATCHING[name])
    return baseline.build(setup, own)


def _strategy_args(
    training: TrainingParams,
    device: str | torch.device | None,
    evaluator: EvaluationPlugin | None,
) -> dict[str, Any]:
    """The Avalanche strategy's own arguments: batch sizes, epochs, the
    device (default: CUDA when available) and the evaluator (default:
    Avalanche's)."""
    return {
        "train_mb_size": training.batch_size,
        "train_epochs": training.epochs,
        "eval_mb_size": training.eval_batch_size,
        "device": device or ("cuda" if torch.cuda.is_available() else "cpu"),
        "evaluator": evaluator if evaluator is not None else default_evaluator(),
    }


def _baseline(name: str, backbone: nn.Module) -> Baseline:
    """The registered baseline ``name``; ``ValueError`` for another name or
    a backbone without ``out_dim``."""
    if name not in REGISTRY:
        raise ValueError(f"unknown baseline {name!r}; choose one of {BASELINES}")
    if not isinstance(backbone, nn.Module) or not hasattr(backbone, "out_dim"):
        raise ValueError(
            "backbone must be an nn.Module with an `out_dim` attribute, the size "
            "of its features (see bdr_avalanche.models)"
        )
    return REGISTRY[name]


def _cosine_head(name: str, cosine_head: bool) -> bool:
    """``cosine_head``; ``ValueError`` for a baseline whose head is not the
    growing classifier (iCaRL's, DER's)."""
    if cosine_head and name not in COSINE_HEAD:
        raise ValueError(
            f"baseline {name!r} cannot take a cosine head; the baselines with "
            f"a growing head can: {', '.join(sorted(COSINE_HEAD))}"
        )
    return bool(cosine_head)


def _training(name: str, training: TrainingParams | None) -> TrainingParams:
    """``training`` (default ``TrainingParams()``); ``ValueError`` when it
    sets ``first_lr`` or ``first_batch_size``, which a baseline cannot
    honour (it trains every experience alike)."""
    training = TrainingParams() if training is None else training
    if not isinstance(training, TrainingParams):
        raise TypeError(f"training must be a TrainingParams, got {training!r}")
    first = [
        k for k in ("first_lr", "first_batch_size") if getattr(training, k) is not None
    ]
    if first:
        raise ValueError(
            f"baseline {name!r} cannot take {' or '.join(first)} (it trains "
            "every experience with lr and batch_size); leave them None"
        )
    return training
