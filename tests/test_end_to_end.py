"""LUCIR + CwD + BDR through Avalanche's train/eval loop and metrics."""

from __future__ import annotations

import numpy as np

from bdr_avalanche import LUCIR
from bdr_avalanche.models import SmallCNN
from bdr_avalanche.params import TrainingParams
from bdr_avalanche.protocol import make_evaluator, train_and_evaluate


def test_lucir_cwd_bdr_end_to_end(benchmark):
    """Three experiences give a consistent accuracy matrix and forgetting."""
    strategy = LUCIR(
        backbone=SmallCNN(in_channels=3, width=8),
        training=TrainingParams(
            lr=0.05, epochs=4, milestones=(3,), batch_size=16, mem_per_class=5
        ),
        cwd=True,
        bdr=True,
        device="cpu",
        evaluator=make_evaluator(),
    )
    results = train_and_evaluate(strategy, benchmark)

    a = results.accuracy_matrix
    assert a.shape == (3, 3)
    assert np.isnan(a[np.triu_indices(3, 1)]).all()
    assert ((a[np.tril_indices(3)] >= 0) & (a[np.tril_indices(3)] <= 1)).all()
    # equal-sized test experiences: seen accuracy is the row mean
    for t in range(3):
        assert np.isclose(results.seen_accuracy[t], np.nanmean(a[t]))
    last = results.metrics[-1]
    assert np.isclose(
        results.forgetting, last["StreamForgetting/eval_phase/test_stream"]
    )
    assert np.isclose(
        results.average_incremental_accuracy, np.mean(results.seen_accuracy)
    )
    # old/new breakdown: consistent with the seen accuracy (equal test sizes)
    assert np.isnan(results.old_accuracy[0]) and np.isnan(results.old_to_new[0])
    assert np.isclose(results.new_accuracy[0], results.seen_accuracy[0])
    for t in (1, 2):
        old, new = results.old_accuracy[t], results.new_accuracy[t]
        assert np.isclose(results.seen_accuracy[t], (t * old + new) / (t + 1))
        assert np.isclose(new, a[t, t])
        assert 0 <= results.old_to_new[t] <= 1 - old + 1e-9
    # easy Gaussian blobs: far above chance (1/6) after three experiences
    assert results.last_accuracy > 0.5
    assert strategy.model.head.num_classes == 6
    assert len(strategy.storage_policy.buffer) == 6 * 5
