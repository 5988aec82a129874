"""LUCIR's cosine classifier, grown by one block of rows per experience."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from avalanche.benchmarks.scenarios import CLExperience
from avalanche.models import DynamicModule
from torch import Tensor, nn

from .adapt import strip_classifier

__all__ = ["CosineIncrementalClassifier", "CosineIncrementalNet", "experience_classes"]


def experience_classes(experience: CLExperience) -> list[int]:
    """The class ids of ``experience``, sorted.

    They are its ``classes_in_this_experience`` when it has them (the
    experiences of ``nc_benchmark``, of ``class_incremental_benchmark``, of
    a stream passed through Avalanche's ``with_classes_timeline``), else the
    distinct labels of its dataset's ``targets`` (the experiences of
    ``benchmark_from_datasets``, which list no classes). Sorted, so that
    models that number classes in order of arrival number the classes of
    one experience the same way whichever of the two gives them.

    :raises ValueError: the experience lists no classes and its dataset has
        no ``targets``.
    """
    classes = getattr(experience, "classes_in_this_experience", None)
    if classes is None:
        try:
            classes = experience.dataset.targets.uniques
        except AttributeError:
            where = getattr(experience, "current_experience", "?")
            raise ValueError(
                f"experience {where} lists no classes (classes_in_this_experience) "
                "and its dataset has no `targets` to read them from: give the "
                "dataset targets, or add the classes to the benchmark with "
                "avalanche.benchmarks.scenarios.supervised.with_classes_timeline"
            ) from None
    return sorted(int(c) for c in classes)


class CosineIncrementalClassifier(DynamicModule):
    r"""Cosine classifier :math:`z_k = \sigma \cos(f(x), w_k)` (Hou et al.,
    2019) that adds one row per new class when it is adapted to a training
    experience, as Avalanche's ``IncrementalClassifier`` adds units.

    The rows of each experience are one parameter block; when
    ``freeze_old`` is set, the blocks of earlier experiences stop receiving
    gradients as soon as a new block is added. One learnable scale
    :math:`\sigma` (initialised to 1) is shared by all classes.

    Any class ids work: the output has one logit per id from 0 to the
    largest id the classifier knows (logit ``c`` is class ``c``'s), and
    the ids it has not trained on get ``mask_value``, so they are never
    predicted (Avalanche's masking). With ``mask_unseen`` (the default, as
    Avalanche's ``IncrementalClassifier``) adapting it to an *evaluation*
    experience makes it know that experience's ids too, so a strategy such
    as ``Naive`` can evaluate on the whole test stream (classes not learned
    yet: accuracy 0); with ``mask_unseen=False`` the output stops at the
    largest trained id. When the trained ids are ``0..K-1`` (ids in order
    of arrival, e.g. ``class_ids_from_zero_from_first_exp=True``) and no
    other id is known the output is exactly the ``K`` cosine logits, rows
    in order. An experience's ids are :func:`experience_classes`: its
    ``classes_in_this_experience``, else its dataset's targets (as in
    ``benchmark_from_datasets``).

    :param in_features: dimension of the features.
    :param freeze_old: freeze the rows of earlier experiences.
    :param mask_unseen: let evaluation experiences extend the output with
        masked logits (see above).
    :param mask_value: the logit of a class not trained on (Avalanche's
        default); far below the cosine logits, which lie in
        :math:`[-|\sigma|, |\sigma|]`.
    """

    def __init__(
        self,
        in_features: int,
        freeze_old: bool = True,
        mask_unseen: bool = True,
        mask_value: float = -1000.0,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.freeze_old = freeze_old
        self.mask_unseen = mask_unseen
        self.mask_value = float(mask_value)
        self.blocks = nn.ParameterList()
        self.sigma = nn.Parameter(torch.ones(()))
        self.classes: list[int] = []
        """The class id of each row, in row order (order of arrival, sorted
        within an experience)."""
        self.num_outputs = 0
        """Width of the output: 1 + the largest class id known."""
        self._in_order = True  # classes == [0, 1, ..., K - 1]
        # row -> output column; not saved: adaptation rebuilds it
        self.register_buffer(
            "_columns", torch.zeros(0, dtype=torch.long), persistent=False
        )

    @property
    def num_classes(self) -> int:
        """Number of classes trained on (rows)."""
        return sum(block.shape[0] for block in self.blocks)

    @property
    def weight(self) -> Tensor:
        """All class weights, ``(K, in_features)``, in row order."""
        return torch.cat(list(self.blocks))

    def adaptation(self, experience: CLExperience) -> None:
        """Add rows for the unseen classes of a training experience; with
        ``mask_unseen``, also make the ids of any experience known."""
        super().adaptation(experience)
        ids = experience_classes(experience)
        if not ids:
            return
        if min(ids) < 0:
            raise ValueError(f"class ids must be >= 0, got {ids}")
        if self.mask_unseen:
            self.num_outputs = max(self.num_outputs, ids[-1] + 1)
        if not self.training:
            return
        known = set(self.classes)
        new_classes = [c for c in ids if c not in known]
        if not new_classes:
            return
        if self.freeze_old:
            for block in self.blocks:
                block.requires_grad_(False)
                block.grad = None
        device = self.sigma.device
        block = torch.empty(len(new_classes), self.in_features, device=device)
        bound = 1.0 / math.sqrt(self.in_features)
        self.blocks.append(nn.Parameter(block.uniform_(-bound, bound)))
        self.classes += new_classes
        self.num_outputs = max(self.num_outputs, max(self.classes) + 1)
        self._columns = torch.tensor(self.classes, dtype=torch.long, device=device)
        self._in_order = self.classes == list(range(len(self.classes)))

    def cosine(self, features: Tensor) -> Tensor:
        """Cosine scores without the scale, ``(N, K)``, in row order."""
        if len(self.blocks) == 0:
            raise RuntimeError(
                "the classifier has no class yet: train on an experience first"
            )
        return F.normalize(features, dim=1) @ F.normalize(self.weight, dim=1).T

    def forward(self, features: Tensor) -> Tensor:
        """``(N, num_outputs)`` logits: ``sigma * cos`` for trained ids,
        ``mask_value`` for the others."""
        if self.num_outputs == 0:
            raise RuntimeError(
                "the classifier has no class yet: adapt it to an experience first"
            )
        if len(self.blocks) == 0:
            return features.new_full((len(features), self.num_outputs), self.mask_value)
        logits = self.sigma * self.cosine(features)
        if self._in_order and self.num_outputs == logits.shape[1]:
            return logits
        out = logits.new_full((len(logits), self.num_outputs), self.mask_value)
        return out.index_copy(1, self._columns, logits)


class CosineIncrementalNet(nn.Module):
    """``head(backbone(x))``; the backbone's output is the feature vector.

    A model for any Avalanche strategy, e.g.
    ``Naive(model=CosineIncrementalNet(backbone), ...)``: Avalanche's model
    adaptation grows the head (see :class:`CosineIncrementalClassifier`),
    and its optimizer update adds the new rows.

    The submodule names ``backbone`` and ``head`` are what the plugins'
    ``feature_layer`` and ``head_layer`` default to.

    :param backbone: maps inputs to ``(N, feature_dim)`` features.
        torchvision's ResNets and Avalanche's ``SlimResNet18`` are accepted
        as they are: their classifier (``fc``, ``linear``) is replaced by
        ``nn.Identity`` (see :func:`~bdr_avalanche.models.strip_classifier`).
        The backbone's last ReLU is kept (LUCIR removes it).
    :param feature_dim: the feature dimension; default: the backbone's
        ``out_dim`` or, for the architectures above, their classifier's
        input size.
    :param freeze_old: see :class:`CosineIncrementalClassifier`.
    :param mask_unseen: see :class:`CosineIncrementalClassifier`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int | None = None,
        freeze_old: bool = True,
        mask_unseen: bool = True,
    ) -> None:
        super().__init__()
        feature_dim = strip_classifier(backbone, feature_dim or None)
        self.backbone = backbone
        self.head = CosineIncrementalClassifier(
            feature_dim, freeze_old=freeze_old, mask_unseen=mask_unseen
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))
