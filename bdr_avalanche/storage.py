"""Herding exemplar memory: a fixed number of exemplars per class, or a
fixed total shared equally by the classes."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from avalanche.benchmarks.utils import AvalancheDataset
from avalanche.benchmarks.utils.utils import concat_datasets
from avalanche.training.storage_policy import ExemplarsBuffer

from ._utils import FeatureRecorder, check_positive_int
from .distributed import broadcast_object, extract_features
from .functional import herding_select

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["HerdingBuffer"]

logger = logging.getLogger(__name__)


class HerdingBuffer(ExemplarsBuffer):
    """iCaRL herding memory, sized either per class or by a fixed total.

    Give exactly one of the two sizes:

    - ``HerdingBuffer(mem_per_class=20)``, the LUCIR/BDR protocol: every
      class seen so far keeps ``mem_per_class`` exemplars (fewer if it had
      fewer samples), so the memory grows with the classes. ``max_size`` is
      the number of exemplars the memory holds (0 before the first
      experience) and is read-only; :meth:`resize` shrinks the memory.
    - ``HerdingBuffer(max_size=2000)``, a fixed total shared equally by the
      seen classes, like Avalanche's ``ClassBalancedBuffer``: with ``n``
      classes seen, each keeps the first ``max_size // n`` of its herding
      picks, and the ``max_size % n`` classes with the smallest ids one
      more. Herding picks are ordered and a prefix of a herding order is
      itself a herding selection, so when new classes arrive the old ones
      shrink to a prefix of theirs. ``max_size`` is the budget; the memory
      holds less only while a class has fewer samples than its share.
      Setting ``max_size`` changes the budget from the next experience on,
      as for Avalanche's buffers; :meth:`resize` applies it at once.

    After each training experience, the classes of that experience get their
    exemplars from the experience's data: features of the ``feature_layer``
    are extracted with the model in eval mode and the data's *eval*
    transform, L2-normalised, and :func:`~bdr_avalanche.functional.herding_select`
    picks as many as the class's share. Exemplars of classes not in the
    experience are kept (with a fixed total, cut to their new share). The
    stored samples keep the dataset's transform groups, so they are
    augmented like the rest of the training data.

    Mix the memory into the training data with
    :class:`~bdr_avalanche.ConcatReplayPlugin`, or use it with Avalanche's
    replay. Avalanche's ``ReplayPlugin`` (and ``BiCPlugin``, ``RARPlugin``)
    checks with a bare ``assert storage_policy.max_size == mem_size`` when it
    is built, and otherwise leaves the size to the storage policy:

    - fixed total: ``ReplayPlugin(mem_size=200,
      storage_policy=HerdingBuffer(max_size=200))``;
    - per class: ``ReplayPlugin(mem_size=buffer.max_size,
      storage_policy=buffer)``. ``mem_size`` is then only what the memory
      held when the plugin was built (0 if empty); any other value, e.g.
      ``ReplayPlugin(mem_size=200, storage_policy=HerdingBuffer(mem_per_class=20))``,
      fails Avalanche's assert with a bare ``AssertionError``. For a total
      of 200, use ``HerdingBuffer(max_size=200)``.

    :param mem_per_class: exemplars kept for every seen class (the paper:
        20); the memory grows with the classes.
    :param feature_layer: name of the model's submodule whose output is the
        penultimate feature vector.
    :param max_size: the memory's fixed total, shared equally by the seen
        classes (keyword only).
    :raises ValueError: unless exactly one of ``mem_per_class`` and
        ``max_size`` is given, as an integer ``>= 1``.
    """

    def __init__(
        self,
        mem_per_class: int | None = None,
        feature_layer: str = "backbone",
        *,
        max_size: int | None = None,
    ):
        if (mem_per_class is None) == (max_size is None):
            raise ValueError(
                "HerdingBuffer needs exactly one of mem_per_class (exemplars kept "
                "for every seen class: the memory grows with the classes, as in "
                "the paper) and max_size (a fixed total shared equally by the "
                f"seen classes), got mem_per_class={mem_per_class!r} and "
                f"max_size={max_size!r}"
            )
        self.fixed_total = max_size is not None
        """Whether ``max_size`` is a fixed total (else ``mem_per_class``
        exemplars per class)."""
        self.mem_per_class = (
            None
            if mem_per_class is None
            else check_positive_int("mem_per_class", mem_per_class)
        )
        """Exemplars per class (``None`` with a fixed total)."""
        self._budget: int | None = None
        super().__init__(max_size=0 if max_size is None else max_size)
        self.feature_layer = feature_layer
        self.class_indices: dict[int, torch.Tensor] = {}
        """Per class, indices of its exemplars in the experience dataset they
        were picked from, in herding order."""
        self._class_data: dict[int, AvalancheDataset] = {}
        self._source: dict[int, int] = {}

    @property
    def max_size(self) -> int:
        """With a fixed total, the budget; per class, the number of
        exemplars the memory holds (read-only)."""
        if self.fixed_total:
            assert self._budget is not None  # set by ExemplarsBuffer.__init__
            return self._budget
        return len(self._buffer)

    @max_size.setter
    def max_size(self, value: int) -> None:
        if self.fixed_total:
            self._budget = check_positive_int("max_size", value)
        # ExemplarsBuffer.__init__ sets 0 before the (empty) buffer exists
        elif value != len(getattr(self, "_buffer", ())):
            raise AttributeError(
                "this HerdingBuffer keeps mem_per_class exemplars of every class, "
                "so its max_size is the number of exemplars it holds and cannot be "
                "set; shrink it with resize(strategy, new_size), or build "
                "HerdingBuffer(max_size=...) for a fixed total"
            )

    @property
    def seen_classes(self) -> list[int]:
        return sorted(self._class_data)

    def shares(self, classes: Iterable[int]) -> dict[int, int]:
        """Per class of ``classes``, the exemplars it may keep:
        ``mem_per_class``, or its part of the fixed total (``max_size //
        len(classes)``, one more for the ``max_size % len(classes)`` smallest
        class ids)."""
        classes = sorted(set(classes))
        if not self.fixed_total:
            assert self.mem_per_class is not None  # given instead of max_size
            return dict.fromkeys(classes, self.mem_per_class)
        base, extra = divmod(self.max_size, max(len(classes), 1))
        return {c: base + (i < extra) for i, c in enumerate(classes)}

    def post_adapt(self, agent_state: SupervisedTemplate, exp) -> None:
        """Select exemplars for the classes of experience ``exp`` (with a
        fixed total, then cut every class to its share)."""
        data = exp.dataset
        recorder = FeatureRecorder(self.feature_layer)
        features, labels = extract_features(
            recorder,
            agent_state.model,
            data.eval(),
            agent_state.eval_mb_size,
            agent_state.device,
        )
        features = F.normalize(features.float(), dim=1)
        new_classes = torch.unique(labels).tolist()
        shares = self.shares([*self._class_data, *new_classes])
        picked = {}
        for cls in new_classes:
            members = torch.nonzero(labels == cls).flatten()
            picks = members[herding_select(features[members], shares[cls])]
            picked[cls] = picks.cpu()
        # distributed: rank 0's picks, so every process holds the same memory
        for cls, picks in broadcast_object(picked).items():
            self.class_indices[cls] = picks
            self._class_data[cls] = data.subset(picks.tolist())
            self._source[cls] = exp.current_experience
        if self.fixed_total:
            self._keep_prefixes(shares)
        self._rebuild()
        logger.info(
            "herding memory: %d exemplars of %d classes",
            len(self.buffer),
            len(self._class_data),
        )

    def update(self, strategy: SupervisedTemplate, **kwargs) -> None:
        """:meth:`post_adapt` on the strategy's experience: what Avalanche's
        ``ReplayPlugin`` calls after each experience, without the base
        method's deprecation warning (whose decorator also changes the
        process's warning filters)."""
        self.post_adapt(strategy, strategy.experience)

    def resize(self, strategy: SupervisedTemplate, new_size: int) -> None:
        """Shrink to ``new_size`` exemplars in all, keeping each class's first
        picks (a prefix of a herding order is itself a herding selection).

        With a fixed total, ``new_size`` becomes ``max_size`` and is shared
        as in :meth:`shares`; per class, ``mem_per_class`` becomes
        ``new_size // classes``."""
        if self.fixed_total:
            self.max_size = new_size
        else:
            num_classes = max(len(self._class_data), 1)
            self.mem_per_class = check_positive_int(
                "new_size // classes", new_size // num_classes
            )
        self._keep_prefixes(self.shares(self._class_data))
        self._rebuild()

    def state_dict(self) -> dict[str, Any]:
        """The memory as its size (``mem_per_class`` or ``max_size``) and,
        per class, the experience its exemplars come from and their indices
        in it: the samples themselves are not saved, they are taken again
        from the stream by :meth:`load_state_dict`."""
        size = (
            {"max_size": self.max_size}
            if self.fixed_total
            else {"mem_per_class": self.mem_per_class}
        )
        return {
            **size,
            "classes": {
                cls: {
                    "experience": self._source[cls],
                    "indices": self.class_indices[cls],
                }
                for cls in self.seen_classes
            },
        }

    def load_state_dict(self, state: dict[str, Any], stream: Sequence) -> None:
        """Restore a :meth:`state_dict`, reading the exemplars from ``stream``
        (the training stream the memory was built from). The state must come
        from a memory sized the same way (per class or fixed total)."""
        key = "max_size" if self.fixed_total else "mem_per_class"
        if key not in state:
            other = "mem_per_class" if self.fixed_total else "max_size"
            raise ValueError(
                f"the memory state has {other}={state.get(other)!r}, but this "
                f"HerdingBuffer is sized by {key}: build it as "
                f"HerdingBuffer({other}=...) to load this state"
            )
        if self.fixed_total:
            self.max_size = state["max_size"]
        else:
            self.mem_per_class = check_positive_int(
                "mem_per_class", state["mem_per_class"]
            )
        self.class_indices, self._class_data, self._source = {}, {}, {}
        for cls, entry in state["classes"].items():
            source, indices = int(entry["experience"]), entry["indices"]
            if not 0 <= source < len(stream):
                raise ValueError(
                    f"the memory of class {cls} comes from experience {source}, "
                    f"which the stream ({len(stream)} experiences) does not have"
                )
            data = stream[source].dataset
            if len(indices) and int(indices.max()) >= len(data):
                raise ValueError(
                    f"the memory of class {cls} indexes sample {int(indices.max())} "
                    f"of experience {source}, which has {len(data)}: the data changed"
                )
            self.class_indices[cls] = indices.long().cpu()
            self._class_data[cls] = data.subset(indices.tolist())
            self._source[cls] = source
        self._rebuild()

    def _keep_prefixes(self, shares: dict[int, int]) -> None:
        """Cut every class to the first ``shares[class]`` of its picks."""
        for cls, data in self._class_data.items():
            keep = min(shares[cls], len(data))
            if keep < len(data):
                self._class_data[cls] = data.subset(range(keep))
                self.class_indices[cls] = self.class_indices[cls][:keep]

    def _rebuild(self) -> None:
        self.buffer = concat_datasets([self._class_data[c] for c in self.seen_classes])
