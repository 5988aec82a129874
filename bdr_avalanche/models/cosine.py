"""LUCIR's cosine classifier, grown by one block of rows per experience."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from avalanche.benchmarks.scenarios import CLExperience
from avalanche.models import DynamicModule
from torch import Tensor, nn

__all__ = ["CosineIncrementalClassifier", "CosineIncrementalNet"]


class CosineIncrementalClassifier(DynamicModule):
    r"""Cosine classifier :math:`z_k = \sigma \cos(f(x), w_k)` (Hou et al.,
    2019) that adds one row per new class when it is adapted to a training
    experience.

    The rows of each experience are one parameter block; when
    ``freeze_old`` is set, the blocks of earlier experiences stop receiving
    gradients as soon as a new block is added. One learnable scale
    :math:`\sigma` (initialised to 1) is shared by all classes.

    Class ids must be contiguous and arrive in order (experience ``t`` holds
    ids ``[K_old, K)``), as in benchmarks built with
    ``class_ids_from_zero_from_first_exp=True``.
    """

    def __init__(self, in_features: int, freeze_old: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.freeze_old = freeze_old
        self.blocks = nn.ParameterList()
        self.sigma = nn.Parameter(torch.ones(()))

    @property
    def num_classes(self) -> int:
        return sum(block.shape[0] for block in self.blocks)

    @property
    def weight(self) -> Tensor:
        """All class weights, ``(K, in_features)``."""
        return torch.cat(list(self.blocks))

    def adaptation(self, experience: CLExperience) -> None:
        """Add rows for the experience's unseen classes (training only)."""
        super().adaptation(experience)
        if not self.training:
            return
        classes = sorted(int(c) for c in experience.classes_in_this_experience)
        old = self.num_classes
        new_classes = [c for c in classes if c >= old]
        if not new_classes:
            return
        if new_classes != list(range(old, old + len(new_classes))):
            raise ValueError(
                "CosineIncrementalClassifier needs contiguous class ids in order "
                f"of arrival: it has {old} classes and got {new_classes}. Build the "
                "benchmark with class_ids_from_zero_from_first_exp=True."
            )
        if self.freeze_old:
            for block in self.blocks:
                block.requires_grad_(False)
                block.grad = None
        device = self.sigma.device
        block = torch.empty(len(new_classes), self.in_features, device=device)
        bound = 1.0 / math.sqrt(self.in_features)
        self.blocks.append(nn.Parameter(block.uniform_(-bound, bound)))

    def cosine(self, features: Tensor) -> Tensor:
        """Cosine scores without the scale, ``(N, K)``."""
        if len(self.blocks) == 0:
            raise RuntimeError(
                "the classifier has no class yet: train on an experience first"
            )
        return F.normalize(features, dim=1) @ F.normalize(self.weight, dim=1).T

    def forward(self, features: Tensor) -> Tensor:
        return self.sigma * self.cosine(features)


class CosineIncrementalNet(nn.Module):
    """``head(backbone(x))``; the backbone's output is the feature vector.

    The submodule names ``backbone`` and ``head`` are what the plugins'
    ``feature_layer`` and ``head_layer`` default to.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int | None = None) -> None:
        super().__init__()
        feature_dim = feature_dim or getattr(backbone, "out_dim", None)
        if feature_dim is None:
            raise ValueError(
                "feature_dim is required when the backbone has no `out_dim` attribute"
            )
        self.backbone = backbone
        self.head = CosineIncrementalClassifier(feature_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))
