"""Class-wise decorrelation, CwD (Shi et al., CVPR 2022)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from avalanche.training.plugins import SupervisedPlugin
from torch import Tensor

from .._utils import FeatureRecorder
from ..distributed import gather_batch
from ..functional import class_wise_decorrelation_loss
from ..hparams import HParam, document_hparams

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["CwDPlugin"]


@document_hparams
class CwDPlugin(SupervisedPlugin, supports_distributed=True):
    r"""Adds :math:`\eta\,L_{cwd}` to the loss of the *first* training
    experience only: :math:`L_{cwd}` decorrelates the dimensions of the
    penultimate features within each class of the batch (see
    :func:`~bdr_avalanche.functional.class_wise_decorrelation_loss`), which
    spreads the base classes' representation over more directions and makes
    later phases forget less.

    In distributed training the class statistics are those of the global
    batch (the features of all processes are gathered), so the loss equals
    the single-process loss on the whole batch.

    :param feature_layer: submodule whose output is the feature vector.
    """

    HPARAMS: ClassVar[Mapping[str, HParam]] = {
        "coef": HParam(
            0.5,
            "weight eta of the CwD term, which is added in the first experience only",
            "non_negative",
        ),
        "reject_threshold": HParam(
            1,
            "classes with at most this many samples in a batch are skipped",
            "positive_int",
        ),
    }
    """The hyper-parameters: default, help text and range."""

    def __init__(
        self,
        coef: float = HPARAMS["coef"].default,
        reject_threshold: int = HPARAMS["reject_threshold"].default,
        feature_layer: str = "backbone",
    ) -> None:
        super().__init__()
        hp = self.HPARAMS
        self.coef = hp["coef"].check("coef", coef)
        self.reject_threshold = hp["reject_threshold"].check(
            "reject_threshold", reject_threshold
        )
        self.last_loss: Tensor | None = None
        """The last step's weighted CwD term."""
        self._features = FeatureRecorder(feature_layer)
        self._active = False

    @property
    def active(self) -> bool:
        """Whether the current training experience gets the CwD term."""
        return self._active

    def before_training_exp(self, strategy: SupervisedTemplate, **kwargs):
        self._active = strategy.clock.train_exp_counter == 0
        if self._active:
            self._features.attach(strategy.model)

    def before_backward(self, strategy: SupervisedTemplate, **kwargs):
        if not self._active:
            return
        # distributed: the statistics of the global batch, with gradients
        features = gather_batch(self._features.get(), differentiable=True)
        loss = self.coef * class_wise_decorrelation_loss(
            features, gather_batch(strategy.mb_y), self.reject_threshold
        )
        self.last_loss = loss.detach()
        strategy.loss += loss

    def after_training_exp(self, strategy: SupervisedTemplate, **kwargs):
        self._active = False
        self._features.detach()
