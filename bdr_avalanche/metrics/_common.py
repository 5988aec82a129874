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
for device sums, and access to a prior added to the logits (BDR's).

The metrics find that prior by what a plugin offers, the small
:class:`LogitPrior` protocol, not by its class: they do not import the
plugins, and any plugin that adds a log prior to the logits is measured
the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from ..models.cosine import experience_classes

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = [
    "ExperienceClasses",
    "LogitPrior",
    "accumulator_dtype",
    "current_experience_id",
    "current_model_classes",
    "current_prior",
    "find_logit_prior",
    "model_classes",
]


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """The dtype of on-device sums: float64, or float32 on MPS (which has
    no float64)."""
    return torch.float32 if device.type == "mps" else torch.float64


@runtime_checkable
class LogitPrior(Protocol):
    """A plugin that adds a log prior to the logits of the training losses
    (:class:`~bdr_avalanche.BDRPlugin`): what the prior metrics read."""

    prior: Tensor | None
    """The log prior per class now; ``None`` while none is added."""

    def logit_adjustment(self, num_logits: int) -> Tensor:
        """The prior padded to ``num_logits`` units, as the loss adds it."""
        ...


def find_logit_prior(strategy: SupervisedTemplate) -> LogitPrior | None:
    """The strategy's first plugin with a :class:`LogitPrior` (BDR's), if
    it has one."""
    for plugin in strategy.plugins:
        if isinstance(plugin, LogitPrior):
            return plugin
    return None


def current_prior(
    bdr: LogitPrior | None, num_logits: int, use: bool = True
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
