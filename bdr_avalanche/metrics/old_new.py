"""The protocol's old/new-class breakdown of an evaluation.

:class:`OldNewAccuracy` (logged as ``OldAcc_Stream/eval_phase/...``,
``NewAcc_Stream/...`` and ``OldToNew_Stream/...``) gives, from the
evaluation the strategy runs, the accuracy on the old and on the new
classes and the share of old-class images predicted as a new class:
:func:`old_new_breakdown` of the evaluation's confusion counts, as an
:class:`OldNewBreakdown`. :func:`bdr_avalanche.protocol.make_evaluator`
includes it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

import torch
from avalanche.evaluation import PluginMetric
from avalanche.evaluation.metric_results import MetricResult, MetricValue
from avalanche.evaluation.metric_utils import get_metric_name
from torch import Tensor

from ._common import accumulator_dtype, model_classes

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["OldNewAccuracy", "OldNewBreakdown", "old_new_breakdown"]


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
        self._trained = model_classes(strategy, strategy.experience)

    def before_eval(self, strategy: SupervisedTemplate) -> None:
        self.reset()

    def before_eval_exp(self, strategy: SupervisedTemplate) -> None:
        try:
            self._evaluated = model_classes(strategy, strategy.experience)
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
                dtype=accumulator_dtype(output.device),
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
