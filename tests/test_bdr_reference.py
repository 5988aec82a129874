"""BDR's statistics against a transcription of the paper's code.

``ReferenceBDR`` (:mod:`reference.bdr_plugin`, whose docstring says what
it restates of ``approach/BDR.py`` and how) follows the paper's
``BDR_loss`` step by step; these tests feed it and the plugin the same
features and compare the prior, the centres and the scatters.
"""

from __future__ import annotations

import types

import pytest
import torch
from helpers import AddConstant, make_benchmark, make_lucir_bdr
from probe import Probe
from reference.bdr_plugin import ReferenceBDR
from torch.testing import assert_close

from bdr_avalanche import BDRPlugin
from bdr_avalanche.models import SmallCNN


def _phase_batches(counts, batch_size, epochs, dim, gen):
    """Features of a phase (fixed per sample, as Gaussian blobs), shuffled
    into batches each epoch."""
    labels = torch.arange(len(counts)).repeat_interleave(torch.tensor(counts))
    centres = torch.randn(len(counts), dim, generator=gen) * 2.0
    spread = torch.linspace(0.5, 2.0, len(counts))[labels, None]
    features = centres[labels] + spread * torch.randn(len(labels), dim, generator=gen)
    steps = []
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=gen)
        for i in range(0, len(labels), batch_size):
            index = order[i : i + batch_size]
            steps.append((features[index], labels[index]))
    return features, labels, steps


def _install(plugin: BDRPlugin, ref: ReferenceBDR) -> None:
    """Give the plugin the reference's phase-start state."""
    plugin.phase_counts = torch.tensor(ref.counts, dtype=torch.float32)
    plugin.centres = torch.tensor(ref.centres, dtype=torch.float32)
    plugin.scatters = torch.tensor(ref.scatters, dtype=torch.float32)
    plugin.prior = torch.tensor(ref.pi, dtype=torch.float32)


def _step(plugin: BDRPlugin, features, labels) -> None:
    plugin._features.features = features
    plugin.after_forward(types.SimpleNamespace(mb_y=labels))


@pytest.mark.parametrize("seed", [0, 1])
def test_plugin_follows_the_reference_over_a_whole_phase(seed):
    """Old classes (4 samples each) appear 0, 1 or 2 times per batch, new
    ones (40 each) 5 or more: 3 epochs of steps, prior and statistics
    compared after every step."""
    gen = torch.Generator().manual_seed(seed)
    counts = [4, 4, 4, 4, 4, 40, 40]
    features, labels, steps = _phase_batches(counts, 16, 3, 5, gen)
    ref = ReferenceBDR(m1=0.7, m2=0.6, momentum=0.9, tau=1.5)
    ref.initialize([(features, labels)], [(features, labels)])
    plugin = BDRPlugin(m1=0.7, m2=0.6, momentum=0.9, tau=1.5)
    _install(plugin, ref)
    seen_b = set()
    for f, y in steps:
        seen_b.update(int((y == c).sum()) for c in range(len(counts)))
        expected = ref.momentum_update(f, y)
        _step(plugin, f, y)
        assert_close(
            plugin.prior.double(),
            torch.tensor(expected, dtype=torch.float64),
            atol=2e-5,
            rtol=0,
        )
    assert {1, 2}.issubset(seen_b) and max(seen_b) >= 5
    assert_close(
        plugin.centres.double(),
        torch.tensor(ref.centres, dtype=torch.float64),
        atol=1e-4,
        rtol=1e-5,
    )
    assert_close(
        plugin.scatters.double(),
        torch.tensor(ref.scatters, dtype=torch.float64),
        rtol=1e-4,
        atol=0,
    )


def test_single_sample_moves_the_centre_but_not_the_scatter():
    """b = 1: the centre is blended (N = 3: 3/4 stored + 1/4 sample), the
    scatter is kept; the other class (b = 2) blends both about the updated
    centre."""
    plugin = BDRPlugin(m1=0.5, m2=0.5, momentum=0.5)
    plugin.phase_counts = torch.tensor([3.0, 2.0])
    plugin.centres = torch.tensor([[0.0], [0.0]])
    plugin.scatters = torch.tensor([1.0, 1.0])
    plugin.prior = torch.zeros(2)
    _step(plugin, torch.tensor([[4.0], [1.0], [3.0]]), torch.tensor([0, 1, 1]))
    # class 0: centre 3/4 * 0 + 1/4 * 4 = 1; scatter unchanged
    # class 1: centre 1/2 * 0 + 1/2 * 2 = 1; batch scatter about 1:
    # ((1-1)^2 + (3-1)^2) / 2 = 2 (about the batch mean 2 it would be 1);
    # scatter 1/2 * 1 + 1/2 * 2 = 1.5
    assert_close(plugin.centres, torch.tensor([[1.0], [1.0]]))
    assert_close(plugin.scatters, torch.tensor([1.0, 1.5]))


