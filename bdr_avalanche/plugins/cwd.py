"""Class-wise decorrelation, CwD (Shi et al., CVPR 2022)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from avalanche.training.plugins import SupervisedPlugin
from torch import Tensor

from ..distributed import gather_batch
from ..functional import class_wise_decorrelation_loss
from ..params import CwDParams, document_hparams
from ._adapters import StepRecorder, StrategyAdapter
from ._stream import PhaseTracker
from .compat import check_model, check_strategy

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["CwDPlugin"]


# Avalanche is untyped: mypy checks the keyword against object.__init_subclass__
@document_hparams
class CwDPlugin(SupervisedPlugin, supports_distributed=True):  # type: ignore[call-arg]
    r"""Adds :math:`\eta\,L_{cwd}` to the loss of the *first* training
    experience only: :math:`L_{cwd}` decorrelates the dimensions of the
    penultimate features within each class of the batch (see
    :func:`~bdr_avalanche.functional.class_wise_decorrelation_loss`), which
    spreads the base classes' representation over more directions and makes
    later phases forget less.

    In distributed training the class statistics are those of the global
    batch (the features of all processes are gathered), so the loss equals
    the single-process loss on the whole batch.

    The term only needs the features and labels of the step's samples, so
    it applies to every Avalanche strategy whose step calls
    ``before_backward`` and optimises ``strategy.loss``
    (:mod:`~bdr_avalanche.plugins.compat`). A missing ``feature_layer`` is
    a ``ValueError`` before the first training step.

    In an online stream (``split_online_stream``) the first experience is
    that of the original stream: the term is added during every
    mini-experience cut from it. Without ``access_task_boundaries=True`` a
    mini-experience does not tell its origin, and is refused with
    ``ValueError`` before its first step.

    The hyper-parameters are a :class:`~bdr_avalanche.params.CwDParams`
    (``params``), or its fields as keyword arguments
    (``CwDPlugin(coef=0.3)``); the plugin keeps them as :attr:`params`.

    :param params: the hyper-parameters as one record.
    :param feature_layer: submodule whose output is the feature vector.
    """

    PARAMS: ClassVar[type[CwDParams]] = CwDParams
    """The record of the hyper-parameters (default, help text and range)."""

    def __init__(
        self,
        params: CwDParams | None = None,
        /,
        *,
        feature_layer: str = "backbone",
        **hparams: float,
    ) -> None:
        super().__init__()
        self.params = CwDParams.build(params, **hparams)
        """The hyper-parameters."""
        self.last_loss: Tensor | None = None
        """The last step's weighted CwD term."""
        self._features = StepRecorder(feature_layer)
        self._adapter = StrategyAdapter()
        self._active = False
        self._phases = PhaseTracker(
            "CwDPlugin", "adds its term during the first experience"
        )

    @property
    def active(self) -> bool:
        """Whether the current training experience gets the CwD term."""
        return self._active

    def before_training(self, strategy: SupervisedTemplate, **kwargs):
        """Refuse a model without ``feature_layer`` before any training step."""
        self._adapter = check_strategy("CwDPlugin", strategy)
        check_model("CwDPlugin", strategy.model, self._features.layer_name)

    def before_training_exp(self, strategy: SupervisedTemplate, **kwargs):
        if self._adapter.family is None:  # not started by strategy.train
            self.before_training(strategy)
        self._active = self._phases.update(strategy) == 0
        if self._active:
            self._features.attach(strategy.model)

    def before_forward(self, strategy: SupervisedTemplate, **kwargs):
        self._features.start_step()

    def before_backward(self, strategy: SupervisedTemplate, **kwargs):
        if not self._active:
            return
        features, labels = self._adapter.features_and_labels(strategy, self._features)
        # distributed: the statistics of the global batch, with gradients
        features = gather_batch(features, differentiable=True)
        loss = self.params.coef * class_wise_decorrelation_loss(
            features, gather_batch(labels), self.params.reject_threshold
        )
        self.last_loss = loss.detach()
        strategy.loss += loss

    def after_training_iteration(self, strategy: SupervisedTemplate, **kwargs):
        self._features.end_step()

    def loss_terms(self) -> dict[str, Tensor]:
        """The last step's weighted term (``cwd``) while the term is
        added, for :class:`~bdr_avalanche.plugins.FiniteLossGuard`."""
        if not self._active or self.last_loss is None:
            return {}
        return {"cwd": self.last_loss}

    def after_training_exp(self, strategy: SupervisedTemplate, **kwargs):
        self._active = False
        self._features.detach()
