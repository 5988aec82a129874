"""BDR plugin: prior at phase start, momentum updates, train-only adjustment."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from avalanche.models import SimpleMLP
from avalanche.training import Naive
from avalanche.training.plugins import ReplayPlugin
from conftest import AddConstant, make_benchmark
from probe import Probe

from bdr_avalanche import LUCIR, BDRPlugin, HerdingBuffer
from bdr_avalanche.models import SmallCNN
from bdr_avalanche.protocol import make_evaluator, train_and_evaluate


def reference_prior(counts, scatters, m, tau):
    """The formula of ALGORITHMS.md, class by class."""
    total = sum(counts)
    inv = [
        1.0 / max(v, 1e-12) if n > 0 else 0.0
        for n, v in zip(counts, scatters, strict=True)
    ]
    psi = [n / total for n in counts]
    omega = [w / sum(inv) for w in inv]
    return torch.tensor(
        [
            math.log((m * p + (1 - m) * o) ** tau + 1e-12)
            for p, o in zip(psi, omega, strict=True)
        ]
    )


def class_scatter(features, labels, num_classes):
    """Mean squared distance to the class mean, by a loop over classes."""
    out = []
    for c in range(num_classes):
        f = features[labels == c].double()
        out.append(((f - f.mean(0)) ** 2).sum(1).mean().item() if len(f) else 0.0)
    return out


def make_lucir_bdr(*plugins, **kwargs) -> LUCIR:
    return LUCIR(
        backbone=SmallCNN(in_channels=3, width=8),
        train_epochs=1,
        train_mb_size=16,
        eval_mb_size=64,
        mem_per_class=5,
        bdr=True,
        m1=0.7,
        m2=0.6,
        bdr_momentum=0.9,
        tau=1.5,
        device="cpu",
        plugins=list(plugins),
        evaluator=make_evaluator(),
        **kwargs,
    )


def test_prior_is_zero_first_then_matches_formula():
    """No prior in experience 0; at the start of t > 0 it is pi(m1), measured
    with the eval transform (the training one here shifts every pixel)."""
    benchmark = make_benchmark(train_transform=AddConstant(3.0))
    starts = []

    def at_start(strategy):
        bdr = strategy.bdr
        if strategy.clock.train_exp_counter == 0:
            assert bdr.prior is None
            starts.append(None)
            return
        data = strategy.adapted_dataset.eval()
        x = torch.stack([data[i][0] for i in range(len(data))])
        y = torch.tensor([data[i][1] for i in range(len(data))])
        strategy.model.eval()
        with torch.no_grad():
            f = strategy.model.backbone(x)
        strategy.model.train()
        k = int(y.max()) + 1
        counts = [int((y == c).sum()) for c in range(k)]
        expected = reference_prior(counts, class_scatter(f, y, k), m=0.7, tau=1.5)
        torch.testing.assert_close(
            bdr.prior.double(), expected.double(), atol=1e-4, rtol=1e-4
        )
        starts.append(counts)

    strategy = make_lucir_bdr(Probe(before_training_exp=at_start))
    for exp in benchmark.train_stream:
        strategy.train(exp)
    # memory of 5 per old class, 30 per new class
    assert starts == [None, [5, 5, 30, 30], [5, 5, 5, 5, 30, 30]]


def test_prior_follows_batches_with_momentum(benchmark):
    """Each step blends class scatters by N/(N+b) and moves pi toward pi(m2)."""
    state = {}
    checked = []

    def attach(strategy):
        def hook(module, inputs, output):
            state["features"] = output.detach()

        strategy.model.backbone.register_forward_hook(hook)

    def before(strategy):
        bdr = strategy.bdr
        if bdr.prior is not None:
            state.update(prior=bdr.prior.clone(), scatters=bdr.scatters.clone())

    def after(strategy):
        bdr = strategy.bdr
        if bdr.prior is None:
            return
        counts = bdr.phase_counts.tolist()
        k = len(counts)
        y, f = strategy.mb_y, state["features"]
        batch_scatter = class_scatter(f, y, k)
        scatters = state["scatters"].tolist()
        for c in range(k):
            b = int((y == c).sum())
            if b >= 2:
                w = b / (counts[c] + b)
                scatters[c] = (1 - w) * scatters[c] + w * batch_scatter[c]
        torch.testing.assert_close(
            bdr.scatters.double(),
            torch.tensor(scatters, dtype=torch.float64),
            atol=1e-5,
            rtol=1e-4,
        )
        estimate = reference_prior(counts, scatters, m=0.6, tau=1.5)
        expected = 0.9 * state["prior"].double() + 0.1 * estimate.double()
        torch.testing.assert_close(bdr.prior.double(), expected, atol=1e-4, rtol=1e-4)
        assert not torch.equal(bdr.prior, state["prior"])
        checked.append(True)

    probe = Probe(
        before_training_exp=attach, before_forward=before, after_forward=after
    )
    strategy = make_lucir_bdr(probe)
    for exp in benchmark.train_stream[:2]:
        strategy.train(exp)
    assert len(checked) == 5  # ceil(70 / 16) steps of experience 1


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
    """BDRPlugin works on Avalanche's Naive + ReplayPlugin(HerdingBuffer)."""
    buffer = HerdingBuffer(mem_per_class=4, feature_layer="features")
    bdr = BDRPlugin(feature_layer="features", memory=buffer)
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
    assert priors[0] == [4, 4, 30, 30] and priors[-1] == [4, 4, 4, 4, 30, 30]
    assert sorted(buffer.seen_classes) == list(range(6))
    assert results.accuracy_matrix.shape == (3, 3)
    assert isinstance(strategy._criterion, torch.nn.CrossEntropyLoss)
