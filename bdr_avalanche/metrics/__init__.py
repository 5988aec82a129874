r"""Avalanche metrics that make BDR's mechanism visible.

BDR's argument is about the gradient: with replay, the few memory samples
of the old classes contribute little to the classification loss's gradient
next to the many samples of the new classes, and the prior :math:`\pi`
that BDR adds to the logits rebalances that. Three metrics, for any
Avalanche strategy (ours and the baselines), measure it during the
ordinary ``train``/``eval`` loop, without an extra forward or backward
pass:

- :class:`MemoryGradShare` (logged per training epoch as
  ``MemoryGradShare_Epoch/train_phase/...``): the share of the
  cross-entropy's logit-gradient mass that comes from memory samples
  (:func:`memory_gradient_share`);
- :class:`PriorTrace` (records only): BDR's prior per class over the
  training steps of every experience;
- :class:`LastLayerAnalysis` (records only): after each experience, the
  classifier's per-class weight norms and the mean test logit per class,
  accumulated over Avalanche's evaluation of the seen test stream.

:class:`DiagnosticMetrics` bundles the three for the experiment runner
(state for checkpoints, a JSON-ready summary).

:class:`OldNewAccuracy` (logged as ``OldAcc_Stream/eval_phase/...``,
``NewAcc_Stream/...`` and ``OldToNew_Stream/...``) gives the protocol's
old/new-class breakdown from the same evaluation pass: accuracy on the old
and on the new classes and the share of old-class images predicted as a
new class (:func:`old_new_breakdown` of the evaluation's confusion
counts). :func:`bdr_avalanche.protocol.make_evaluator` includes it.

The metrics live in one module per concern: :mod:`.gradient_share`,
:mod:`.prior_trace`, :mod:`.last_layer`, :mod:`.old_new` and
:mod:`.diagnostics`, with the helpers they share (among them the mapping
to the model's class ids) in :mod:`._common`; every public name is
re-exported here.
"""

from .diagnostics import DiagnosticMetrics
from .gradient_share import (
    GradientShareAccumulator,
    MemoryGradShare,
    logit_gradient_mass,
    memory_gradient_share,
)
from .last_layer import LastLayerAnalysis, LastLayerRecord, classifier_weight_norms
from .old_new import OldNewAccuracy, OldNewBreakdown, old_new_breakdown
from .prior_trace import PriorTrace, PriorTraceRecord

__all__ = [
    "DiagnosticMetrics",
    "GradientShareAccumulator",
    "LastLayerAnalysis",
    "LastLayerRecord",
    "MemoryGradShare",
    "OldNewAccuracy",
    "OldNewBreakdown",
    "PriorTrace",
    "PriorTraceRecord",
    "classifier_weight_norms",
    "logit_gradient_mass",
    "memory_gradient_share",
    "old_new_breakdown",
]
