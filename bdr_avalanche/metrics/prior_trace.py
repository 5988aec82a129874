r"""BDR's prior :math:`\pi` per class over the training steps.

:class:`PriorTrace` records the prior the loss adds at every training step
of each experience in which BDR is active (kept on the device, thinned to
a bounded number of evenly spaced steps, moved to the CPU once per
experience) as :class:`PriorTraceRecord`\ s, to show how BDR's prior
separates old and new classes as training goes on. It emits no value;
the experiment's report draws the traces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from avalanche.evaluation import PluginMetric
from torch import Tensor

from .._utils import check_positive_int
from ._common import (
    ExperienceClasses,
    LogitPrior,
    current_experience_id,
    current_model_classes,
    find_logit_prior,
)

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["PriorTrace", "PriorTraceRecord"]


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
        self._classes = ExperienceClasses()
        self._bdr: LogitPrior | None = None
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
        self._bdr = find_logit_prior(strategy)
        self._experience = current_experience_id(strategy)
        self._new = current_model_classes(strategy)

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
