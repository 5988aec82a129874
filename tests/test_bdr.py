"""BDR plugin: prior at phase start, momentum updates, train-only adjustment."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from avalanche.models import SimpleMLP
from avalanche.training import Naive
from avalanche.training.plugins import ReplayPlugin
from helpers import make_lucir_bdr
from probe import Probe

from bdr_avalanche import BDRPlugin, HerdingBuffer
from bdr_avalanche.protocol import make_evaluator, train_and_evaluate


def test_adjustment_in_training_not_in_evaluation(benchmark):
    """Training loss is CE(z + pi, y); evaluation loss is plain CE(z, y)."""
    seen = {"train": 0, "eval": 0}

    def train_check(strategy):
        z, y = strategy.mb_output, strategy.mb_y
        prior = strategy.bdr.prior
        expected = F.cross_entropy(z if prior is None else z + prior, y)
        torch.testing.assert_close(strategy.criterion(), expected)
        if prior is not None:
            assert not torch.allclose(strategy.criterion(), F.cross_entropy(z, y))
            seen["train"] += 1

    def eval_check(strategy):
        z, y = strategy.mb_output, strategy.mb_y
        torch.testing.assert_close(strategy.criterion(), F.cross_entropy(z, y))
        seen["eval"] += 1

    probe = Probe(before_backward=train_check, after_eval_forward=eval_check)
    strategy = make_lucir_bdr(probe)
    for t, exp in enumerate(benchmark.train_stream[:2]):
        strategy.train(exp)
        strategy.eval(benchmark.test_stream[: t + 1])
    assert seen["train"] > 0 and seen["eval"] > 0
    assert isinstance(strategy._criterion, torch.nn.CrossEntropyLoss)


def test_bdr_plugs_into_avalanche_naive_with_replay(benchmark):
    """BDRPlugin works on Avalanche's Naive + ReplayPlugin(HerdingBuffer),
    and finds the memory from the ReplayPlugin. Its counts are the labels
    the loss sees in an epoch: 30 of each new class, and, as the
    ReplayDataLoader draws a memory batch of 16 beside each of the 4 data
    batches of 16, 4 whole passes over the memory of 4 exemplars a class,
    16 of each old class."""
    buffer = HerdingBuffer(mem_per_class=4, feature_layer="features")
    bdr = BDRPlugin(feature_layer="features")
    priors = []

    def check(strategy):
        if bdr.prior is not None:
            z, y = strategy.mb_output, strategy.mb_y
            pad = torch.full((z.shape[1] - len(bdr.prior),), math.log(1e-12))
            expected = F.cross_entropy(z + torch.cat([bdr.prior, pad]), y)
            torch.testing.assert_close(strategy.criterion(), expected)
            priors.append(bdr.phase_counts.tolist())

    model = SimpleMLP(num_classes=6, input_size=3 * 8 * 8, hidden_size=32)
    strategy = Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
        train_mb_size=16,
        train_epochs=2,
        eval_mb_size=64,
        plugins=[
            ReplayPlugin(mem_size=buffer.max_size, storage_policy=buffer),
            bdr,
            Probe(before_backward=check),
        ],
        evaluator=make_evaluator(),
        device="cpu",
    )
    results = train_and_evaluate(strategy, benchmark)
    assert priors[0] == [16, 16, 30, 30, 0, 0]
    assert priors[-1] == [16, 16, 16, 16, 30, 30]
    assert sorted(buffer.seen_classes) == list(range(6))
    assert results.accuracy_matrix.shape == (3, 3)
    assert isinstance(strategy._criterion, torch.nn.CrossEntropyLoss)
