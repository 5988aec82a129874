"""Balanced destruction-reconstruction, BDR (Zhou et al., 2023)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from avalanche.benchmarks.utils.utils import concat_datasets
from avalanche.training.plugins import SupervisedPlugin
from avalanche.training.storage_policy import ExemplarsBuffer
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from .._utils import FeatureRecorder
from ..distributed import gather_batch, rank, sum_over_ranks, world_size
from ..functional import (
    PRIOR_EPS,
    bdr_log_prior,
    class_squared_distances,
    class_sums,
    update_class_statistics,
)
from ..hparams import HParam, document_hparams

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["BDRPlugin"]

_STATE = ("prior", "phase_counts", "centres", "scatters")


@document_hparams
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
      and scatters are measured over the experience's training batches
      (plus ``memory``, when the memory is not already part of them), with
      the training augmentation and the model in eval mode, as the paper's
      code does; :math:`\pi = \pi(m_1)`.
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

    :param feature_layer: submodule whose output is the feature vector.
    :param memory: a replay buffer that the strategy batches separately (as
        Avalanche's ``ReplayPlugin`` does); its samples are counted in the
        phase statistics. Leave ``None`` when the memory is concatenated to
        the data (:class:`~bdr_avalanche.LUCIR`, ``ConcatReplayPlugin``).
    """

    HPARAMS: ClassVar[Mapping[str, HParam]] = {
        "m1": HParam(
            0.8,
            "weight of the class-frequency term psi against the inverse-scatter "
            "term omega in the prior measured at the start of an experience",
            "fraction",
        ),
        "m2": HParam(
            0.8,
            "weight of the class-frequency term psi against the inverse-scatter "
            "term omega in the per-step estimate of the prior",
            "fraction",
        ),
        "momentum": HParam(
            0.99,
            "momentum with which the prior follows its per-step estimate, "
            "mu in pi <- mu * pi + (1 - mu) * estimate",
            "fraction",
        ),
        "tau": HParam(
            1.0,
            "exponent tau of the psi/omega mixture in the prior: "
            "pi = log(mixture ** tau + 1e-12)",
            "positive",
        ),
    }
    """The hyper-parameters: default, help text and range."""

    def __init__(
        self,
        m1: float = HPARAMS["m1"].default,
        m2: float = HPARAMS["m2"].default,
        momentum: float = HPARAMS["momentum"].default,
        tau: float = HPARAMS["tau"].default,
        feature_layer: str = "backbone",
        memory: ExemplarsBuffer | None = None,
    ) -> None:
        super().__init__()
        hp = self.HPARAMS
        self.m1 = hp["m1"].check("m1", m1)
        self.m2 = hp["m2"].check("m2", m2)
        self.momentum = hp["momentum"].check("momentum", momentum)
        self.tau = hp["tau"].check("tau", tau)
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
        self.phase_counts, self.centres, self.scatters = self._measure_phase(strategy)
        self.prior = bdr_log_prior(self.phase_counts, self.scatters, self.m1, self.tau)
        self._features.attach(strategy.model)

    def _phase_batches(self, strategy: SupervisedTemplate) -> Iterable:
        """The experience's training batches, with the training augmentation:
        the strategy's own loader, or, with a separately batched ``memory``,
        one pass over the data and the memory together (sharded over the
        processes when distributed)."""
        if self.memory is None or len(self.memory.buffer) == 0:
            return strategy.dataloader
        data = concat_datasets([strategy.adapted_dataset, self.memory.buffer]).train()
        data = Subset(data, range(rank(), len(data), world_size()))
        return DataLoader(data, batch_size=strategy.train_mb_size)

    def _measure_phase(self, strategy: SupervisedTemplate) -> tuple[Tensor, ...]:
        """Per-class counts, centres and scatters at the start of an
        experience, as the paper's code measures them: over the training
        batches (new data plus memory, augmented as for training), with the
        model in eval mode and no gradient, in two passes (the centres in
        the first, the scatters about them in the second, each pass with
        its own random augmentation). Distributed, the sums of all
        processes are added (a sampler's padding of fewer than
        ``world_size`` samples is counted)."""
        model, device = strategy.model, strategy.device
        autocast = getattr(strategy, "autocast", contextlib.nullcontext)
        batches = self._phase_batches(strategy)
        was_training = model.training
        model.eval()
        self._features.attach(model)

        def features_and_labels() -> Iterator[tuple[Tensor, Tensor, int]]:
            for batch in batches:
                with autocast():
                    logits = model(batch[0].to(device, non_blocking=True))
                labels = batch[1].to(device, non_blocking=True)
                yield self._features.get().float(), labels, logits.shape[1]

        try:
            with torch.no_grad():
                counts = sums = None
                for features, labels, num_classes in features_and_labels():
                    if counts is None:
                        counts = features.new_zeros(num_classes)
                        sums = features.new_zeros(num_classes, features.shape[1])
                    b_counts, b_sums = class_sums(features, labels, num_classes)
                    counts += b_counts
                    sums += b_sums
                if counts is None:
                    raise ValueError("BDR: the experience has no training data")
                counts, sums = sum_over_ranks(counts), sum_over_ranks(sums)
                centres = sums / counts.clamp_min(1.0)[:, None]
                squared = torch.zeros_like(counts)
                for features, labels, _ in features_and_labels():
                    squared += class_squared_distances(features, labels, centres)
                scatters = sum_over_ranks(squared) / counts.clamp_min(1.0)
        finally:
            model.train(was_training)
        return counts, centres, scatters

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
