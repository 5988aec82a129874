"""Stop training on a non-finite loss instead of training on NaNs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from avalanche.training.plugins import SupervisedPlugin
from torch import Tensor

from .._utils import check_positive_int
from ..distributed import sum_over_ranks

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["FiniteLossGuard", "NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite during training."""


class FiniteLossGuard(SupervisedPlugin, supports_distributed=True):
    """Raises :class:`NonFiniteLossError`, naming the loss terms and the
    experience, as soon as a training loss term is NaN or infinite.

    The terms are the strategy's ``loss_terms()`` when it has that method
    (:class:`~bdr_avalanche.LUCIR` reports the classification loss, LUCIR's
    less-forget and margin-ranking terms, CwD's term and BDR's prior), else
    its total ``loss``. After each backward pass the terms are tested on the
    device and the result is accumulated there; the host reads it every
    ``check_every`` iterations and at the end of every epoch, so the guard
    adds no host synchronisation to the other steps. At most
    ``check_every - 1`` updates can thus follow the first non-finite value
    before training stops.

    :param check_every: iterations between two reads of the flags.
    """

    def __init__(self, check_every: int = 20) -> None:
        super().__init__()
        self.check_every = check_positive_int("check_every", check_every)
        self._flags: dict[str, Tensor] = {}

    def before_training_epoch(self, strategy: SupervisedTemplate, **kwargs):
        self._flags = {}

    def after_backward(self, strategy: SupervisedTemplate, **kwargs):
        terms = (
            strategy.loss_terms()
            if hasattr(strategy, "loss_terms")
            else {"loss": strategy.loss}
        )
        for name, value in terms.items():
            bad = ~torch.isfinite(value.detach()).all()
            previous = self._flags.get(name)
            self._flags[name] = bad if previous is None else previous | bad

    def after_training_iteration(self, strategy: SupervisedTemplate, **kwargs):
        # the clock counts this iteration after the plugins
        if (strategy.clock.train_epoch_iterations + 1) % self.check_every == 0:
            self._check(strategy)

    def after_training_epoch(self, strategy: SupervisedTemplate, **kwargs):
        self._check(strategy)

    def _check(self, strategy: SupervisedTemplate) -> None:
        if not self._flags:
            return
        names = list(self._flags)
        # distributed: every process stops when one finds a bad term
        bad = sum_over_ranks(torch.stack([self._flags[n] for n in names]).int())
        bad = bad.cpu()  # one sync
        if not bad.any():
            return
        failed = [n for n, b in zip(names, bad.tolist(), strict=True) if b]
        raise NonFiniteLossError(
            f"non-finite loss term(s) {', '.join(failed)} in experience "
            f"{strategy.experience.current_experience}, epoch "
            f"{strategy.clock.train_exp_epochs + 1}; training stopped. Try a lower "
            "learning rate, or full precision if mixed precision is on"
        )
