"""The baselines' memories, matched to the paper's: ``mem_per_class``
exemplars for every class seen so far.

Avalanche's storage policies split one fixed ``max_size`` among the
classes they hold, so each class's share shrinks as classes arrive.
:class:`GrowingMemoryBudget` grows that ``max_size`` with the classes
instead (:class:`_BudgetFirstBuffer` for ER-ACE, which updates its buffer
before any plugin runs); A-GEM, which keeps a fixed number of samples per
experience, keeps ``mem_per_class`` of every class of the experience
instead (:class:`_ClassBalancedAGEMPlugin`). :data:`MEMORY_MATCHING` says,
per baseline, how its memory was matched, and :func:`exemplars_per_class`
counts what a baseline stores.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict

import torch
from avalanche.benchmarks.utils import AvalancheDataset
from avalanche.benchmarks.utils.data_loader import GroupBalancedInfiniteDataLoader
from avalanche.benchmarks.utils.utils import concat_datasets
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import (
    AGEMPlugin,
    BiCPlugin,
    GDumbPlugin,
    ReplayPlugin,
)
from avalanche.training.storage_policy import BalancedExemplarsBuffer, ExemplarsBuffer
from avalanche.training.supervised import DER, ER_ACE
from avalanche.training.supervised.icarl import _ICaRLPlugin
from avalanche.training.templates import SupervisedTemplate

from .._checks import check_positive_int
from ..models.cosine import experience_classes
from .fixes import _AGEMPlugin, _ClassBalancedBuffer

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
    "er_ace": (
        "ER_ACE's ClassBalancedBuffer (random selection), which ER_ACE updates "
        "with the experience's data at its start, with max_size set by "
        "GrowingMemoryBudget just before that update to mem_per_class x the "
        "classes seen including the current experience: every seen class keeps "
        "mem_per_class exemplars, and the memory batches of experience t > 0 "
        "draw from the current classes' exemplars too (Avalanche's offline "
        "ER-ACE)."
    ),
    "agem": (
        "A-GEM's episodic memory, one part per experience, filled at the "
        "experience's end with mem_per_class random samples of each of its "
        "classes (Avalanche's AGEMPlugin takes patterns_per_experience random "
        "samples regardless of class): mem_per_class exemplars for every seen "
        "class. Each step's reference gradient is computed on sample_size "
        "samples drawn uniformly, without replacement, from the whole memory "
        "(the A-GEM paper's sampling; Avalanche draws an equal share from each "
        "experience, in a fixed order)."
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
        self.grow(strategy)

    def grow(self, strategy: SupervisedTemplate) -> None:
        """Add the classes of ``strategy``'s experience to those seen and set
        the buffer's ``max_size`` to :attr:`max_size` (again for the same
        experience: no change)."""
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


class _BudgetFirstBuffer(_ClassBalancedBuffer):
    """ER-ACE's class-balanced random buffer, which grows its budget itself
    just before each update.

    ``ER_ACE._before_training_exp`` (``avalanche/training/supervised/er_ace.py``)
    updates its storage policy with the experience's data first, before
    the template triggers any plugin (``before_train_dataset_adaptation``,
    where :class:`GrowingMemoryBudget` grows a buffer, comes after): sized
    there, the buffer would be split among the new classes on the budget
    of the old ones alone. So ER-ACE's :class:`GrowingMemoryBudget` is not
    a plugin; this buffer calls its :meth:`~GrowingMemoryBudget.grow`.

    :param mem_per_class: exemplars kept per seen class.
    """

    def __init__(self, mem_per_class: int) -> None:
        super().__init__(max_size=0, adaptive_size=True)
        self.budget = GrowingMemoryBudget(mem_per_class, self)

    def update(self, strategy: SupervisedTemplate, **kwargs) -> None:
        self.budget.grow(strategy)
        super().update(strategy, **kwargs)


class _ClassBalancedAGEMPlugin(_AGEMPlugin):
    """A-GEM (:class:`~bdr_avalanche.baselines.fixes._AGEMPlugin`) with a
    class-balanced episodic memory, sampled uniformly.

    At the end of each experience the memory takes ``mem_per_class``
    random samples of every class of the experience (fewer where a class
    has fewer), so every seen class keeps ``mem_per_class`` exemplars, the
    paper's memory; ``AGEMPlugin.update_memory``
    (``avalanche/training/plugins/agem.py``) takes ``patterns_per_experience``
    random samples of the experience, whatever their classes. Each step's
    reference batch is ``sample_size`` samples of the whole memory, drawn
    without replacement and reshuffled at every pass, as in the A-GEM
    paper; Avalanche 0.6 draws ``sample_size // experiences`` from each
    experience's part, in the same order at every pass (its loader does not
    shuffle). ``patterns_per_experience``, which only Avalanche's
    ``update_memory`` reads, is 0.

    :param mem_per_class: exemplars kept per class.
    :param sample_size: memory samples of each step's reference gradient.
    """

    def __init__(self, mem_per_class: int, sample_size: int) -> None:
        super().__init__(patterns_per_experience=0, sample_size=sample_size)
        self.mem_per_class = check_positive_int("mem_per_class", mem_per_class)

    @torch.no_grad()
    def update_memory(
        self, dataset: AvalancheDataset, num_workers: int = 0, **kwargs
    ) -> None:
        """Add ``mem_per_class`` random samples of each class of ``dataset``
        to the memory and draw the reference batches from the whole
        memory."""
        by_class: dict[int, list[int]] = defaultdict(list)
        for index, target in enumerate(dataset.targets):
            by_class[int(target)].append(index)
        kept = [
            indices[i]
            for indices in by_class.values()
            for i in torch.randperm(len(indices))[: self.mem_per_class].tolist()
        ]
        self.buffers.append(dataset.subset(sorted(kept)))
        self.buffer_dataloader = GroupBalancedInfiniteDataLoader(
            [concat_datasets(self.buffers)],
            batch_size=self.sample_size,
            shuffle=True,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
        )
        self.buffer_dliter = iter(self.buffer_dataloader)


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
        if isinstance(plugin, AGEMPlugin):
            for part in plugin.buffers:
                counts.update(_targets(part))
    if isinstance(strategy, (DER, ER_ACE)):
        counts.update(_targets(strategy.storage_policy.buffer))
    return dict(sorted(counts.items()))
