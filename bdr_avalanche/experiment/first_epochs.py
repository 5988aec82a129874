"""The first experience of a baseline, trained once and shared.

For our ``lucir`` base the base-model cache stores a checkpoint after the
first experience (:mod:`.base_cache`). An Avalanche baseline has no
checkpoint of its whole state (its buffer, its teacher, its bias layer);
what it shares is narrower and exact: the outcome of the first
experience's *training epochs*. Everything the strategy does before them
(adapting the data and the model, drawing a validation split) and after
them (updating its memory, copying its teacher, evaluating) still runs,
from the same random state, so a run that reuses the epochs ends with the
accuracy matrix and weights of a run that trained them (a test checks
this for every baseline).

:class:`FirstEpochsCache` is the plugin that does it, added last to the
strategy's plugins (after Avalanche's clock). When the cache holds the
epochs, it sets ``train_epochs`` to 0 for that experience and puts the
model's weights, the random generators, the strategy's clock and the
diagnostics at the state the storing run had after its last epoch. Else
it stores that state after the last epoch. The entry's key is the run's
:func:`~.base_cache.base_settings`, which name the base and every
setting that decides the epochs (BDR, which acts later, is not one of
them: ``replay`` and ``replay+bdr`` share their first experience). The
baselines of :data:`NOT_SHARED` do not share it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from avalanche.core import SupervisedPlugin

from .checkpoint import rng_state, set_rng_state

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

    from ..metrics import DiagnosticMetrics
    from .base_cache import BaseCache

__all__ = ["NOT_SHARED", "FirstEpochsCache"]

NOT_SHARED: dict[str, str] = {
    "icarl": "Avalanche's iCaRL plugin records the input, output and feature "
    "sizes in its first training step (before_forward) and needs them after "
    "the epochs, so skipping them would not give the same run",
}
"""Baselines whose epochs leave state that :class:`FirstEpochsCache` does
not restore, with the reason: they always train their first experience."""


class FirstEpochsCache(SupervisedPlugin):
    """Reuse or store the training epochs of the first experience.

    :param cache: the entry of the run's first experience.
    :param diagnostics: the run's diagnostics, whose training-time records
        are part of the stored state.
    """

    def __init__(self, cache: BaseCache, diagnostics: DiagnosticMetrics) -> None:
        super().__init__()
        self.cache = cache
        self.diagnostics = diagnostics
        self.record: dict[str, Any] = {"reused": False, "cache": None}
        """``results.json``'s ``base_model``: whether the epochs were reused,
        the entry read or written, and the training time stored with it."""
        self._epochs_asked: int | None = None
        self._start = 0.0

    @staticmethod
    def _first(strategy: SupervisedTemplate) -> bool:
        return strategy.clock.train_exp_counter == 0

    def before_training_exp(self, strategy: SupervisedTemplate, **kwargs: Any) -> None:
        """In the first experience, after every other plugin: take the stored
        epochs when there are some."""
        if not self._first(strategy):
            return
        self._start = time.perf_counter()
        state = self.cache.load_entry()
        if state is None:
            return
        self._epochs_asked, strategy.train_epochs = strategy.train_epochs, 0
        strategy.model.load_state_dict(state["model"])
        vars(strategy.clock).update(state["clock"])
        self.diagnostics.load_state_dict(state["diagnostics"])
        set_rng_state(state["rng"])  # last: nothing may draw after it
        self.record = {
            "reused": True,
            "cache": str(self.cache.path),
            "stored_time_s": float(state["time_s"]),
        }

    def after_training_epoch(self, strategy: SupervisedTemplate, **kwargs: Any) -> None:
        """After the first experience's last epoch: store the state."""
        if not self._first(strategy):
            return
        # the clock, an earlier plugin, has counted this epoch
        if strategy.clock.train_exp_epochs < strategy.train_epochs:
            return
        model = {k: v.detach().cpu() for k, v in strategy.model.state_dict().items()}
        state = {
            "model": model,
            "clock": dict(vars(strategy.clock)),
            "diagnostics": self.diagnostics.state_dict(),
            "time_s": time.perf_counter() - self._start,
            "rng": rng_state(),  # last: as the reusing run restores it
        }
        if self.cache.store(state):
            self.record = {"reused": False, "cache": str(self.cache.path)}

    def after_training_exp(self, strategy: SupervisedTemplate, **kwargs: Any) -> None:
        """Give the strategy back its number of epochs."""
        if self._epochs_asked is not None:
            strategy.train_epochs, self._epochs_asked = self._epochs_asked, None
