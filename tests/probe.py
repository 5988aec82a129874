"""A plugin that lets tests look inside a running strategy."""

from __future__ import annotations

from collections.abc import Callable

from avalanche.core import SupervisedPlugin


class Probe(SupervisedPlugin):
    """Calls ``checks[event](strategy)`` at the named callbacks.

    Added after a strategy's own plugins, so it sees their effects.
    """

    def __init__(self, **checks: Callable) -> None:
        super().__init__()
        self.checks = checks
        self.calls: dict[str, int] = {}

    def _run(self, event: str, strategy) -> None:
        if event in self.checks:
            self.calls[event] = self.calls.get(event, 0) + 1
            self.checks[event](strategy)

    def before_training_exp(self, strategy, **kwargs):
        self._run("before_training_exp", strategy)

    def before_training_epoch(self, strategy, **kwargs):
        self._run("before_training_epoch", strategy)

    def after_training_epoch(self, strategy, **kwargs):
        self._run("after_training_epoch", strategy)

    def before_forward(self, strategy, **kwargs):
        self._run("before_forward", strategy)

    def after_forward(self, strategy, **kwargs):
        self._run("after_forward", strategy)

    def before_backward(self, strategy, **kwargs):
        self._run("before_backward", strategy)

    def after_backward(self, strategy, **kwargs):
        self._run("after_backward", strategy)

    def after_eval_forward(self, strategy, **kwargs):
        self._run("after_eval_forward", strategy)

    def after_training_exp(self, strategy, **kwargs):
        self._run("after_training_exp", strategy)
