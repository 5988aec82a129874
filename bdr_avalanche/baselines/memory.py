"""The baselines' memories, matched to the paper's: ``mem_per_class``
exemplars for every class seen so far.

Avalanche's storage policies split one fixed ``max_size`` among the
classes they hold, so each class's share shrinks as classes arrive.
:class:`GrowingMemoryBudget` grows that ``max_size`` with the classes
instead; :data:`MEMORY_MATCHING` says, per baseline, how its memory was
matched, and :func:`exemplars_per_class` counts what a baseline stores.
"""

from __future__ import annotations

import logging
from collections import Counter

from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import BiCPlugin, GDumbPlugin, ReplayPlugin
from avalanche.training.storage_policy import BalancedExemplarsBuffer, ExemplarsBuffer
from avalanche.training.supervised import DER
from avalanche.training.supervised.icarl import _ICaRLPlugin
from avalanche.training.templates import SupervisedTemplate

from .._checks import check_positive_int
from ..models.cosine import experience_classes

__all__ = ["MEMORY_MATCHING", "GrowingMemoryBudget", "exemplars_per_class"]

#: The private Avalanche names this module relies on, checked against the
#: installed Avalanche by ``tests/test_avalanche_private.py``
#: (``Class()._name``: an instance attribute). iCaRL's memory is found
#: by its ``_ICaRLPlugin``.
AVALANCHE_PRIVATE = ("avalanche.training.supervised.icarl._ICaRLPlugin",)

logger = logging.getLogger(__name__)

MEMORY_MATCHING: dict[str, str] = {
    "naive": "No memory: plain fine-tuning on each experience's data.",
    "replay": (
        "Naive + ReplayPlugin with a ClassBalancedBuffer (random selection) "
        "whose max_size GrowingMemoryBudget sets to mem_per_class x the classes "
        "seen so far before each update, so every seen class keeps exactly "
        "mem_per_class exemplars (random instead of herding)."
    ),
    "icarl": (
        "ICaRL with fixed_memory=False and memory_size=mem_per_class: herding "
        "keeps mem_per_class exemplars of every seen class, the paper's memory."
    ),
    "lwf": "No memory: LwF distils the previous model on the new data only.",
    "bic": (
        "Every seen class keeps mem_per_class exemplars in all, as in FACIL's "
        "BiC: max(1, round(val_percentage x mem_per_class)) of them (2 of 20) "
        "held out for the bias layer and the rest in a ClassBalancedBuffer "
        "(random selection) for replay, grown by GrowingMemoryBudget."
    ),
    "gdumb": (
        "GDumbPlugin's ClassBalancedBuffer (random selection), which GDumb fills "
        "before training, with max_size set by GrowingMemoryBudget to "
        "mem_per_class x the classes seen including the current experience: the "
        "model is retrained from scratch on mem_per_class samples of every "
        "seen class."
    ),
    "der": (
        "DER's class-balanced buffer with logits (random selection) with max_size "
        "set by GrowingMemoryBudget to mem_per_class x the classes seen so far: "
        "mem_per_class exemplars and their logits for every seen class."
    ),
}
"""Per baseline, how its memory was matched to the paper's
``mem_per_class`` exemplars for every seen class (or that it uses none)."""


class GrowingMemoryBudget(SupervisedPlugin):
    """Gives a class-balanced buffer ``mem_per_class`` exemplars for every
    class seen so far, like the paper's memory, which grows with the classes.

    Avalanche's class-balanced buffers split one total ``max_size`` equally
    among the classes they hold. Before each training experience's data are
    adapted (that is, before any Avalanche plugin or strategy updates its
    buffer, GDumb's included), this plugin sets that ``max_size`` to
    ``mem_per_class`` times the number of classes seen so far, the current
    experience's included. List it before the plugin that owns the buffer.

    :param mem_per_class: exemplars kept per class.
    :param buffer: the buffer to size; an adaptive
        :class:`~avalanche.training.storage_policy.BalancedExemplarsBuffer`
        (e.g. ``ClassBalancedBuffer``). It may be set later, through the
        ``buffer`` attribute, when the strategy creates its own.
    """

    def __init__(
        self, mem_per_class: int, buffer: ExemplarsBuffer | None = None
    ) -> None:
        super().__init__()
        self.mem_per_class = check_positive_int("mem_per_class", mem_per_class)
        self.buffer = buffer
        self.seen_classes: set[int] = set()

    @property
    def max_size(self) -> int:
        """Capacity for the classes seen so far."""
        return self.mem_per_class * len(self.seen_classes)

    def before_train_dataset_adaptation(
        self, strategy: SupervisedTemplate, **kwargs
    ) -> None:
        buffer = self.buffer
        if buffer is None:
            raise ValueError("GrowingMemoryBudget has no buffer to size: set `buffer`")
        if isinstance(buffer, BalancedExemplarsBuffer) and not buffer.adaptive_size:
            raise ValueError(
                "GrowingMemoryBudget needs a buffer with adaptive_size=True, which "
                "splits its max_size among the classes it holds"
            )
        classes = experience_classes(strategy.experience)
        self.seen_classes.update(int(c) for c in classes)
        buffer.max_size = self.max_size
        logger.debug(
            "memory budget: %d exemplars for %d classes",
            buffer.max_size,
            len(self.seen_classes),
        )


def _targets(dataset) -> list[int]:
    if len(dataset) == 0:
        return []
    return [int(y) for y in dataset.targets]


def exemplars_per_class(strategy: SupervisedTemplate) -> dict[int, int]:
    """Number of exemplars a baseline built by
    :func:`~bdr_avalanche.baselines.make_baseline` stores for each class
    (BiC: replay and validation exemplars together); empty for the
    strategies without memory."""
    counts: Counter[int] = Counter()
    for plugin in strategy.plugins:
        if isinstance(plugin, _ICaRLPlugin):
            for labels in plugin.y_memory:
                counts.update(int(y) for y in labels)
        elif isinstance(plugin, (ReplayPlugin, GDumbPlugin, BiCPlugin)):
            counts.update(_targets(plugin.storage_policy.buffer))
        if isinstance(plugin, BiCPlugin):
            for val_buffer in plugin.val_buffer.values():
                counts.update(_targets(val_buffer.buffer))
    if isinstance(strategy, DER):
        counts.update(_targets(strategy.storage_policy.buffer))
    return dict(sorted(counts.items()))