def test_reference_scoping_slip_changes_the_scatters():
    """The transcription's ``slip`` switch is live: with two classes of
    different weights in a batch, the last-class weights give another
    scatter than per-class weights (so the difference we knowingly keep is
    a real one)."""
    gen = torch.Generator().manual_seed(0)
    features, labels, steps = _phase_batches([4, 40], 8, 3, 3, gen)
    refs = [ReferenceBDR(0.8, 0.8, 0.99, 1.0, slip=s) for s in (False, True)]
    for ref in refs:
        ref.initialize([(features, labels)], [(features, labels)])
        for f, y in steps:
            ref.momentum_update(f, y)
    assert (
        max(abs(a - b) for a, b in zip(*(r.scatters for r in refs), strict=True)) > 1e-6
    )


class _StopTraining(Exception):
    pass


class _ModeSpy(torch.nn.Module):
    """Records the mode and the inputs the wrapped backbone sees."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.out_dim = inner.out_dim
        self.calls: list[tuple[bool, torch.Tensor]] = []

    @property
    def last_relu(self) -> bool:
        return self.inner.last_relu

    @last_relu.setter
    def last_relu(self, value: bool) -> None:
        self.inner.last_relu = value

    def forward(self, x):
        self.calls.append((self.training, x.detach().clone()))
        return self.inner(x)


def test_phase_start_measures_augmented_training_data_in_eval_mode():
    """At the start of experience 1 the plugin's statistics are the
    reference's ``initialize`` over the training batches (new data plus the
    memory, with the *training* transform, which here adds 3 to every
    pixel), computed with the model in eval mode (BatchNorm's running
    statistics: train mode would give other features), in two passes."""
    benchmark = make_benchmark(train_transform=AddConstant(3.0))
    spy = _ModeSpy(SmallCNN(in_channels=3, width=8))
    captured = {}

    def at_start(strategy):
        if strategy.clock.train_exp_counter == 0:
            spy.calls.clear()
            return
        bdr = strategy.bdr
        captured.update(
            counts=bdr.phase_counts.clone(),
            centres=bdr.centres.clone(),
            scatters=bdr.scatters.clone(),
            prior=bdr.prior.clone(),
            calls=list(spy.calls),
            data=strategy.adapted_dataset,
            model=strategy.model,
        )
        raise _StopTraining

    # the phase starts at the first epoch, once every plugin set up the loader
    strategy = make_lucir_bdr(Probe(before_training_epoch=at_start), backbone=spy)
    strategy.train(benchmark.train_stream[0])
    spy.calls.clear()  # herding's extraction after experience 0
    with pytest.raises(_StopTraining):
        strategy.train(benchmark.train_stream[1])

    calls = captured["calls"]
    n = len(captured["data"])  # new data (2 x 30) plus memory (2 x 5)
    assert n == 70
    assert sum(len(x) for _, x in calls) == 2 * n  # two passes
    assert not any(training for training, _ in calls)  # eval mode
    # the inputs are the training transform's (eval: no shift)
    raw = captured["data"].eval()
    raw_x = torch.stack([raw[i][0] for i in range(n)])
    seen = torch.cat([x for _, x in calls[: len(calls) // 2]])
    assert_close(
        torch.sort(seen.flatten(1).sum(1)).values,
        torch.sort((raw_x + 3.0).flatten(1).sum(1)).values,
    )

    # the reference over the same data: the training transform is
    # deterministic here, so both passes see the same features
    data = captured["data"].train()
    x = torch.stack([data[i][0] for i in range(n)])
    y = torch.tensor([data[i][1] for i in range(n)])
    model = captured["model"].eval()
    with torch.no_grad():
        everything = [(model.backbone(x).double(), y)]
    ref = ReferenceBDR(m1=0.7, m2=0.6, momentum=0.9, tau=1.5)
    expected_prior = ref.initialize(everything, everything)
    assert captured["counts"].tolist() == [5, 5, 30, 30]
    assert_close(captured["counts"].double(), torch.tensor(ref.counts).double())
    assert_close(
        captured["centres"].double(),
        torch.tensor(ref.centres, dtype=torch.float64),
        atol=1e-5,
        rtol=1e-5,
    )
    assert_close(
        captured["scatters"].double(),
        torch.tensor(ref.scatters, dtype=torch.float64),
        atol=1e-5,
        rtol=1e-4,
    )
    assert_close(
        captured["prior"].double(),
        torch.tensor(expected_prior, dtype=torch.float64),
        atol=1e-5,
        rtol=1e-5,
    )
