"""The class-incremental evaluation protocol of the paper.

After each training experience ``t`` the model is evaluated on the test
data of experiences ``0..t`` (all classes seen so far, task-agnostic). This
gives the accuracy matrix ``A[t, j]`` and the reported figures:

- average incremental accuracy: mean over ``t`` of the accuracy on all test
  images seen so far;
- last accuracy: that accuracy after the last experience;
- forgetting: mean over ``j < T - 1`` of ``A[j, j] - A[T - 1, j]``, the
  definition of Avalanche's ``StreamForgetting``;
- per phase, the accuracy on old and on new classes and the share of
  old-class test images predicted as one of the phase's new classes (the
  bias toward new classes that BDR is meant to reduce).

All of them come from the one evaluation that Avalanche runs with the
strategy's own evaluation path (its forward, its plugins'
``after_eval_forward``, its masking): the accuracies from Avalanche's
metrics, the old/new breakdown from
:class:`~bdr_avalanche.metrics.OldNewAccuracy`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from avalanche.evaluation import PluginMetric
from avalanche.evaluation.metrics import (
    accuracy_metrics,
    forgetting_metrics,
    loss_metrics,
)
from avalanche.logging import BaseLogger
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate

from .metrics import OldNewAccuracy

__all__ = ["IncrementalResults", "make_evaluator", "train_and_evaluate"]

_EXP_ACC = "Top1_Acc_Exp/eval_phase/{stream}/Task000/Exp{exp:03d}"
_STREAM_ACC = "Top1_Acc_Stream/eval_phase/{stream}/Task000"


def _accuracy_keys(stream: str, t: int, metrics: dict) -> tuple[str, list[str]]:
    """The keys of the stream accuracy and of the accuracy of experiences
    ``0..t`` of ``stream``: Avalanche names them with the task (``Task000``)
    when the experiences have task labels, and without otherwise (e.g.
    ``class_incremental_benchmark``'s)."""
    stream_key = _STREAM_ACC.format(stream=stream)
    exp_keys = [_EXP_ACC.format(stream=stream, exp=j) for j in range(t + 1)]
    if stream_key not in metrics:
        stream_key = stream_key.replace("/Task000", "")
        exp_keys = [key.replace("/Task000", "") for key in exp_keys]
    return stream_key, exp_keys


def make_evaluator(
    loggers: Sequence[BaseLogger] = (),
    extra_metrics: Sequence[PluginMetric] = (),
) -> EvaluationPlugin:
    """Avalanche metrics the protocol reads: per-experience and stream
    accuracy and forgetting, the old/new-class breakdown
    (:class:`~bdr_avalanche.metrics.OldNewAccuracy`), plus the training
    accuracy and loss per epoch; ``extra_metrics`` (e.g.
    :class:`bdr_avalanche.metrics.DiagnosticMetrics`' ``metrics``) come
    after them."""
    return EvaluationPlugin(
        accuracy_metrics(epoch=True, experience=True, stream=True),
        forgetting_metrics(experience=True, stream=True),
        loss_metrics(epoch=True),
        OldNewAccuracy(),
        *extra_metrics,
        loggers=list(loggers),
    )


@dataclass
class IncrementalResults:
    """Accuracies (in [0, 1]) of a class-incremental run."""

    accuracy_matrix: np.ndarray
    """``(T, T)``; row ``t``: accuracy on each experience's test data after
    training on experience ``t`` (NaN for experiences not yet seen)."""
    seen_accuracy: list[float]
    """Per phase, accuracy on the test data of all classes seen so far."""
    old_accuracy: list[float] = field(default_factory=list)
    """Per phase, accuracy on the test images of earlier phases' classes
    (NaN in the first phase)."""
    new_accuracy: list[float] = field(default_factory=list)
    """Per phase, accuracy on the test images of the phase's own classes."""
    old_to_new: list[float] = field(default_factory=list)
    """Per phase, share of old-class test images predicted as a class of the
    phase (NaN in the first phase)."""
    metrics: list[dict] = field(default_factory=list)
    """Avalanche's metric values after each evaluation."""

    @property
    def experiences_done(self) -> int:
        return len(self.seen_accuracy)

    def state_dict(self) -> dict[str, Any]:
        """The results as tensors and plain values (for a checkpoint);
        metric values that are not numbers are left out."""
        return {
            "accuracy_matrix": torch.from_numpy(self.accuracy_matrix.copy()),
            "seen_accuracy": list(self.seen_accuracy),
            "old_accuracy": list(self.old_accuracy),
            "new_accuracy": list(self.new_accuracy),
            "old_to_new": list(self.old_to_new),
            "metrics": [
                {k: float(v) for k, v in m.items() if isinstance(v, numbers.Real)}
                for m in self.metrics
            ],
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> IncrementalResults:
        return cls(
            accuracy_matrix=state["accuracy_matrix"].numpy().copy(),
            seen_accuracy=list(state["seen_accuracy"]),
            old_accuracy=list(state["old_accuracy"]),
            new_accuracy=list(state["new_accuracy"]),
            old_to_new=list(state["old_to_new"]),
            metrics=[dict(m) for m in state["metrics"]],
        )

    @property
    def average_incremental_accuracy(self) -> float:
        return float(np.mean(self.seen_accuracy))

    @property
    def last_accuracy(self) -> float:
        return float(self.seen_accuracy[-1])

    @property
    def forgetting(self) -> float:
        a = self.accuracy_matrix
        if len(a) < 2:
            return 0.0
        return float(np.mean(np.diag(a)[:-1] - a[-1, :-1]))


def train_and_evaluate(
    strategy: SupervisedTemplate,
    benchmark,
    progress=None,
    on_experience_end: Callable[[int, IncrementalResults], None] | None = None,
    num_workers: int = 0,
    results: IncrementalResults | None = None,
    **train_kwargs,
) -> IncrementalResults:
    """Train on every experience of ``benchmark.train_stream`` and evaluate
    on the seen part of ``benchmark.test_stream`` after each one.

    To resume a run, pass the ``results`` of its finished experiences (and
    a strategy restored to that point): training goes on with the next
    experience, and the returned results are those of the whole run.

    The strategy's evaluator must compute experience and stream accuracy
    and have an :class:`~bdr_avalanche.metrics.OldNewAccuracy` (see
    :func:`make_evaluator`). ``progress`` (e.g. a ``tqdm`` bar) is
    advanced once per experience; ``on_experience_end(t, results)`` is
    called after experience ``t`` has been evaluated (to save the model,
    for instance). ``num_workers`` is used by the training and evaluation
    data loaders.
    """
    num_exp = len(benchmark.train_stream)
    if results is None:
        results = IncrementalResults(np.full((num_exp, num_exp), np.nan), [])
    elif results.accuracy_matrix.shape != (num_exp, num_exp):
        raise ValueError(
            f"the results to resume are for {len(results.accuracy_matrix)} "
            f"experiences; the stream has {num_exp}"
        )
    if results.experiences_done < num_exp:
        breakdown = _old_new_metric(strategy)
    for t in range(results.experiences_done, num_exp):
        experience = benchmark.train_stream[t]
        strategy.train(
            experience, eval_streams=[], num_workers=num_workers, **train_kwargs
        )
        metrics = strategy.eval(benchmark.test_stream[: t + 1], num_workers=num_workers)
        stream = f"{benchmark.test_stream[t].origin_stream.name}_stream"
        _record(results, t, stream, metrics, breakdown)
        if on_experience_end is not None:
            on_experience_end(t, results)
        if progress is not None:
            progress.update(1)
    return results


def _record(
    results: IncrementalResults,
    t: int,
    stream: str,
    metrics: dict[str, Any],
    breakdown: OldNewAccuracy,
) -> None:
    """Add the evaluation after experience ``t`` (``metrics``, from the
    test ``stream``, and the old/new ``breakdown``) to ``results``."""
    stream_key, exp_keys = _accuracy_keys(stream, t, metrics)
    missing = [k for k in (stream_key, exp_keys[t]) if k not in metrics]
    if missing:
        raise KeyError(
            f"the strategy's evaluator does not report {missing}; build it "
            "with bdr_avalanche.protocol.make_evaluator()"
        )
    results.accuracy_matrix[t, : t + 1] = [metrics[key] for key in exp_keys]
    results.seen_accuracy.append(float(metrics[stream_key]))
    results.metrics.append(dict(metrics))
    values = breakdown.result()
    if values is None:
        raise RuntimeError(
            f"OldNewAccuracy recorded no test image after experience {t}"
        )
    old, new, old_to_new = values
    results.old_accuracy.append(old)
    results.new_accuracy.append(new)
    results.old_to_new.append(old_to_new)


def _old_new_metric(strategy: SupervisedTemplate) -> OldNewAccuracy:
    """The strategy's :class:`~bdr_avalanche.metrics.OldNewAccuracy`."""
    evaluator = getattr(strategy, "evaluator", None)
    for metric in getattr(evaluator, "metrics", ()):
        if isinstance(metric, OldNewAccuracy):
            return metric
    raise ValueError(
        "the strategy's evaluator has no OldNewAccuracy metric, from which the "
        "old/new-class accuracies are read; build it with "
        "bdr_avalanche.protocol.make_evaluator()"
    )
