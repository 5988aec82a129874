"""Balanced destruction-reconstruction, BDR (Zhou et al., 2023)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from avalanche.training.plugins import SupervisedPlugin
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from ..distributed import gather_batch, rank, sum_over_ranks, world_size
from ..functional import (
    PRIOR_EPS,
    bdr_log_prior,
    class_squared_distances,
    class_sums,
    update_class_statistics,
)
from ..params import BDRParams, document_hparams
from ._adapters import StepRecorder, StrategyAdapter
from ._stream import PhaseTracker
from .compat import check_model, check_softmax_ce, check_strategy

if TYPE_CHECKING:
    from avalanche.benchmarks.utils import AvalancheDataset
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["BDRPlugin"]

_STATE = ("prior", "phase_counts", "centres", "scatters")


# Avalanche is untyped: mypy checks the keyword against object.__init_subclass__
@document_hparams
class BDRPlugin(SupervisedPlugin, supports_distributed=True):  # type: ignore[call-arg]
    r"""Adds BDR's per-class prior :math:`\pi` to the logits inside the
    training loss of every experience after the first:
    :math:`L_{task}(z + \pi, y)`. Nothing is added at evaluation.

    With replay, new classes have many more training samples than old ones
    and dominate the gradient (the old classes' knowledge is "destroyed"
    faster than it is "reconstructed"). :math:`\pi` mixes each class's share
    :math:`\psi` of the labels the loss trains on with its normalised
    inverse feature scatter :math:`\omega` (see
    :func:`~bdr_avalanche.functional.bdr_log_prior`). A sample of a
    frequent class then has its own logit raised and a smaller loss, one of
    a rare class has its rivals' logits raised and a larger loss, so the
    scarce memory samples keep a larger share of the gradient.

    - At the start of an experience ``t > 0`` (its first epoch, once every
      plugin has set up the experience's loader): class centres and
      scatters are measured over the distinct samples the strategy trains
      on in that experience (the new data plus its memory), with the
      training augmentation and the model in eval mode, as the paper's code
      does; :attr:`phase_counts` :math:`n_k` is the expected number of
      class-``k`` labels that enter the loss in an epoch;
      :math:`\psi = n / \sum_j n_j` and :math:`\pi = \pi(m_1)`. With a
      memory concatenated to the data, :math:`n_k` is the class's count in
      the data, as in the paper; with a memory batched separately
      (``ReplayPlugin``, DER, ER-ACE) a memory sample enters the loss as
      often as the loader draws it, which is what :math:`n_k` counts.
    - At every step: the running centres and scatters are blended with the
      batch's detached features, each class's with the weight
      :math:`n_k` for its running value
      (:func:`~bdr_avalanche.functional.update_class_statistics`), and
      :math:`\pi \leftarrow \mu\,\pi + (1 - \mu)\,\pi(m_2)`.

    In an online stream (``split_online_stream``) the experiences are those
    of the original stream: the prior acts during every mini-experience cut
    from the second experience on, measured at the start of each. Without
    ``access_task_boundaries=True`` a mini-experience does not tell its
    origin, and is refused with ``ValueError`` before its first step.

    In distributed training both statistics are those of all processes'
    data (the phase's features and each step's batch are gathered), so the
    prior is the same on every process and equals the single-process prior
    of the global batch.

    The memory, the forward passes of a step and the losses that get the
    prior are found from the strategy and its plugins
    (:mod:`~bdr_avalanche.plugins.compat` lists what each of Avalanche's
    strategies gets): a memory concatenated to the data (:class:`~bdr_avalanche.LUCIR`,
    :class:`~bdr_avalanche.ConcatReplayPlugin`, GDumb) is measured over the
    training loader; one batched separately (``ReplayPlugin``, ``BiC``,
    ``DER``, ``ER_ACE``) over the new data plus the storage policy's buffer.
    The prior is added inside ``strategy._criterion``, and in the
    cross-entropies that DER and ER-ACE compute on their own. A strategy
    where BDR does not apply (no memory in the loss, or a loss that is not a
    softmax cross-entropy) is refused with
    :class:`~bdr_avalanche.plugins.compat.IncompatibleStrategyError`, and a
    missing ``feature_layer`` with ``ValueError``, before the first
    training step. Logit units of classes without training data (a
    fixed-size head) get the prior of an empty class, ``log(1e-12)``.

    The prior is a logit adjustment for a softmax cross-entropy: the
    strategy's criterion must be ``nn.CrossEntropyLoss`` (label smoothing
    is fine; class weights are refused, since they change the label
    distribution the prior corrects) or ``F.cross_entropy``.

    The hyper-parameters are a :class:`~bdr_avalanche.params.BDRParams`
    (``params``), or its fields as keyword arguments
    (``BDRPlugin(m1=0.6)``); the plugin keeps them as :attr:`params`.

    :param params: the hyper-parameters as one record.
    :param feature_layer: submodule whose output is the feature vector.
    :param assume_softmax_ce: add the prior to the logits of any criterion,
        for a loss that is a softmax cross-entropy under another name (the
        user's word for it: the plugin cannot check it).
    """

    PARAMS: ClassVar[type[BDRParams]] = BDRParams
    """The record of the hyper-parameters (default, help text and range)."""

    def __init__(
        self,
        params: BDRParams | None = None,
        /,
        *,
        feature_layer: str = "backbone",
        assume_softmax_ce: bool = False,
        **hparams: float,
    ) -> None:
        super().__init__()
        self.params = BDRParams.build(params, **hparams)
        """The hyper-parameters."""
        self.assume_softmax_ce = bool(assume_softmax_ce)
        """Skip the check that the criterion is a softmax cross-entropy."""
        self.prior: Tensor | None = None
        """``(K,)`` current prior; ``None`` (zero) in the first experience."""
        self.phase_counts: Tensor | None = None
        """``(K,)`` expected labels of each class in the loss, per epoch."""
        self.centres: Tensor | None = None
        self.scatters: Tensor | None = None
        self._features = StepRecorder(feature_layer)
        self._adapter = StrategyAdapter()
        self._strategy: SupervisedTemplate | None = None
        self._phases = PhaseTracker(
            "BDRPlugin", "adds its prior from the second experience"
        )
        self._phase_start_due = False

    def before_training(self, strategy: SupervisedTemplate, **kwargs):
        """Refuse a strategy, criterion or model BDR cannot work with,
        before any training step."""
        self._adapter.remove_offset(strategy)  # left by an interrupted run
        self._adapter = check_strategy("BDRPlugin", strategy)
        if not self.assume_softmax_ce:
            check_softmax_ce("BDRPlugin", strategy)
        check_model("BDRPlugin", strategy.model, self._features.layer_name)

    def before_training_exp(self, strategy: SupervisedTemplate, **kwargs):
        if self._adapter.family is None:  # not started by strategy.train
            self.before_training(strategy)
        self._strategy = strategy
        self._adapter.install_offset(strategy, self._offset)
        self.prior = None
        self._phase_start_due = self._phases.update(strategy) > 0

    def before_training_epoch(self, strategy: SupervisedTemplate, **kwargs):
        """At the experience's first epoch, after every plugin's
        ``before_training_exp`` (``ReplayPlugin`` swaps in its loader
        there, before or after this plugin's): the phase's statistics and
        first prior."""
        if not self._phase_start_due:
            return
        self._phase_start_due = False
        measured, self.centres, self.scatters = self._measure_phase(strategy)
        seen = self._adapter.loss_label_counts(strategy, measured.shape[0])
        self.phase_counts = measured if seen is None else _checked(seen, measured)
        self.prior = bdr_log_prior(
            self.phase_counts, self.scatters, self.params.m1, self.params.tau
        )
        self._features.attach(strategy.model)

    def _phase_batches(self, strategy: SupervisedTemplate) -> Iterable:
        """The experience's training batches, with the training augmentation:
        the strategy's own loader when it holds the memory too, else one
        pass over the new data and one over each separately batched memory
        (sharded over the processes when distributed)."""
        memories = self._adapter.separate_memories(strategy)
        if not memories:
            return strategy.dataloader
        return _Passes([strategy.adapted_dataset, *memories], strategy.train_mb_size)

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
                counts: Tensor | None = None
                sums: Tensor | None = None
                for features, labels, num_classes in features_and_labels():
                    if counts is None or sums is None:
                        counts = features.new_zeros(num_classes)
                        sums = features.new_zeros(num_classes, features.shape[1])
                    b_counts, b_sums = class_sums(features, labels, num_classes)
                    counts += b_counts
                    sums += b_sums
                if counts is None or sums is None:
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

    def before_forward(self, strategy: SupervisedTemplate, **kwargs):
        self._features.start_step()

    def after_forward(self, strategy: SupervisedTemplate, **kwargs):
        if self.prior is None:
            return
        counts, centres, scatters = self.phase_counts, self.centres, self.scatters
        # measured with the phase's first prior
        assert counts is not None and centres is not None and scatters is not None
        features, labels = self._adapter.features_and_labels(strategy, self._features)
        centres, scatters = update_class_statistics(
            counts,
            centres,
            scatters,
            gather_batch(features.detach()),
            gather_batch(labels),
        )
        self.centres, self.scatters = centres, scatters
        p = self.params
        estimate = bdr_log_prior(counts, scatters, p.m2, p.tau)
        self.prior = torch.lerp(estimate, self.prior, p.momentum)
        self._adapter.after_forward(strategy)

    def before_backward(self, strategy: SupervisedTemplate, **kwargs):
        self._adapter.before_backward(strategy)

    def after_training_iteration(self, strategy: SupervisedTemplate, **kwargs):
        self._features.end_step()

    def after_training_exp(self, strategy: SupervisedTemplate, **kwargs):
        self._phase_start_due = False
        self._features.detach()
        self._adapter.remove_offset(strategy)
        self._strategy = None

    def loss_terms(self) -> dict[str, Tensor]:
        """The prior of the current step (``bdr_prior``), for
        :class:`~bdr_avalanche.plugins.FiniteLossGuard`; none before it
        acts."""
        return {} if self.prior is None else {"bdr_prior": self.prior}

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

    def _offset(self, num_logits: int) -> Tensor | None:
        """What the training losses add to their logits now: the prior
        while the strategy trains an experience after the first."""
        strategy = self._strategy
        if self.prior is None or strategy is None or not strategy.is_training:
            return None
        return self.logit_adjustment(num_logits)


def _checked(seen: Tensor, measured: Tensor) -> Tensor:
    """The counts of the labels the loss sees, as float32 on the device of
    the measured counts, once checked against them: a class in the loss
    was measured (its centre and scatter exist)."""
    seen = seen.to(measured.device, torch.float32)
    if bool(((seen > 0) & (measured == 0)).any()):
        missing = torch.nonzero((seen > 0) & (measured == 0)).flatten().tolist()
        raise RuntimeError(
            f"BDRPlugin: classes {missing} enter the loss but were not among the "
            "samples measured at the start of the experience"
        )
    return seen


class _Passes:
    """Re-iterable batches: one pass over each dataset in turn, in its
    training transform, sharded over the processes when distributed."""

    def __init__(self, datasets: Sequence[AvalancheDataset], batch_size: int) -> None:
        self.loaders = []
        for data in datasets:
            data = data.train()
            shard = Subset(data, range(rank(), len(data), world_size()))
            if len(shard) > 0:
                self.loaders.append(DataLoader(shard, batch_size=batch_size))

    def __iter__(self) -> Iterator:
        for loader in self.loaders:
            yield from loader
