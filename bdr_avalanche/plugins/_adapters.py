"""How the plugins meet each Avalanche strategy.

LUCIR, CwD and BDR need three things from a strategy's training step that
Avalanche's strategies provide in different ways:

- **where the memory is**: concatenated to the experience's data (LUCIR,
  :class:`~bdr_avalanche.ConcatReplayPlugin`, iCaRL; GDumb trains on its
  memory alone), so that the training loader already holds it, or batched
  separately (``ReplayPlugin`` and ``BiCPlugin`` draw a memory batch per
  step from their storage policy, DER and ER-ACE from their buffer), and
  so how often each class enters the loss in an epoch;
- **which forward passes a step makes**: one over ``strategy.mb_x`` for
  all but ER-ACE, which runs the model a second time on its buffer batch
  (``mb_buffer_x``) and computes its loss from both outputs;
- **where a logit offset enters the loss**: ``strategy._criterion`` for
  the strategies whose classification loss is ``criterion()``; ER-ACE adds
  ``ace_criterion`` (its loss with replay); DER computes its
  cross-entropies with ``F.cross_entropy`` on ``mb_output`` directly.

:func:`identify` tells a strategy's :class:`Family`; :func:`adapter_for`
gives the :class:`StrategyAdapter` that answers the three questions for
it. :mod:`~bdr_avalanche.plugins.compat` says which plugin applies to
which family.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from avalanche.training.plugins import (
    AGEMPlugin,
    BiCPlugin,
    GDumbPlugin,
    GEMPlugin,
    LwFPlugin,
    ReplayPlugin,
)
from avalanche.training.supervised import (
    AGEM,
    DER,
    ER_ACE,
    GEM,
    BiC,
    GDumb,
    ICaRL,
    LwF,
    Naive,
    Replay,
)
from avalanche.training.supervised.icarl import _ICaRLPlugin
from avalanche.training.templates import SupervisedTemplate
from torch import Tensor, nn

from .._utils import FeatureRecorder
from ..distributed import sum_over_ranks
from ._loss_counts import dataset_labels, drawn_label_counts, epoch_label_counts
from .replay import ConcatReplayPlugin

if TYPE_CHECKING:
    from avalanche.benchmarks.utils import AvalancheDataset

__all__ = [
    "Family",
    "StepRecorder",
    "StepSamples",
    "StrategyAdapter",
    "adapter_for",
    "identify",
]

#: The private Avalanche names this module relies on, checked against the
#: installed Avalanche by ``tests/test_avalanche_private.py``
#: (``Class()._name``: an instance attribute). :func:`identify` tells
#: iCaRL built from ``Naive`` by its ``_ICaRLPlugin``; the criterion
#: adapter wraps ``strategy._criterion``, the loss Avalanche's
#: ``SupervisedProblem.criterion`` calls.
AVALANCHE_PRIVATE = (
    "avalanche.training.supervised.icarl._ICaRLPlugin",
    "avalanche.training.templates.SupervisedTemplate()._criterion",
)

#: ``offset(num_logits)``: the logit offset to add to a training loss now,
#: or ``None`` when nothing is to be added.
LogitOffset = Callable[[int], "Tensor | None"]


class Family(enum.Enum):
    """The kinds of strategy the plugins tell apart; the value is the name
    used in messages and in the compatibility table (``docs/plugins.md``)."""

    LUCIR = "LUCIR (bdr_avalanche)"
    NAIVE_CONCAT = "Naive + ConcatReplayPlugin"
    NAIVE_REPLAY = "Naive + ReplayPlugin (any storage policy)"
    REPLAY = "Replay"
    GDUMB = "GDumb"
    AGEM = "AGEM / GEM"
    ER_ACE = "ER_ACE"
    DER_PP = "DER with beta > 0 (DER++)"
    DER = "DER with beta = 0"
    ICARL = "iCaRL"
    BIC = "BiC"
    NAIVE = "Naive without memory"
    LWF = "LwF without memory"
    OTHER = "any other strategy"


def _has(strategy: SupervisedTemplate, kind: type | tuple[type, ...]) -> bool:
    return any(isinstance(p, kind) for p in strategy.plugins)


def identify(strategy: SupervisedTemplate) -> Family:
    """The :class:`Family` of ``strategy``, from its class and its plugins.

    Strategies built from ``Naive`` (or a bare ``SupervisedTemplate``) are
    told apart by their plugins: a ``GDumbPlugin``, ``BiCPlugin`` or
    ``AGEMPlugin``/``GEMPlugin`` makes the strategy of that name, a
    ``ReplayPlugin`` or :class:`~bdr_avalanche.ConcatReplayPlugin` gives
    replay, an ``LwFPlugin`` alone is LwF. A strategy class may declare its
    family as the class attribute ``PLUGIN_FAMILY`` (as
    :class:`~bdr_avalanche.LUCIR` does). Any other class is
    :attr:`Family.OTHER`.
    """
    declared = getattr(type(strategy), "PLUGIN_FAMILY", None)
    if isinstance(declared, Family):
        return declared
    if isinstance(strategy, DER):
        return Family.DER_PP if strategy.beta > 0 else Family.DER
    if isinstance(strategy, ER_ACE):
        return Family.ER_ACE
    if isinstance(strategy, ICaRL) or _has(strategy, _ICaRLPlugin):
        return Family.ICARL
    naive_like = (Naive, Replay, GDumb, BiC, AGEM, GEM, LwF)
    if not (isinstance(strategy, naive_like) or type(strategy) is SupervisedTemplate):
        return Family.OTHER
    if _has(strategy, (AGEMPlugin, GEMPlugin)):
        return Family.AGEM
    if _has(strategy, GDumbPlugin):
        return Family.GDUMB
    if _has(strategy, BiCPlugin):
        return Family.BIC
    if _has(strategy, ReplayPlugin):
        return Family.REPLAY if isinstance(strategy, Replay) else Family.NAIVE_REPLAY
    if _has(strategy, ConcatReplayPlugin):
        return Family.NAIVE_CONCAT
    if _has(strategy, LwFPlugin):
        return Family.LWF
    return Family.NAIVE


class StepRecorder(FeatureRecorder):
    """A :class:`~bdr_avalanche._utils.FeatureRecorder` that also keeps the
    outputs of the last two forward passes since :meth:`start_step`, so that
    a strategy that runs the model twice in a step (ER-ACE) can pair each
    pass's features with its own labels. :meth:`get` is the last pass."""

    def __init__(self, layer_name: str) -> None:
        self._recent: deque[Tensor] = deque(maxlen=2)
        self.calls = 0
        """Forward passes since :meth:`start_step`."""
        super().__init__(layer_name)

    def start_step(self) -> None:
        """Forget the passes recorded so far (call before a step's forwards)."""
        self._recent.clear()
        self.calls = 0

    def end_step(self) -> None:
        """Drop the step's features, and with them its autograd graph: a
        copy of the model (BiC's and LwF's teachers are deep copies) then
        copies no tensor of a finished step."""
        self.features = None
        self.start_step()

    def detach(self) -> None:
        super().detach()
        self.start_step()

    def _hook(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        super()._hook(module, inputs, output)
        self._recent.append(self.get())  # the features just recorded
        self.calls += 1

    def recent(self, n: int) -> list[Tensor]:
        """The features of the last ``n`` (1 or 2) passes, oldest first."""
        if self.calls < n:
            raise RuntimeError(
                f"expected {n} forward passes through {self.layer_name!r} in this "
                f"step, recorded {self.calls}"
            )
        return list(self._recent)[-n:]


@dataclass
class StepSamples:
    """What one training step trains on, one entry per forward pass."""

    inputs: list[Tensor]
    outputs: list[Tensor]
    labels: list[Tensor]
    features: list[Tensor]

    @property
    def all_inputs(self) -> Tensor:
        return _cat(self.inputs)

    @property
    def all_outputs(self) -> Tensor:
        return _cat(self.outputs)

    @property
    def all_labels(self) -> Tensor:
        return _cat(self.labels)

    @property
    def all_features(self) -> Tensor:
        return _cat(self.features)


def _cat(tensors: list[Tensor]) -> Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


class _OffsetCriterion:
    """``criterion(logits + offset, targets)`` while an offset is given."""

    def __init__(self, criterion: Callable, offset: LogitOffset) -> None:
        self.criterion = criterion
        self.offset = offset

    def __call__(self, logits: Tensor, targets: Tensor) -> Tensor:
        offset = self.offset(logits.shape[1])
        if offset is not None:
            logits = logits.float() + offset
        return self.criterion(logits, targets)


class _OffsetACE:
    """ER-ACE's ``ace_criterion`` with the offset added to both outputs."""

    def __init__(self, criterion: Callable, offset: LogitOffset) -> None:
        self.criterion = criterion
        self.offset = offset

    def __call__(
        self,
        out_in: Tensor,
        target_in: Tensor,
        out_buffer: Tensor,
        target_buffer: Tensor,
    ) -> Tensor:
        offset = self.offset(out_in.shape[1])
        if offset is not None:
            out_in = out_in.float() + offset
            out_buffer = out_buffer.float() + offset
        return self.criterion(out_in, target_in, out_buffer, target_buffer)


class StrategyAdapter:
    """The default: memory (if any) inside the strategy's training loader,
    one forward pass per step over ``mb_x``, classification loss
    ``strategy._criterion(mb_output, mb_y)``."""

    def __init__(self, family: Family | None = None) -> None:
        self.family = family
        self._saved: dict[str, Any] = {}

    # -- where the memory is ------------------------------------------------

    def separate_memories(self, strategy: SupervisedTemplate) -> list[AvalancheDataset]:
        """The memory samples the strategy replays in batches of their own in
        the current experience, each once, without those that are also in
        the experience's data (empty: the training loader holds everything
        the strategy trains on)."""
        return []

    def loss_label_counts(
        self, strategy: SupervisedTemplate, num_classes: int
    ) -> Tensor | None:
        """Expected ``(num_classes,)`` float64 counts of the labels that enter
        the classification loss in one epoch of the current experience,
        summed over the processes; ``None`` when the training loader holds
        everything the loss sees, once an epoch (then one pass over it
        counts them)."""
        return None

    # -- which forward passes a step makes -----------------------------------

    def step(self, strategy: SupervisedTemplate, recorder: StepRecorder) -> StepSamples:
        """The inputs, outputs, labels and recorded features of the current
        training step, one entry per forward pass (call after the forward)."""
        samples = StepSamples(
            inputs=[strategy.mb_x],
            outputs=[strategy.mb_output],
            labels=[strategy.mb_y],
            features=[recorder.get()],
        )
        _check_pairs(samples.features, samples.labels, recorder)
        return samples

    def features_and_labels(
        self, strategy: Any, recorder: StepRecorder
    ) -> tuple[Tensor, Tensor]:
        """The step's features and the labels of the same samples."""
        features, labels = recorder.get(), strategy.mb_y
        _check_pairs([features], [labels], recorder)
        return features, labels

    # -- where a logit offset enters the loss ---------------------------------

    def install_offset(self, strategy: SupervisedTemplate, offset: LogitOffset) -> None:
        """Make the strategy's classification losses add ``offset`` to their
        logits (until :meth:`remove_offset`)."""
        self._wrap(strategy, "_criterion", _OffsetCriterion, offset)

    def remove_offset(self, strategy: SupervisedTemplate) -> None:
        """Undo :meth:`install_offset`."""
        for name, value in self._saved.items():
            setattr(strategy, name, value)
        self._saved = {}

    def after_forward(self, strategy: SupervisedTemplate) -> None:
        """Called by the plugin after the forward pass, once its own
        statistics are updated."""

    def before_backward(self, strategy: SupervisedTemplate) -> None:
        """Called by the plugin before the backward pass."""

    def _wrap(
        self,
        strategy: SupervisedTemplate,
        name: str,
        wrapper: type,
        offset: LogitOffset,
    ) -> None:
        if name not in self._saved:
            self._saved[name] = getattr(strategy, name)
            setattr(strategy, name, wrapper(self._saved[name], offset))


def _check_pairs(
    features_per_pass: list[Tensor],
    labels_per_pass: list[Tensor],
    recorder: StepRecorder,
) -> None:
    for features, labels in zip(features_per_pass, labels_per_pass, strict=True):
        if features.shape[0] != labels.shape[0]:
            raise RuntimeError(
                f"the features recorded from {recorder.layer_name!r} belong to "
                f"{features.shape[0]} samples but the step's labels to "
                f"{labels.shape[0]}: the model ran on other inputs between "
                "before_forward and after_forward"
            )


class _ReplayPluginAdapter(StrategyAdapter):
    """``ReplayPlugin`` (``Replay``, ``Naive + ReplayPlugin``) and
    ``BiCPlugin``: a memory batch from the plugin's storage policy is
    concatenated to every data batch from the second experience on."""

    kinds: tuple[type[Any], ...] = (ReplayPlugin, BiCPlugin)

    def separate_memories(self, strategy: SupervisedTemplate) -> list[AvalancheDataset]:
        return [
            p.storage_policy.buffer
            for p in strategy.plugins
            if isinstance(p, self.kinds) and len(p.storage_policy.buffer) > 0
        ]

    def loss_label_counts(
        self, strategy: SupervisedTemplate, num_classes: int
    ) -> Tensor | None:
        """From the structure of the plugin's ``ReplayDataLoader``: the new
        data once an epoch, and as many memory batches as data batches,
        each pass over the memory a new permutation."""
        memories = self.separate_memories(strategy)
        if not memories:
            return None
        counts, datasets = epoch_label_counts(strategy.dataloader, num_classes)
        if datasets < 1 + len(memories):
            raise ValueError(
                "BDRPlugin: the training loader, a "
                f"{type(strategy.dataloader).__name__}, does not draw from the "
                "memory of the ReplayPlugin (a plugin replaced its loader?), so "
                "the classes its loss sees are unknown"
            )
        return sum_over_ranks(counts)


class _BufferStrategyAdapter(StrategyAdapter):
    """DER and ER-ACE: a memory batch from ``strategy.storage_policy`` at
    every step while ``strategy.replay_loader`` is set."""

    def separate_memories(self, strategy: SupervisedTemplate) -> list[AvalancheDataset]:
        if getattr(strategy, "replay_loader", None) is None:
            return []
        return [strategy.storage_policy.buffer]

    def loss_label_counts(
        self, strategy: SupervisedTemplate, num_classes: int
    ) -> Tensor | None:
        """The data loader's epoch, plus one buffer batch of
        ``batch_size_mem`` per step, drawn by a shuffling, ``drop_last``
        loader that cycles over the whole buffer (the copies of the current
        data that ER-ACE's buffer holds included: they enter the loss)."""
        if getattr(strategy, "replay_loader", None) is None:
            return None
        counts, _ = epoch_label_counts(strategy.dataloader, num_classes)
        counts += drawn_label_counts(
            dataset_labels(strategy.storage_policy.buffer),
            len(strategy.dataloader),
            strategy.batch_size_mem,
            num_classes,
        )
        return sum_over_ranks(counts)


class _ERACEAdapter(_BufferStrategyAdapter):
    """ER-ACE runs the model on the data batch, then on the buffer batch,
    and its loss with replay is ``ace_criterion(out, y, out_buf, y_buf)``.
    Its buffer is updated with the experience's data before training, so
    it holds copies of new samples."""

    def separate_memories(self, strategy: SupervisedTemplate) -> list[AvalancheDataset]:
        """The buffer's samples of the classes absent from the experience's
        data: in a class-incremental stream those of the current classes
        are copies of samples the data already holds. (Where classes recur,
        a current class's older buffer samples are left out too; its new
        samples stand for it.)"""
        buffers = super().separate_memories(strategy)
        if not buffers:
            return []
        current = set(strategy.adapted_dataset.targets.uniques)
        labels = dataset_labels(buffers[0]).tolist()
        keep = [i for i, label in enumerate(labels) if label not in current]
        return [buffers[0].subset(keep)] if keep else []

    def step(self, strategy: SupervisedTemplate, recorder: StepRecorder) -> StepSamples:
        if getattr(strategy, "replay_loader", None) is None:
            return super().step(strategy, recorder)
        samples = StepSamples(
            inputs=[strategy.mb_x, strategy.mb_buffer_x],
            outputs=[strategy.mb_output, strategy.mb_buffer_out],
            labels=[strategy.mb_y, strategy.mb_buffer_y],
            features=recorder.recent(2),
        )
        _check_pairs(samples.features, samples.labels, recorder)
        return samples

    def features_and_labels(
        self, strategy: Any, recorder: StepRecorder
    ) -> tuple[Tensor, Tensor]:
        samples = self.step(strategy, recorder)
        return samples.all_features, samples.all_labels

    def install_offset(self, strategy: SupervisedTemplate, offset: LogitOffset) -> None:
        super().install_offset(strategy, offset)
        self._wrap(strategy, "ace_criterion", _OffsetACE, offset)


class _DERAdapter(_BufferStrategyAdapter):
    """DER computes ``CE(out[bm:], y[bm:]) + alpha MSE(out[:bm], logits) +
    beta CE(out[:bm], y[:bm])`` from ``mb_output`` itself. The offset is
    added to ``mb_output`` after the forward and to the stored logits
    ``batch_logits`` (the MSE depends on their difference only, so it is
    unchanged), and both are put back before the backward pass."""

    def __init__(self, family: Family | None = None) -> None:
        super().__init__(family)
        self._offset: LogitOffset | None = None

    def install_offset(self, strategy: SupervisedTemplate, offset: LogitOffset) -> None:
        self._offset = offset

    def remove_offset(self, strategy: SupervisedTemplate) -> None:
        self.before_backward(strategy)
        self._offset = None

    def after_forward(self, strategy: SupervisedTemplate) -> None:
        if self._offset is None:
            return
        shift = self._offset(strategy.mb_output.shape[1])
        if shift is None:
            return
        self._saved = {"mb_output": strategy.mb_output}
        strategy.mb_output = strategy.mb_output.float() + shift
        if strategy.replay_loader is not None:
            self._saved["batch_logits"] = strategy.batch_logits
            strategy.batch_logits = strategy.batch_logits.float() + shift

    def before_backward(self, strategy: SupervisedTemplate) -> None:
        super().remove_offset(strategy)


_ADAPTERS: dict[Family, type[StrategyAdapter]] = {
    Family.NAIVE_REPLAY: _ReplayPluginAdapter,
    Family.REPLAY: _ReplayPluginAdapter,
    Family.BIC: _ReplayPluginAdapter,
    Family.ER_ACE: _ERACEAdapter,
    Family.DER_PP: _DERAdapter,
    Family.DER: _DERAdapter,
}


def adapter_for(strategy: SupervisedTemplate) -> StrategyAdapter:
    """A fresh :class:`StrategyAdapter` for ``strategy``'s family."""
    family = identify(strategy)
    return _ADAPTERS.get(family, StrategyAdapter)(family)
