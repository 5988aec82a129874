"""Herding exemplar memory with a fixed number of exemplars per class."""

from __future__ import annotations

import logging
from collections.abc import Sequence
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
    """iCaRL herding memory keeping ``mem_per_class`` exemplars of every
    class seen so far (LUCIR/BDR protocol: the memory grows with the classes).

    After each training experience, the classes of that experience get their
    exemplars from the experience's data: features of the ``feature_layer``
    are extracted with the model in eval mode and the data's *eval*
    transform, L2-normalised, and :func:`~bdr_avalanche.functional.herding_select`
    picks ``mem_per_class`` of them (fewer if a class is smaller). Exemplars
    of classes not in the experience are left unchanged. The stored samples
    keep the dataset's transform groups, so they are augmented like the
    rest of the training data.

    ``max_size`` follows the memory: ``mem_per_class`` times the number of
    classes stored. Use with Avalanche's replay as
    ``ReplayPlugin(mem_size=buffer.max_size, storage_policy=buffer)``, or mix
    it into the data with :class:`~bdr_avalanche.ConcatReplayPlugin`.

    :param mem_per_class: exemplars per class (the paper: 20).
    :param feature_layer: name of the model's submodule whose output is the
        penultimate feature vector.
    """

    def __init__(self, mem_per_class: int = 20, feature_layer: str = "backbone"):
        super().__init__(max_size=0)
        self.mem_per_class = check_positive_int("mem_per_class", mem_per_class)
        self.feature_layer = feature_layer
        self.class_indices: dict[int, torch.Tensor] = {}
        """Per class, indices of its exemplars in the experience dataset they
        were picked from, in herding order."""
        self._class_data: dict[int, AvalancheDataset] = {}
        self._source: dict[int, int] = {}

    @property
    def seen_classes(self) -> list[int]:
        return sorted(self._class_data)

    def post_adapt(self, agent_state: SupervisedTemplate, exp) -> None:
        """Select exemplars for the classes of experience ``exp``."""
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
        picked = {}
        for cls in torch.unique(labels).tolist():
            members = torch.nonzero(labels == cls).flatten()
            picks = members[herding_select(features[members], self.mem_per_class)]
            picked[cls] = picks.cpu()
        # distributed: rank 0's picks, so every process holds the same memory
        for cls, picks in broadcast_object(picked).items():
            self.class_indices[cls] = picks
            self._class_data[cls] = data.subset(picks.tolist())
            self._source[cls] = exp.current_experience
        self._rebuild()
        logger.info(
            "herding memory: %d exemplars of %d classes",
            len(self.buffer),
            len(self._class_data),
        )

    def resize(self, strategy: SupervisedTemplate, new_size: int) -> None:
        """Shrink to ``new_size // num_classes`` exemplars per class, keeping
        each class's first picks (a prefix of a herding order is itself a
        herding selection)."""
        num_classes = max(len(self._class_data), 1)
        self.mem_per_class = check_positive_int(
            "new_size // classes", new_size // num_classes
        )
        for cls, data in self._class_data.items():
            keep = min(self.mem_per_class, len(data))
            self._class_data[cls] = data.subset(range(keep))
            self.class_indices[cls] = self.class_indices[cls][:keep]
        self._rebuild()

    def state_dict(self) -> dict[str, Any]:
        """The memory as, per class, the experience its exemplars come from
        and their indices in it: the samples themselves are not saved, they
        are taken again from the stream by :meth:`load_state_dict`."""
        return {
            "mem_per_class": self.mem_per_class,
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
        (the training stream the memory was built from)."""
        self.mem_per_class = check_positive_int("mem_per_class", state["mem_per_class"])
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

    def _rebuild(self) -> None:
        self.buffer = concat_datasets([self._class_data[c] for c in self.seen_classes])
        self.max_size = self.mem_per_class * len(self._class_data)
