"""Balanced destruction-reconstruction, BDR (Zhou et al., 2023)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from avalanche.benchmarks.utils.utils import concat_datasets
from avalanche.training.plugins import SupervisedPlugin
from avalanche.training.storage_policy import ExemplarsBuffer
from torch import Tensor

from .._utils import FeatureRecorder, check_fraction, check_positive
from ..distributed import extract_features, gather_batch
from ..functional import (
    PRIOR_EPS,
    bdr_log_prior,
    class_statistics,
    update_class_statistics,
)

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["BDRPlugin"]

_STATE = ("prior", "phase_counts", "centres", "scatters")


class BDRPlugin(SupervisedPlugin, supports_distributed=True):
    r"""Adds BDR's per-class prior :math:`\pi` to the logits inside the
    training loss of every experience after the first:
    :math:`L_{task}(z + \pi, y)`. Nothing is added at evaluation.

    With replay, new classes have many more training samples than old ones
    and dominate the gradient (the old classes' knowledge is "destroyed"
    faster than it is "reconstructed"). :math:`\pi` mixes each class's share
    of the training data :math:`\psi` with its normalised inverse feature
    scatter :math:`\omega` (see :func:`~bdr_avalanche.functional.bdr_log_prior`),
    which raises the loss of frequent classes and lowers that of rare ones.

    - At the start of an experience ``t > 0``: :math:`\psi`, class centres
      and scatters are measured over the experience's training data (plus
      ``memory``, when the memory is not already part of it) with the model
      in eval mode and the eval transform; :math:`\pi = \pi(m_1)`.
    - At every step: the running centres and scatters are blended with the
      batch's detached features
      (:func:`~bdr_avalanche.functional.update_class_statistics`) and
      :math:`\pi \leftarrow \mu\,\pi + (1 - \mu)\,\pi(m_2)`.

    In distributed training both statistics are those of all processes'
    data (the phase's features and each step's batch are gathered), so the
    prior is the same on every process and equals the single-process prior
    of the global batch.

    Only logits, labels and the ``feature_layer`` output are used, so the
    plugin works with any Avalanche strategy whose criterion takes
    ``(logits, targets)``, e.g. ``Naive`` with a ``ReplayPlugin``. Logit
    units of classes without training data (a fixed-size head) get the
    prior of an empty class, ``log(1e-12)``.

    :param m1: weight of :math:`\psi` in the prior at the start of a phase.
    :param m2: weight of :math:`\psi` in the per-step estimate.
    :param momentum: :math:`\mu`, how slowly the prior follows the batches.
    :param tau: exponent of the prior.
    :param feature_layer: submodule whose output is the feature vector.
    :param memory: a replay buffer that the strategy batches separately (as
        Avalanche's ``ReplayPlugin`` does); its samples are counted in the
        phase statistics. Leave ``None`` when the memory is concatenated to
        the data (:class:`~bdr_avalanche.LUCIR`, ``ConcatReplayPlugin``).
    """

    def __init__(
        self,
        m1: float = 0.8,
        m2: float = 0.8,
        momentum: float = 0.99,
        tau: float = 1.0,
        feature_layer: str = "backbone",
        memory: ExemplarsBuffer | None = None,
    ) -> None:
        super().__init__()
        self.m1 = check_fraction("m1", m1)
        self.m2 = check_fraction("m2", m2)
        self.momentum = check_fraction("momentum", momentum)
        self.tau = check_positive("tau", tau)
        self.memory = memory
        self.prior: Tensor | None = None
        """``(K,)`` current prior; ``None`` (zero) in the first experience."""
        self.phase_counts: Tensor | None = None
        self.centres: Tensor | None = None
        self.scatters: Tensor | None = None
        self._features = FeatureRecorder(feature_layer)
        self._base_criterion: Callable | None = None

    def before_training_exp(self, strategy: SupervisedTemplate, **kwargs):
        self._wrap_criterion(strategy)
        self.prior = None
        if strategy.clock.train_exp_counter == 0:
            return
        data = strategy.adapted_dataset
        if self.memory is not None and len(self.memory.buffer) > 0:
            data = concat_datasets([data, self.memory.buffer])
        features, labels = extract_features(
            self._features,
            strategy.model,
            data.eval(),
            strategy.eval_mb_size,
            strategy.device,
        )
        num_classes = int(labels.max()) + 1
        self.phase_counts, self.centres, self.scatters = class_statistics(
            features, labels, num_classes
        )
        self.prior = bdr_log_prior(self.phase_counts, self.scatters, self.m1, self.tau)
        self._features.attach(strategy.model)

    def after_forward(self, strategy: SupervisedTemplate, **kwargs):
        if self.prior is None:
            return
        self.centres, self.scatters = update_class_statistics(
            self.phase_counts,
            self.centres,
            self.scatters,
            gather_batch(self._features.get().detach()),
            gather_batch(strategy.mb_y),
        )
        estimate = bdr_log_prior(self.phase_counts, self.scatters, self.m2, self.tau)
        self.prior = torch.lerp(estimate, self.prior, self.momentum)

    def after_training_exp(self, strategy: SupervisedTemplate, **kwargs):
        self._features.detach()
        if self._base_criterion is not None:
            strategy._criterion = self._base_criterion
            self._base_criterion = None

    def state_dict(self) -> dict[str, Tensor | None]:
        """The prior and the phase statistics (they are measured again at
        the start of every experience, so only a checkpoint taken during an
        experience needs them)."""
        return {name: getattr(self, name) for name in _STATE}

    def load_state_dict(
        self, state: dict[str, Any], device: torch.device | str | None = None
    ) -> None:
        """Restore a :meth:`state_dict`, moving its tensors to ``device``."""
        for name in _STATE:
            value = state[name]
            setattr(self, name, None if value is None else value.to(device))

    def logit_adjustment(self, num_logits: int) -> Tensor:
        """The prior padded to ``num_logits`` units (empty-class value)."""
        assert self.prior is not None
        missing = num_logits - self.prior.shape[0]
        if missing < 0:
            raise ValueError(
                f"the model has {num_logits} logits but the data has "
                f"{self.prior.shape[0]} classes"
            )
        pad = self.prior.new_full((missing,), math.log(PRIOR_EPS))
        return torch.cat([self.prior, pad])

    def _wrap_criterion(self, strategy: SupervisedTemplate) -> None:
        if self._base_criterion is None:
            self._base_criterion = strategy._criterion
            strategy._criterion = _PriorAdjustedCriterion(
                self._base_criterion, self, strategy
            )


class _PriorAdjustedCriterion:
    """``criterion(logits + prior, targets)`` while the strategy trains."""

    def __init__(
        self, criterion: Callable, plugin: BDRPlugin, strategy: SupervisedTemplate
    ) -> None:
        self.criterion = criterion
        self.plugin = plugin
        self.strategy = strategy

    def __call__(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self.plugin.prior is not None and self.strategy.is_training:
            logits = logits.float() + self.plugin.logit_adjustment(logits.shape[1])
        return self.criterion(logits, targets)
