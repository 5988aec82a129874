"""Replay by concatenating the memory to the experience's training data."""

from __future__ import annotations

from typing import TYPE_CHECKING

from avalanche.training.plugins import SupervisedPlugin
from avalanche.training.storage_policy import ExemplarsBuffer

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["ConcatReplayPlugin"]


# Avalanche is untyped: mypy checks the keyword against object.__init_subclass__
class ConcatReplayPlugin(SupervisedPlugin, supports_distributed=True):  # type: ignore[call-arg]
    """Rehearsal as in iCaRL, LUCIR and BDR: the memory is concatenated to
    the new data and the union is shuffled by the ordinary data loader, so
    old and new samples share each mini-batch in proportion to their counts.

    Avalanche's :class:`~avalanche.training.plugins.ReplayPlugin` instead
    draws a separate, equally sized memory batch at every step, which
    changes the class balance that BDR measures and corrects.

    :param storage_policy: the memory, e.g. a :class:`~bdr_avalanche.HerdingBuffer`;
        it is updated after every training experience.
    """

    def __init__(self, storage_policy: ExemplarsBuffer) -> None:
        super().__init__()
        self.storage_policy = storage_policy

    def after_train_dataset_adaptation(self, strategy: SupervisedTemplate, **kwargs):
        memory = self.storage_policy.buffer
        if len(memory) > 0:
            strategy.adapted_dataset = strategy.adapted_dataset.concat(memory)

    def after_training_exp(self, strategy: SupervisedTemplate, **kwargs):
        self.storage_policy.post_adapt(strategy, strategy.experience)
