"""Stop training on a non-finite loss, or on a cosine scale at or below
zero, instead of training on."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from avalanche.training.plugins import SupervisedPlugin
from torch import Tensor

from .._utils import check_positive_int
from ..distributed import sum_over_ranks
from ..models.cosine import CosineIncrementalClassifier

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = [
    "FiniteLossGuard",
    "NonFiniteLossError",
    "NonPositiveScaleError",
    "step_loss_terms",
]


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite during training (or, for the
    subclass :class:`NonPositiveScaleError`, a cosine scale fell to zero or
    below): training diverged."""


class NonPositiveScaleError(NonFiniteLossError):
    """The learnable scale ``sigma`` of a cosine classifier fell to zero or
    below during training.

    At ``sigma = 0`` every logit is 0; below, the logits rank the classes
    backwards, so accuracy falls to chance or below while the loss stays
    finite. A subclass of :class:`NonFiniteLossError`, so whatever stops on
    a diverged loss (the command line included) stops on it too.
    """


# Avalanche is untyped: mypy checks the keyword against object.__init_subclass__
class FiniteLossGuard(SupervisedPlugin, supports_distributed=True):  # type: ignore[call-arg]
    r"""Raises :class:`NonFiniteLossError`, naming the loss terms and the
    experience, as soon as a training loss term is NaN or infinite; raises
    :class:`NonPositiveScaleError`, naming the experience and the value,
    when the scale :math:`\sigma` of a
    :class:`~bdr_avalanche.models.CosineIncrementalClassifier` in the model
    is zero or negative.

    The terms are the strategy's ``loss_terms()`` when it has that method
    (:class:`~bdr_avalanche.LUCIR` reports the classification loss), else
    its total ``loss``, then those its plugins report with their own
    ``loss_terms()`` (:class:`~bdr_avalanche.LUCIRPlugin`'s less-forget and
    margin-ranking terms, :class:`~bdr_avalanche.CwDPlugin`'s term,
    :class:`~bdr_avalanche.BDRPlugin`'s prior). After each backward pass the
    terms are tested on the device and the result is accumulated there; the
    host reads it, together with the scales' current values, every
    ``check_every`` iterations and at the end of every epoch, so the guard
    adds no host synchronisation to the other steps. At most
    ``check_every - 1`` updates can thus follow the first non-finite value
    before training stops. The scale is learnable and left free, as in LUCIR's reference
    code: a learning rate too high for it can drive it through zero (the
    logits then flip sign), which the check at the end of an epoch always
    sees, whatever ``check_every``.

    :param check_every: iterations between two reads of the flags.
    """

    def __init__(self, check_every: int = 20) -> None:
        super().__init__()
        self.check_every = check_positive_int("check_every", check_every)
        self._flags: dict[str, Tensor] = {}
        self._scales: dict[str, Tensor] = {}

    def before_training_epoch(self, strategy: SupervisedTemplate, **kwargs):
        self._flags = {}
        self._scales = {
            name or "model": module.sigma
            for name, module in strategy.model.named_modules()
            if isinstance(module, CosineIncrementalClassifier)
        }

    def after_backward(self, strategy: SupervisedTemplate, **kwargs):
        for name, value in step_loss_terms(strategy).items():
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
        names = list(self._flags)
        heads = list(self._scales)
        if not names and not heads:
            return
        scales = [self._scales[h].detach().float().reshape(()) for h in heads]
        flags = [self._flags[n] for n in names] + [s <= 0 for s in scales]
        # distributed: every process stops when one finds a bad term or scale
        bad = sum_over_ranks(torch.stack(flags).int())
        parts = [bad.float()] + ([torch.stack(scales).to(bad.device)] if scales else [])
        read = torch.cat(parts).cpu()  # one sync
        flagged = read[: len(flags)].bool().tolist()
        values = read[len(flags) :].tolist()
        where = (
            f"in experience {strategy.experience.current_experience}, epoch "
            f"{strategy.clock.train_exp_epochs + 1}"
        )
        failed = [n for n, b in zip(names, flagged[: len(names)], strict=True) if b]
        if failed:
            raise NonFiniteLossError(
                f"non-finite loss term(s) {', '.join(failed)} {where}; training "
                "stopped. Try a lower learning rate, or full precision if mixed "
                "precision is on"
            )
        for head, flag, value in zip(heads, flagged[len(names) :], values, strict=True):
            if flag:
                raise NonPositiveScaleError(
                    f"the cosine scale sigma of {head!r} fell to {value:.4g} (<= 0) "
                    f"{where}: its logits no longer rank the classes, accuracy "
                    "falls to chance or below; training stopped. The learning "
                    "rate is likely too high for sigma: lower it (or keep sigma "
                    "fixed, sigma.requires_grad_(False))"
                )


def step_loss_terms(strategy: SupervisedTemplate) -> dict[str, Tensor]:
    """The step's loss terms by name: the strategy's (its ``loss_terms()``,
    else its total ``loss``), then each plugin's ``loss_terms()``."""
    own = getattr(strategy, "loss_terms", None)
    terms = dict(own()) if own is not None else {"loss": strategy.loss}
    for plugin in strategy.plugins:
        report = getattr(plugin, "loss_terms", None)
        if report is not None:
            terms.update(report())
    return terms
