"""Class ids in order of arrival: the relabelling a class-incremental
strategy whose model numbers classes ``0..K-1`` applies to any stream.

:class:`ClassRelabelling` learns the order (:meth:`~ClassRelabelling.learn`,
one training experience at a time) and gives each experience the ids the
model uses (:meth:`~ClassRelabelling.relabelled`): the experience itself
when its ids are those already, else a :class:`RelabelledExperience`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from avalanche.benchmarks.utils.classification_dataset import (
    _taskaware_classification_subset,
)

from ..models.cosine import experience_classes

__all__ = ["ClassRelabelling", "RelabelledExperience", "RelabelledStream"]

AVALANCHE_PRIVATE = (
    "avalanche.benchmarks.utils.classification_dataset._taskaware_classification_subset",
)
"""The private Avalanche names this module relies on (checked by
``tests/test_avalanche_private.py``)."""


class RelabelledExperience:
    """An experience whose class ids are those a strategy's model uses.

    ``classes_in_this_experience``, ``dataset`` (relabelled when first
    read) and ``origin_stream`` (a :class:`RelabelledStream`) carry the new
    ids; every other attribute (``current_experience``, ``task_labels``,
    ...) is the original experience's, so Avalanche's metrics name it as
    they name the original. With a mapping that changes no id it only adds
    ``classes_in_this_experience`` to an experience that lists none (one of
    ``benchmark_from_datasets``); its dataset is then the original one.

    :param experience: the original experience (also :attr:`original`).
    :param mapping: original class id -> new id, for every class of the
        experience.
    :param relabel: gives an experience of the same stream with the new
        ids (for :attr:`origin_stream`).
    """

    def __init__(
        self,
        experience,
        mapping: Mapping[int, int],
        relabel: Callable[[Any], Any],
    ) -> None:
        self.original = experience
        self.mapping = dict(mapping)
        self.classes_in_this_experience = sorted(
            self.mapping[c] for c in experience_classes(experience)
        )
        self._relabel = relabel
        self._dataset = None

    @property
    def dataset(self):
        if all(old == new for old, new in self.mapping.items()):
            return self.original.dataset
        if self._dataset is None:
            table = [-1] * (max(self.mapping) + 1)
            for old, new in self.mapping.items():
                table[old] = new
            self._dataset = _taskaware_classification_subset(
                self.original.dataset, class_mapping=table
            )
        return self._dataset

    @property
    def origin_stream(self) -> RelabelledStream:
        return RelabelledStream(self.original.origin_stream, self._relabel)

    def __getattr__(self, name: str) -> Any:
        if name == "original":  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.original, name)


class RelabelledStream:
    """A stream whose experiences are relabelled by ``relabel``; its other
    attributes (``name``, ...) are the original stream's."""

    def __init__(self, stream, relabel: Callable[[Any], Any]) -> None:
        self.original = stream
        self._relabel = relabel

    def __len__(self) -> int:
        return len(self.original)

    def __iter__(self):
        return (self._relabel(experience) for experience in self.original)

    def __getitem__(self, index):
        item = self.original[index]
        if isinstance(index, slice):
            return RelabelledStream(item, self._relabel)
        return self._relabel(item)

    def __getattr__(self, name: str) -> Any:
        if name == "original":
            raise AttributeError(name)
        return getattr(self.original, name)


class ClassRelabelling:
    """The classes a strategy has learned, in order of arrival, and the
    relabelling of experiences to those ids.

    :param relabel: what :class:`RelabelledExperience` calls to relabel the
        other experiences of its stream (default: :meth:`relabelled`; a
        strategy passes its own method, so that an override is used).
    """

    def __init__(self, relabel: Callable[[Any], Any] | None = None) -> None:
        self.class_order: list[int] = []
        """The original class id of each learned class, in order of
        arrival: class ``i`` (logit ``i``) is the benchmark's
        ``class_order[i]``."""
        self._index: dict[int, int] = {}
        self._planned: list[int] = []
        self._relabel = self.relabelled if relabel is None else relabel

    def relabelled(self, experience):
        """``experience`` with the ids of :attr:`class_order`: itself when
        these are its ids already and it lists them, else a
        :class:`RelabelledExperience`. A class not learned yet gets the id
        it will have if the training stream is learned in order (else an
        id no learned or planned class has)."""
        ids = experience_classes(experience)
        if not ids:
            return experience
        learned = len(self.class_order)
        future = [c for c in self._planned if c not in self._index]
        planned = {c: learned + i for i, c in enumerate(future)}
        base = learned + len(future)
        free = max(base, ids[-1] + 1)
        mapping = {}
        for c in ids:
            if c in self._index:
                mapping[c] = self._index[c]
            elif c in planned:
                mapping[c] = planned[c]
            elif c >= base:  # above every learned and planned id
                mapping[c] = c
            else:
                mapping[c], free = free, free + 1
        if all(mapping[c] == c for c in ids) and hasattr(
            experience, "classes_in_this_experience"
        ):
            return experience
        return RelabelledExperience(experience, mapping, self._relabel)

    def learn(self, experience) -> None:
        """Give the experience's new classes their ids, in order of arrival;
        refuse an experience (or, at the first one, a stream) that brings
        no new class."""
        if not self._index:
            self._planned = _plan(experience)
        new = [c for c in experience_classes(experience) if c not in self._index]
        if not new:
            raise ValueError(_no_new_class(experience))
        for c in new:
            self._index[c] = len(self.class_order)
            self.class_order.append(c)

    def relearn(self, experiences: Iterable) -> None:
        """Forget the learned classes, then :meth:`learn` ``experiences``."""
        self.class_order, self._index, self._planned = [], {}, []
        for experience in experiences:
            self.learn(experience)


def _plan(experience) -> list[int]:
    """The classes of ``experience``'s stream in order of arrival (new
    classes of each experience sorted); refuses a stream in which an
    experience brings no new class. Empty when the stream does not tell."""
    try:
        stream = list(experience.origin_stream)
    except Exception:  # no stream, or one that cannot be listed
        return []
    order: list[int] = []
    seen: set[int] = set()
    for other in stream:
        try:
            ids = experience_classes(other)
        except ValueError:  # neither listed nor in targets
            return []
        new = sorted(set(ids) - seen)
        if not new:
            raise ValueError(_no_new_class(other))
        order += new
        seen.update(new)
    return order


def _no_new_class(experience) -> str:
    where = f"experience {getattr(experience, 'current_experience', '?')}"
    stream = getattr(getattr(experience, "origin_stream", None), "name", None)
    if stream is not None:
        where += f" of the {stream!r} stream"
    return (
        "LUCIR is class-incremental: every training experience must bring "
        f"classes it has not learned yet, but {where} has only classes "
        f"{experience_classes(experience)}, which come before it."
        f"{_layout_hint(experience)}"
    )


def _layout_hint(experience) -> str:
    """What to change in the benchmark when its experiences reuse ids."""
    try:
        benchmark = experience.benchmark
    except Exception:  # not an NCExperience, or no benchmark set
        return ""
    if getattr(benchmark, "class_ids_from_zero_in_each_exp", False):
        return (
            " The benchmark was built with class_ids_from_zero_in_each_exp=True, "
            "which gives every experience the ids 0..n-1: build it with "
            "class_ids_from_zero_from_first_exp=True instead, or with neither "
            "option (LUCIR relabels class ids in order of arrival)."
        )
    return ""
