r"""Avalanche metrics that make BDR's mechanism visible.

BDR's argument is about the gradient: with replay, the few memory samples
of the old classes contribute little to the classification loss's gradient
next to the many samples of the new classes, and the prior :math:`\pi`
that BDR adds to the logits rebalances that. Three metrics, for any
Avalanche strategy (ours and the baselines), measure it during the
ordinary ``train``/``eval`` loop, without an extra forward or backward
pass:

- :class:`MemoryGradShare` (logged per training epoch as
  ``MemoryGradShare_Epoch/train_phase/...``): the share of the
  cross-entropy's logit-gradient mass that comes from memory samples
  (:func:`memory_gradient_share`);
- :class:`PriorTrace` (records only): BDR's prior per class over the
  training steps of every experience;
- :class:`LastLayerAnalysis` (records only): after each experience, the
  classifier's per-class weight norms and the mean test logit per class,
  accumulated over Avalanche's evaluation of the seen test stream.

:class:`DiagnosticMetrics` bundles the three for the experiment runner
(state for checkpoints, a JSON-ready summary).

:class:`OldNewAccuracy` (logged as ``OldAcc_Stream/eval_phase/...``,
``NewAcc_Stream/...`` and ``OldToNew_Stream/...``) gives the protocol's
old/new-class breakdown from the same evaluation pass: accuracy on the old
and on the new classes and the share of old-class images predicted as a
new class (:func:`old_new_breakdown` of the evaluation's confusion
counts). :func:`bdr_avalanche.protocol.make_evaluator` includes it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from avalanche.evaluation import GenericPluginMetric, PluginMetric
from avalanche.evaluation.metric_results import MetricResult, MetricValue
from avalanche.evaluation.metric_utils import get_metric_name
from avalanche.models import IncrementalClassifier
from torch import Tensor, nn

from ._utils import check_positive_int, nan_to_none
from .distributed import sum_over_ranks
from .models.cosine import CosineIncrementalClassifier
from .plugins.bdr import BDRPlugin

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = [
    "DiagnosticMetrics",
    "GradientShareAccumulator",
    "LastLayerAnalysis",
    "LastLayerRecord",
    "MemoryGradShare",
    "OldNewAccuracy",
    "OldNewBreakdown",
    "PriorTrace",
    "PriorTraceRecord",
    "classifier_weight_norms",
    "logit_gradient_mass",
    "memory_gradient_share",
    "old_new_breakdown",
]


# --------------------------------------------------------------------- math


def logit_gradient_mass(
    logits: Tensor, targets: Tensor, prior: Tensor | None = None
) -> Tensor:
    r"""Per sample, the L1 norm of the cross-entropy's gradient with respect
    to the logits, :math:`\lVert \mathrm{softmax}(z + \pi) - e_y \rVert_1`.

    Since the softmax sums to one, the norm equals :math:`2 (1 - p_y)`; it
    is computed as ``-2 * expm1(log_softmax(z + pi)[y])``, which stays
    accurate when :math:`p_y` is close to 1.

    :param logits: ``(N, C)`` logits :math:`z` (not modified; no gradient).
    :param targets: ``(N,)`` class ids.
    :param prior: ``(C,)`` vector :math:`\pi` added to every row (BDR's
        prior, padded to ``C``), or ``None`` for zero.
    :return: ``(N,)`` float32 masses, in ``[0, 2]``.
    """
    z = logits.detach().float()
    if prior is not None:
        z = z + prior.detach().float()
    log_p = torch.log_softmax(z, dim=1)
    log_p_target = log_p.gather(1, targets.long().view(-1, 1)).squeeze(1)
    return -2.0 * torch.expm1(log_p_target)


def memory_gradient_share(
    logits: Tensor,
    targets: Tensor,
    is_memory: Tensor,
    prior: Tensor | None = None,
) -> Tensor:
    r"""The share of the logit-gradient mass of a batch that comes from
    memory samples: :math:`\sum_{i \in M} m_i / \sum_i m_i` with
    :math:`m_i` the :func:`logit_gradient_mass` of sample :math:`i`.

    The batch loss's :math:`1/N` factor is common to all samples and
    cancels. Returns 0 when the total mass is 0.

    :param is_memory: ``(N,)`` booleans, true for memory samples.
    :return: a 0-dim float32 tensor (on the logits' device; no host sync).
    """
    mass = logit_gradient_mass(logits, targets, prior)
    memory = (mass * is_memory.to(mass.dtype)).sum()
    total = mass.sum()
    return torch.where(total > 0, memory / total.clamp_min(1e-30), 0.0)


def classifier_weight_norms(model: nn.Module) -> Tensor | None:
    """The L2 norm of each output unit's weight row in ``model``'s classifier.

    The classifier is the last
    :class:`~bdr_avalanche.models.CosineIncrementalClassifier` of the model
    (raw row norms: its forward normalises the rows, the stored weights keep
    their norms; indexed by class id, NaN for ids without a row), else the
    last Avalanche ``IncrementalClassifier`` (its ``Linear``), else the last
    ``nn.Linear``; ``None`` when there is none.

    :return: ``(units,)`` float32 tensor on the model's device.
    """
    modules = list(model.modules())
    weight: Tensor | None = None
    cosine = [m for m in modules if isinstance(m, CosineIncrementalClassifier)]
    incremental = [m for m in modules if isinstance(m, IncrementalClassifier)]
    linear = [m for m in modules if isinstance(m, nn.Linear)]
    if cosine:
        head = cosine[-1]
        if len(head.blocks) == 0:
            return None
        norms = head.weight.detach().float().norm(dim=1)
        classes = getattr(head, "classes", [])
        if len(classes) == len(norms) and classes != list(range(len(classes))):
            # rows in order of arrival: put each at its class id
            by_id = norms.new_full((head.num_outputs,), float("nan"))
            by_id[classes] = norms
            return by_id
        return norms
    elif incremental:
        weight = incremental[-1].classifier.weight
    elif linear:
        weight = linear[-1].weight
    if weight is None:
        return None
    return weight.detach().float().norm(dim=1)


def _accumulator_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _find_bdr(strategy: SupervisedTemplate) -> BDRPlugin | None:
    for plugin in strategy.plugins:
        if isinstance(plugin, BDRPlugin):
            return plugin
    return None


def _current_prior(
    bdr: BDRPlugin | None, num_logits: int, use: bool = True
) -> Tensor | None:
    """The prior BDR adds to the loss now, padded to ``num_logits``."""
    if not use or bdr is None or bdr.prior is None:
        return None
    return bdr.logit_adjustment(num_logits)


class _ExperienceClasses:
    """The classes of the training experiences seen so far, in order of
    arrival (the memory of a class-incremental stream)."""

    def __init__(self) -> None:
        self.experiences: list[tuple[int, list[int]]] = []

    def add(self, experience_id: int, classes: Iterable[int]) -> None:
        self.experiences.append((int(experience_id), sorted(int(c) for c in classes)))

    def seen(self) -> list[int]:
        """Every class seen so far, once, in order of arrival."""
        out: dict[int, None] = {}
        for _, classes in self.experiences:
            out.update(dict.fromkeys(classes))
        return list(out)

    def state_dict(self) -> list[list[Any]]:
        return [[t, list(classes)] for t, classes in self.experiences]

    def load_state_dict(self, state: Sequence[Sequence[Any]]) -> None:
        self.experiences = [(int(t), [int(c) for c in cls]) for t, cls in state]


def _experience_id(strategy: SupervisedTemplate) -> int:
    return int(strategy.experience.current_experience)


def _experience_classes(strategy: SupervisedTemplate) -> list[int]:
    return sorted(int(c) for c in strategy.experience.classes_in_this_experience)


# ------------------------------------------------------ memory gradient share


class GradientShareAccumulator:
    """Standalone Avalanche ``Metric``: sums, over the batches given to
    :meth:`update`, the logit-gradient mass of memory samples and of all
    samples (and the sample counts), as tensors on the batches' device.

    Nothing is read back to the host until :meth:`values` (or
    :meth:`result`), once per epoch.
    """

    def __init__(self) -> None:
        self._sums: Tensor | None = None
        self._values: tuple[float, float] | None = None

    @torch.no_grad()
    def update(
        self,
        logits: Tensor,
        targets: Tensor,
        memory_classes: Tensor,
        prior: Tensor | None = None,
    ) -> None:
        """Add a batch.

        :param memory_classes: 1-d tensor of the class ids whose samples
            are memory samples (classes seen in an earlier experience).
        """
        mass = logit_gradient_mass(logits, targets, prior)
        dtype = _accumulator_dtype(mass.device)
        is_memory = torch.isin(targets, memory_classes.to(targets.device)).to(dtype)
        mass = mass.to(dtype)
        batch = torch.stack(
            [
                (mass * is_memory).sum(),
                mass.sum(),
                is_memory.sum(),
                torch.full((), float(len(mass)), dtype=dtype, device=mass.device),
            ]
        )
        self._sums = batch if self._sums is None else self._sums + batch
        self._values = None

    def sum_over_processes(self, device: torch.device) -> None:
        """Sum the accumulated values over the processes of a process group
        (a collective: every process must call it; no-op in one process)."""
        sums = self._sums
        if sums is None:
            sums = torch.zeros(4, dtype=_accumulator_dtype(device), device=device)
        self._sums = sum_over_ranks(sums)
        self._values = None

    @property
    def samples(self) -> Tensor | None:
        """Number of samples added (a tensor; ``None`` before any)."""
        return None if self._sums is None else self._sums[3]

    def values(self) -> tuple[float, float] | None:
        """``(gradient share, sample share)`` of the memory samples, read
        from the device once; ``None`` when no sample was added."""
        if self._values is None and self._sums is not None:
            memory_mass, mass, memory_count, count = self._sums.tolist()
            if count > 0:
                self._values = (
                    memory_mass / mass if mass > 0 else 0.0,
                    memory_count / count,
                )
        return self._values

    def result(self) -> float | None:
        """The memory samples' share of the logit-gradient mass."""
        values = self.values()
        return None if values is None else values[0]

    def reset(self) -> None:
        self._sums = None
        self._values = None


class MemoryGradShare(GenericPluginMetric[float, GradientShareAccumulator]):
    r"""Per training epoch, the share of the classification loss's
    logit-gradient mass that comes from memory samples.

    At every training iteration, with the logits of the training forward
    pass (``strategy.mb_output``), the labels and BDR's prior :math:`\pi`
    as the loss adds it (the :class:`~bdr_avalanche.BDRPlugin` found among
    the strategy's plugins; zero without one or while it is inactive),
    every sample's mass :math:`\lVert \mathrm{softmax}(z + \pi) - e_y
    \rVert_1` is summed on the device, separately for memory samples;
    the epoch's value is their ratio (:func:`memory_gradient_share` over
    the epoch). Memory samples are those whose label is a class of an
    earlier training experience (in class-incremental replay every
    old-class sample is one); the value is 0 in the first experience.

    The formula is the gradient of one cross-entropy over the whole batch;
    for a strategy whose loss weighs memory samples differently (DER's
    ``beta``) or is not a softmax cross-entropy (iCaRL's binary
    cross-entropy) it is the cross-entropy's share on the same logits.

    Besides the logged value, :attr:`history` keeps, per training
    experience, the per-epoch gradient shares and the share of memory
    samples among the samples (the share the gradient would have if every
    sample weighed the same). Distributed, the sums are added over the
    processes at the end of each epoch.

    :param use_prior: add BDR's prior to the logits, as the loss does;
        ``False`` measures the share the same logits would give without it.
    """

    def __init__(self, use_prior: bool = True) -> None:
        super().__init__(
            GradientShareAccumulator(), reset_at="epoch", emit_at="epoch", mode="train"
        )
        self.use_prior = use_prior
        self.history: list[dict[str, Any]] = []
        """Per training experience: ``{"experience": t, "gradient_share":
        [per epoch], "sample_share": [per epoch]}``."""
        self._classes = _ExperienceClasses()
        self._memory_classes: Tensor | None = None
        self._bdr: BDRPlugin | None = None
        self._current: dict[str, Any] | None = None

    def __str__(self) -> str:
        if self.use_prior:
            return "MemoryGradShare_Epoch"
        return "MemoryGradShareNoPrior_Epoch"

    def before_training_exp(self, strategy: SupervisedTemplate) -> None:
        super().before_training_exp(strategy)
        self._memory_classes = torch.tensor(
            self._classes.seen(), dtype=torch.long, device=strategy.device
        )
        self._bdr = _find_bdr(strategy)
        self._current = {
            "experience": _experience_id(strategy),
            "gradient_share": [],
            "sample_share": [],
        }

    def update(self, strategy: SupervisedTemplate) -> None:
        assert self._memory_classes is not None
        output = strategy.mb_output
        prior = _current_prior(self._bdr, output.shape[1], self.use_prior)
        self._metric.update(output, strategy.mb_y, self._memory_classes, prior)

    def after_training_epoch(self, strategy: SupervisedTemplate) -> MetricResult:
        self._metric.sum_over_processes(strategy.device)
        values = self._metric.values()
        if values is None:
            return None
        if self._current is not None:
            self._current["gradient_share"].append(values[0])
            self._current["sample_share"].append(values[1])
        return super().after_training_epoch(strategy)

    def after_training_exp(self, strategy: SupervisedTemplate) -> None:
        super().after_training_exp(strategy)
        if self._current is not None:
            self.history.append(self._current)
            self._current = None
        self._classes.add(_experience_id(strategy), _experience_classes(strategy))

    def state_dict(self) -> dict[str, Any]:
        """Classes seen and history, as plain values (for a checkpoint)."""
        return {
            "classes": self._classes.state_dict(),
            "history": [dict(h) for h in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._classes.load_state_dict(state.get("classes", []))
        self.history = [dict(h) for h in state.get("history", [])]


# ----------------------------------------------------------------- prior trace


@dataclass
class PriorTraceRecord:
    """BDR's prior over the training steps of one experience."""

    experience: int
    steps: Tensor
    """``(S,)`` step of each row: 0 is the prior at the start of the
    experience, ``s`` the prior added to the loss of training step ``s``."""
    prior: Tensor
    """``(S, K)`` the prior of each class (column = class id)."""
    old_classes: list[int]
    new_classes: list[int]

    def state_dict(self) -> dict[str, Any]:
        return {
            "experience": self.experience,
            "steps": self.steps,
            "prior": self.prior,
            "old_classes": list(self.old_classes),
            "new_classes": list(self.new_classes),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> PriorTraceRecord:
        return cls(
            experience=int(state["experience"]),
            steps=state["steps"].cpu(),
            prior=state["prior"].cpu(),
            old_classes=[int(c) for c in state["old_classes"]],
            new_classes=[int(c) for c in state["new_classes"]],
        )


class PriorTrace(PluginMetric[None]):
    r"""Records BDR's prior :math:`\pi` per class over the training steps of
    every experience in which it is active; emits no value.

    The prior is kept on the device (one ``(K,)`` copy per recorded step)
    and moved to the CPU once, at the end of the experience, as a
    :class:`PriorTraceRecord` in :attr:`records`. To bound memory on long
    experiences at most ``max_points`` steps are kept: when the buffer is
    full, every other recorded step is dropped and the recording stride
    doubles (the kept steps stay evenly spaced).

    :param max_points: most steps kept per experience (>= 2).
    """

    def __init__(self, max_points: int = 512) -> None:
        super().__init__()
        self.max_points = check_positive_int("max_points", max_points, minimum=2)
        self.records: list[PriorTraceRecord] = []
        self._classes = _ExperienceClasses()
        self._bdr: BDRPlugin | None = None
        self._steps: list[int] = []
        self._priors: list[Tensor] = []
        self._step = 0
        self._stride = 1
        self._experience = 0
        self._new: list[int] = []

    def result(self) -> None:
        return None

    def reset(self) -> None:
        self._steps, self._priors = [], []
        self._step, self._stride = 0, 1

    def before_training_exp(self, strategy: SupervisedTemplate) -> None:
        self.reset()
        self._bdr = _find_bdr(strategy)
        self._experience = _experience_id(strategy)
        self._new = _experience_classes(strategy)

    def before_training_epoch(self, strategy: SupervisedTemplate) -> None:
        # after every plugin's before_training_exp: the phase's first prior
        if self._step == 0 and not self._steps:
            self._record()

    def after_training_iteration(self, strategy: SupervisedTemplate) -> None:
        self._step += 1
        if self._step % self._stride == 0:
            self._record()

    def _record(self) -> None:
        if self._bdr is None or self._bdr.prior is None:
            return
        self._steps.append(self._step)
        self._priors.append(self._bdr.prior.detach().clone())
        if len(self._steps) > self.max_points:
            self._steps = self._steps[::2]
            self._priors = self._priors[::2]
            self._stride *= 2

    def after_training_exp(self, strategy: SupervisedTemplate) -> None:
        if self._priors:
            old = self._classes.seen()
            self.records.append(
                PriorTraceRecord(
                    experience=self._experience,
                    steps=torch.tensor(self._steps, dtype=torch.long),
                    prior=torch.stack(self._priors).float().cpu(),
                    old_classes=old,
                    new_classes=[c for c in self._new if c not in set(old)],
                )
            )
        self.reset()
        self._classes.add(self._experience, self._new)

    def state_dict(self) -> dict[str, Any]:
        """Classes seen and finished traces (tensors and plain values)."""
        return {
            "classes": self._classes.state_dict(),
            "records": [r.state_dict() for r in self.records],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._classes.load_state_dict(state.get("classes", []))
        self.records = [
            PriorTraceRecord.from_state_dict(r) for r in state.get("records", [])
        ]


# ---------------------------------------------------------- last-layer analysis


@dataclass
class LastLayerRecord:
    """The classifier after one training experience."""

    experience: int
    classes: list[int]
    """Classes seen so far, in order of arrival."""
    weight_norm: list[float]
    """Per class (in :attr:`classes` order): L2 norm of its weight row (NaN
    when the model has no recognisable classifier)."""
    mean_logit: list[float]
    """Per class: its logit averaged over all seen test images."""
    mean_target_logit: list[float]
    """Per class: its logit averaged over its own test images (NaN without
    any)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "experience": self.experience,
            "classes": list(self.classes),
            "weight_norm": list(self.weight_norm),
            "mean_logit": list(self.mean_logit),
            "mean_target_logit": list(self.mean_target_logit),
        }


class LastLayerAnalysis(PluginMetric[None]):
    """After each training experience, the classifier's per-class weight
    norms and the mean evaluation logit per class; emits no value.

    The logits are those of Avalanche's evaluation (``strategy.mb_output``
    of every eval iteration, so no second pass over the test data): their
    sum over the images and the sum of each class's own logit over its
    images are accumulated on the device and read once in ``after_eval``.
    The weight norms are :func:`classifier_weight_norms` of the model at
    that point. One :class:`LastLayerRecord` per trained experience is kept
    in :attr:`records` (a later evaluation replaces it); evaluations
    during training (periodic ``eval_every``) are ignored.
    """

    def __init__(self) -> None:
        super().__init__()
        self.records: list[LastLayerRecord] = []
        self._classes = _ExperienceClasses()
        self._training = False
        self._logit_sum: Tensor | None = None
        self._target_sum: Tensor | None = None
        self._target_count: Tensor | None = None
        self._images = 0

    def result(self) -> None:
        return None

    def reset(self) -> None:
        self._logit_sum = self._target_sum = self._target_count = None
        self._images = 0

    def before_training(self, strategy: SupervisedTemplate) -> None:
        self._training = True

    def after_training_exp(self, strategy: SupervisedTemplate) -> None:
        self._classes.add(_experience_id(strategy), _experience_classes(strategy))

    def after_training(self, strategy: SupervisedTemplate) -> None:
        self._training = False

    def before_eval(self, strategy: SupervisedTemplate) -> None:
        self.reset()

    @torch.no_grad()
    def after_eval_iteration(self, strategy: SupervisedTemplate) -> None:
        if self._training:
            return
        output = strategy.mb_output.detach()
        output = output.to(_accumulator_dtype(output.device))
        targets = strategy.mb_y.long()
        width = output.shape[1]
        if self._logit_sum is None or self._logit_sum.shape[0] < width:
            self._logit_sum = _grow(self._logit_sum, width, output)
            self._target_sum = _grow(self._target_sum, width, output)
            self._target_count = _grow(self._target_count, width, output)
        assert self._target_sum is not None and self._target_count is not None
        self._logit_sum[:width] += output.sum(0)
        known = targets < width  # a label without a logit has no own logit
        index = torch.where(known, targets, 0)
        own = output.gather(1, index.view(-1, 1)).squeeze(1) * known
        self._target_sum.index_add_(0, index, own)
        self._target_count.index_add_(0, index, known.to(output.dtype))
        self._images += len(targets)

    def after_eval(self, strategy: SupervisedTemplate) -> None:
        if self._training or self._images == 0 or not self._classes.experiences:
            self.reset()
            return
        classes = self._classes.seen()
        norms = classifier_weight_norms(strategy.model)
        assert self._logit_sum is not None
        assert self._target_sum is not None and self._target_count is not None
        logit_sum = self._logit_sum.tolist()
        target_sum = self._target_sum.tolist()
        target_count = self._target_count.tolist()
        norm_list = [] if norms is None else norms.tolist()
        nan = float("nan")

        def pick(values: list[float], c: int) -> float:
            return values[c] if c < len(values) else nan

        record = LastLayerRecord(
            experience=self._classes.experiences[-1][0],
            classes=classes,
            weight_norm=[pick(norm_list, c) for c in classes],
            mean_logit=[pick(logit_sum, c) / self._images for c in classes],
            mean_target_logit=[
                pick(target_sum, c) / target_count[c]
                if c < len(target_count) and target_count[c] > 0
                else nan
                for c in classes
            ],
        )
        self.records = [r for r in self.records if r.experience != record.experience]
        self.records.append(record)
        self.reset()

    def state_dict(self) -> dict[str, Any]:
        """Classes seen and records, as plain values (for a checkpoint)."""
        return {
            "classes": self._classes.state_dict(),
            "records": [r.to_dict() for r in self.records],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._classes.load_state_dict(state.get("classes", []))
        self.records = [LastLayerRecord(**r) for r in state.get("records", [])]


def _grow(values: Tensor | None, width: int, like: Tensor) -> Tensor:
    out = like.new_zeros(width)
    if values is not None:
        out[: values.shape[0]] = values
    return out


# ------------------------------------------------------------ old/new accuracy


class OldNewBreakdown(NamedTuple):
    """The old/new-class breakdown of one evaluation (each in [0, 1], or
    NaN when it has no image to count)."""

    old_accuracy: float
    """Accuracy on the images of the old classes (every evaluated class
    that is not new); NaN when there is none."""
    new_accuracy: float
    """Accuracy on the images of the new classes; NaN when there is none."""
    old_to_new: float
    """Share of the old classes' images predicted as one of the new
    classes; NaN when there is no old-class image."""


def old_new_breakdown(confusion: Tensor, new_classes: Iterable[int]) -> OldNewBreakdown:
    """The old/new-class breakdown from confusion counts.

    :param confusion: ``(R, C)`` counts: ``confusion[i, j]`` images of class
        ``i`` predicted as class ``j`` (any device and number type; a
        class ``i >= C`` has no prediction column, so its images are never
        correct).
    :param new_classes: the new class ids; every other class with images is
        old.
    """
    counts = confusion.detach().to("cpu", torch.float64)
    rows, cols = counts.shape
    new = sorted({int(c) for c in new_classes if int(c) >= 0})
    new_row = torch.zeros(rows, dtype=torch.bool)
    new_row[[c for c in new if c < rows]] = True
    new_col = torch.zeros(cols, dtype=torch.bool)
    new_col[[c for c in new if c < cols]] = True
    images = counts.sum(1)
    correct = torch.zeros(rows, dtype=torch.float64)
    correct[: min(rows, cols)] = counts.diagonal()
    old_images = images[~new_row].sum().item()
    new_images = images[new_row].sum().item()
    old_as_new = counts[~new_row][:, new_col].sum().item()

    def ratio(part: float, whole: float) -> float:
        return part / whole if whole > 0 else float("nan")

    return OldNewBreakdown(
        old_accuracy=ratio(correct[~new_row].sum().item(), old_images),
        new_accuracy=ratio(correct[new_row].sum().item(), new_images),
        old_to_new=ratio(old_as_new, old_images),
    )


def _model_classes(strategy: SupervisedTemplate, experience) -> list[int]:
    """The classes of ``experience`` with the ids the strategy's model and
    ``mb_y`` use. Metrics see the original experience (the evaluator hands
    them ``experience.logging()``), so a strategy that relabels class ids
    (:meth:`bdr_avalanche.LUCIR.relabelled`) is asked for its ids."""
    relabelled = getattr(strategy, "relabelled", None)
    if relabelled is not None:
        experience = relabelled(experience)
    return sorted(int(c) for c in experience.classes_in_this_experience)


class OldNewAccuracy(PluginMetric[OldNewBreakdown]):
    """Per evaluation, the accuracy on the old and on the new classes and
    the share of old-class images predicted as a new class, from the
    evaluation the strategy runs (no second pass).

    At every evaluation iteration the prediction is the argmax of
    ``strategy.mb_output`` as the strategy's evaluation leaves it (after
    every plugin's ``after_eval_forward``, e.g. BiC's bias correction, and
    the strategy's masking of classes not learned yet) and the label is
    ``strategy.mb_y``, as for Avalanche's accuracy; the counts of each
    (label, prediction) pair are summed on the device and read once, at
    the end of the evaluation (:func:`old_new_breakdown`).

    The *new* classes are those of the training experience that started
    last (during a periodic evaluation inside ``train``, the one being
    trained; after ``train``, the one just trained); every other evaluated
    class is *old*. A metric that has not seen a training experience (e.g.
    a strategy restored from a checkpoint and evaluated before it trains)
    takes the classes of the last evaluated experience instead. Both are in
    the ids of ``mb_y`` (relabelled for a strategy with a ``relabelled``
    method, such as :class:`~bdr_avalanche.LUCIR`).

    After the protocol's evaluation of the test experiences ``0..t``
    following training experience ``t`` these are the protocol's figures
    (old: the classes of experiences ``0..t-1``; NaN for the old accuracy
    and the old-to-new share when every evaluated class is new).

    The three values are emitted at the end of every evaluation as
    ``OldAcc_Stream/eval_phase/<stream>_stream``,
    ``NewAcc_Stream/eval_phase/<stream>_stream`` and
    ``OldToNew_Stream/eval_phase/<stream>_stream`` (NaN values are left
    out) and kept as :meth:`result`. The counts start afresh at every
    evaluation; only the classes of the last training experience are kept
    between evaluations, and every training experience sets them again, so
    the metric needs no checkpoint state (a resumed run trains before it
    evaluates).
    """

    NAMES = ("OldAcc_Stream", "NewAcc_Stream", "OldToNew_Stream")
    """Metric names of the three values, in :class:`OldNewBreakdown`
    order."""

    def __init__(self) -> None:
        super().__init__()
        self._trained: list[int] | None = None
        self._evaluated: list[int] = []
        self._rows = 0  # labels are below it (from the experiences' classes)
        self._read_labels = False  # rows from the labels (classes unknown)
        self._counts: Tensor | None = None
        self._result: OldNewBreakdown | None = None
        self.new_classes: list[int] = []
        """The new classes of the last evaluation (ids of ``mb_y``)."""

    def __str__(self) -> str:
        return "OldNewAccuracy"

    def result(self) -> OldNewBreakdown | None:
        """The breakdown of the last finished evaluation (``None`` before
        one, or when it had no image)."""
        return self._result

    def reset(self) -> None:
        self._evaluated = []
        self._rows = 0
        self._read_labels = False
        self._counts = None
        self._result = None

    def before_training_exp(self, strategy: SupervisedTemplate) -> None:
        self._trained = _model_classes(strategy, strategy.experience)

    def before_eval(self, strategy: SupervisedTemplate) -> None:
        self.reset()

    def before_eval_exp(self, strategy: SupervisedTemplate) -> None:
        try:
            self._evaluated = _model_classes(strategy, strategy.experience)
        except AttributeError:  # an experience that does not list its classes
            self._evaluated = []
        if self._evaluated:
            self._rows = max(self._rows, self._evaluated[-1] + 1)
        else:
            self._read_labels = True

    @torch.no_grad()
    def after_eval_iteration(self, strategy: SupervisedTemplate) -> None:
        output = strategy.mb_output.detach()
        targets = strategy.mb_y.detach()
        if len(targets) == 0:
            return
        if targets.dim() > 1:  # one-hot or soft labels, as Avalanche's accuracy
            targets = torch.max(targets, 1)[1]
        targets = targets.to(output.device).long()
        if output.dim() > 1:
            predicted = torch.max(output, 1)[1]
            cols = output.shape[1]
        else:  # already labels (reads them once)
            predicted = output.long()
            cols = int(predicted.max()) + 1
        # rows from the experiences' classes: no read of the labels
        rows = self._rows
        if self._read_labels:
            rows = max(rows, int(targets.max()) + 1)
        counts = self._counts
        if counts is None or counts.shape[0] < rows or counts.shape[1] < cols:
            shape = (rows, cols) if counts is None else counts.shape
            grown = output.new_zeros(
                (max(rows, shape[0]), max(cols, shape[1])),
                dtype=_accumulator_dtype(output.device),
            )
            if counts is not None:
                grown[: counts.shape[0], : counts.shape[1]] = counts
            self._counts = counts = grown
        pairs = targets * counts.shape[1] + predicted
        counts.view(-1).index_add_(0, pairs, counts.new_ones(len(pairs)))

    def after_eval(self, strategy: SupervisedTemplate) -> MetricResult:
        counts, self._counts = self._counts, None
        if counts is None:
            self._result = None
            return None
        new = self._trained if self._trained is not None else self._evaluated
        self.new_classes = list(new)
        self._result = old_new_breakdown(counts, new)
        return [
            MetricValue(
                self,
                get_metric_name(name, strategy, add_experience=False, add_task=False),
                value,
                strategy.clock.train_iterations,
            )
            for name, value in zip(self.NAMES, self._result, strict=True)
            if not math.isnan(value)
        ]


# -------------------------------------------------------------------- bundle


class DiagnosticMetrics:
    """The three diagnostics of a run, to add to its evaluator
    (:func:`bdr_avalanche.protocol.make_evaluator`'s ``extra_metrics``):
    :attr:`grad_share` (:class:`MemoryGradShare`), :attr:`prior_trace`
    (:class:`PriorTrace`) and :attr:`last_layer` (:class:`LastLayerAnalysis`).

    :param max_prior_points: most steps of the prior trace kept per
        experience.
    """

    def __init__(self, max_prior_points: int = 512) -> None:
        self.grad_share = MemoryGradShare()
        self.prior_trace = PriorTrace(max_prior_points)
        self.last_layer = LastLayerAnalysis()

    @property
    def metrics(self) -> list[PluginMetric]:
        """The plugin metrics, in the order to give to the evaluator."""
        return [self.grad_share, self.prior_trace, self.last_layer]

    def state_dict(self) -> dict[str, Any]:
        """Everything recorded so far (tensors and plain values)."""
        return {
            "grad_share": self.grad_share.state_dict(),
            "prior_trace": self.prior_trace.state_dict(),
            "last_layer": self.last_layer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (missing parts start empty)."""
        self.grad_share.load_state_dict(state.get("grad_share", {}))
        self.prior_trace.load_state_dict(state.get("prior_trace", {}))
        self.last_layer.load_state_dict(state.get("last_layer", {}))

    def set_seen_experiences(
        self, experiences: Sequence[tuple[int, Iterable[int]]]
    ) -> None:
        """Declare the training experiences already seen, as
        ``(experience id, classes)`` pairs (to resume from a checkpoint that
        has no diagnostics state)."""
        state = [[t, sorted(int(c) for c in classes)] for t, classes in experiences]
        for metric in (self.grad_share, self.prior_trace, self.last_layer):
            metric._classes.load_state_dict(state)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: ``memory_gradient_share`` and ``memory_sample_share``
        (indexed by experience id, one value per epoch; an empty list for an
        experience not recorded) and ``last_layer`` (per experience:
        ``classes``, ``weight_norm``, ``mean_logit``, ``mean_target_logit``;
        NaN as ``None``)."""
        history = {h["experience"]: h for h in self.grad_share.history}
        experiences = range(max(history, default=-1) + 1)
        return {
            "memory_gradient_share": [
                list(history[t]["gradient_share"]) if t in history else []
                for t in experiences
            ],
            "memory_sample_share": [
                list(history[t]["sample_share"]) if t in history else []
                for t in experiences
            ],
            "last_layer": [
                {k: nan_to_none(v) for k, v in r.to_dict().items()}
                for r in sorted(self.last_layer.records, key=lambda r: r.experience)
            ],
        }
