"""The bundle of the three diagnostics of a run.

:class:`DiagnosticMetrics` creates :class:`MemoryGradShare`,
:class:`PriorTrace` and :class:`LastLayerAnalysis` for the experiment
runner, which adds them to the evaluator, saves their state in
checkpoints (:meth:`DiagnosticMetrics.state_dict`) and writes their
JSON-ready :meth:`DiagnosticMetrics.summary` to a run's results.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from avalanche.evaluation import PluginMetric

from .._utils import nan_to_none
from .gradient_share import MemoryGradShare
from .last_layer import LastLayerAnalysis
from .prior_trace import PriorTrace

__all__ = ["DiagnosticMetrics"]


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
