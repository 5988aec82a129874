"""Helpers shared by the metrics of :mod:`bdr_avalanche.metrics`.

Every metric that relates a batch's labels or logits to the classes of
the experiences must use the ids the strategy's model and ``mb_y`` use.
Avalanche hands metrics the *original* experience, whose
``classes_in_this_experience`` are the benchmark's ids, while a strategy
that relabels classes (:meth:`bdr_avalanche.LUCIR.relabelled`: class ``i``
is the ``i``-th class in order of arrival) trains and evaluates in its
own ids; :func:`model_classes` (and :func:`current_model_classes`) asks
the strategy for them, in one place. Also here: the memory of the
classes seen so far (:class:`ExperienceClasses`), the accumulator dtype
for device sums, and access to BDR's plugin and prior.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..models.cosine import experience_classes
from ..plugins.bdr import BDRPlugin

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = [
    "ExperienceClasses",
    "accumulator_dtype",
    "current_experience_id",
    "current_model_classes",
    "current_prior",
    "find_bdr",
    "model_classes",
]


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """The dtype of on-device sums: float64, or float32 on MPS (which has
    no float64)."""
    return torch.float32 if device.type == "mps" else torch.float64


def find_bdr(strategy: SupervisedTemplate) -> BDRPlugin | None:
    """The strategy's :class:`~bdr_avalanche.BDRPlugin`, if it has one."""
    for plugin in strategy.plugins:
        if isinstance(plugin, BDRPlugin):
            return plugin
    return None


def current_prior(
    bdr: BDRPlugin | None, num_logits: int, use: bool = True
) -> Tensor | None:
    """The prior BDR adds to the loss now, padded to ``num_logits``."""
    if not use or bdr is None or bdr.prior is None:
        return None
    return bdr.logit_adjustment(num_logits)


class ExperienceClasses:
    """The classes of the training experiences seen so far, in order of
    arrival (the memory of a class-incremental stream)."""

    def __init__(self) -> None:
        self.experiences: list[tuple[int, list[int]]] = []

    def add(self, experience_id: int, classes: Iterable[int]) -> None:
        self.experiences.append((int(experience_id), sorted(int(c) for c in classes)))

    def seen(self) -> list[int]:
        """Every class seen so far, once, in order of arrival."""
        out: dict[int, None] = {}
        for _, classes in self.experiences:
            out.update(dict.fromkeys(classes))
        return list(out)

    def state_dict(self) -> list[list[Any]]:
        return [[t, list(classes)] for t, classes in self.experiences]

    def load_state_dict(self, state: Sequence[Sequence[Any]]) -> None:
        self.experiences = [(int(t), [int(c) for c in cls]) for t, cls in state]


def current_experience_id(strategy: SupervisedTemplate) -> int:
    """The id of the strategy's current experience."""
    return int(strategy.experience.current_experience)


def current_model_classes(strategy: SupervisedTemplate) -> list[int]:
    """The classes of the strategy's current experience in the ids of its
    model and ``mb_y`` (:func:`model_classes`)."""
    return model_classes(strategy, strategy.experience)


def model_classes(strategy: SupervisedTemplate, experience: Any) -> list[int]:
    """The classes of ``experience`` with the ids the strategy's model and
    ``mb_y`` use. Metrics see the original experience (the evaluator hands
    them ``experience.logging()``), so a strategy that relabels class ids
    (:meth:`bdr_avalanche.LUCIR.relabelled`) is asked for its ids."""
    relabelled = getattr(strategy, "relabelled", None)
    if relabelled is not None:
        experience = relabelled(experience)
    return experience_classes(experience)
