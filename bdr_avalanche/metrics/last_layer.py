r"""The classifier after each training experience.

:func:`classifier_weight_norms` finds a model's classifier and gives the
norm of each class's weight row; :class:`LastLayerAnalysis` records, after
each training experience, those norms and the mean evaluation logit per
class (accumulated over Avalanche's own evaluation of the seen test
stream, no second pass) as :class:`LastLayerRecord`\ s: the classifier's
bias towards the new classes, which BDR's prior is meant to counter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from avalanche.evaluation import PluginMetric
from avalanche.models import IncrementalClassifier
from torch import Tensor, nn

from ..models.cosine import CosineIncrementalClassifier
from ._common import (
    ExperienceClasses,
    accumulator_dtype,
    current_experience_id,
    current_model_classes,
)

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["LastLayerAnalysis", "LastLayerRecord", "classifier_weight_norms"]


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
        self._classes = ExperienceClasses()
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
        self._classes.add(
            current_experience_id(strategy), current_model_classes(strategy)
        )

    def after_training(self, strategy: SupervisedTemplate) -> None:
        self._training = False

    def before_eval(self, strategy: SupervisedTemplate) -> None:
        self.reset()

    @torch.no_grad()
    def after_eval_iteration(self, strategy: SupervisedTemplate) -> None:
        if self._training:
            return
        output = strategy.mb_output.detach()
        output = output.to(accumulator_dtype(output.device))
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
