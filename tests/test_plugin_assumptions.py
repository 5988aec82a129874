"""BDR and CwD where their assumptions do not hold by themselves.

- BDR's prior is a logit adjustment for a softmax cross-entropy: any other
  criterion is refused before training, unless the user says it is one.
- Online streams (``split_online_stream``): CwD acts during every
  mini-experience of the first experience of origin, BDR from the second
  on; without task boundaries both refuse before training.
- BDR's ``psi`` (``phase_counts``) is the per-epoch number of labels of
  each class that enter the cross-entropies, which these tests record step
  by step: with a memory concatenated to the data it is the data's class
  count, with a memory batched separately (``ReplayPlugin``, ER-ACE, DER)
  memory samples enter the loss several times an epoch.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from avalanche.benchmarks.scenarios.online import split_online_stream
from avalanche.models import SimpleMLP
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin
from avalanche.training.supervised import DER, ER_ACE, Naive
from helpers import make_benchmark, make_lucir_bdr
from probe import Probe
from torch import nn

from bdr_avalanche import BDRPlugin, ConcatReplayPlugin, CwDPlugin, HerdingBuffer
from bdr_avalanche.baselines.templates import FastNaive
from bdr_avalanche.plugins import IncompatibleStrategyError
from bdr_avalanche.plugins._stream import PhaseTracker
from bdr_avalanche.training.augment import BatchAugment

BATCH = 10
LAYER = "features"


def mlp() -> SimpleMLP:
    return SimpleMLP(num_classes=4, input_size=3 * 8 * 8, hidden_size=16, drop_rate=0)


def naive(model, plugins, criterion=None, epochs=1, batch=BATCH, cls=Naive, **kwargs):
    return cls(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
        criterion=nn.CrossEntropyLoss() if criterion is None else criterion,
        train_mb_size=batch,
        train_epochs=epochs,
        eval_mb_size=60,
        device="cpu",
        plugins=plugins,
        evaluator=EvaluationPlugin(loggers=[]),
        **kwargs,
    )


@pytest.fixture
def stream():
    RNGManager.set_random_seeds(0)
    return make_benchmark(num_classes=4).train_stream


def mse_onehot(logits, targets):
    return F.mse_loss(logits, F.one_hot(targets, logits.shape[1]).float())


# -- any criterion gets the prior ------------------------------------------


@pytest.mark.parametrize(
    "criterion, name",
    [
        (mse_onehot, "mse_onehot"),
        (F.multi_margin_loss, "multi_margin_loss"),
        (nn.NLLLoss(), "NLLLoss"),
        (nn.CrossEntropyLoss(weight=torch.ones(4)), "weight"),
    ],
)
def test_a_loss_that_is_not_a_softmax_cross_entropy_is_refused(stream, criterion, name):
    bdr = BDRPlugin(feature_layer=LAYER)
    strategy = naive(mlp(), [ReplayPlugin(mem_size=20), bdr], criterion)
    with pytest.raises(IncompatibleStrategyError) as error:
        strategy.train(stream[0])
    message = str(error.value)
    assert "\n" not in message
    assert name in message and "assume_softmax_ce=True" in message
    assert strategy.clock.train_iterations == 0


def test_ace_criterion_replaced_is_refused(stream):
    model = mlp()
    strategy = ER_ACE(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
        mem_size=20,
        batch_size_mem=5,
        train_mb_size=BATCH,
        device="cpu",
        plugins=[BDRPlugin(feature_layer=LAYER)],
        evaluator=EvaluationPlugin(loggers=[]),
    )
    strategy.ace_criterion = lambda out, y, out_buf, y_buf: mse_onehot(out, y)
    with pytest.raises(IncompatibleStrategyError, match="ace_criterion"):
        strategy.train(stream[0])
    assert strategy.clock.train_iterations == 0


@pytest.mark.parametrize("opt_in", [False, True])
def test_label_smoothing_and_the_opt_in_train_with_the_prior(stream, opt_in):
    """A cross-entropy with label smoothing is still a softmax
    cross-entropy; with ``assume_softmax_ce`` the user's own loss gets the
    prior added to its logits."""
    criterion = mse_onehot if opt_in else nn.CrossEntropyLoss(label_smoothing=0.1)
    bdr = BDRPlugin(feature_layer=LAYER, assume_softmax_ce=opt_in)
    steps = []

    def check(strategy):
        if bdr.prior is not None:
            z, y = strategy.mb_output, strategy.mb_y
            torch.testing.assert_close(
                strategy.criterion(), criterion(z + bdr.prior, y)
            )
            steps.append(1)

    strategy = naive(
        mlp(), [ReplayPlugin(mem_size=20), bdr, Probe(before_backward=check)], criterion
    )
    strategy.train(stream[0])
    strategy.train(stream[1])
    assert len(steps) == 6


# -- online streams -------------------------------------------------------


def _online(stream, boundaries: bool):
    return split_online_stream(
        stream, experience_size=13, access_task_boundaries=boundaries, seed=0
    )


def test_online_stream_cwd_in_all_of_origin_0_and_bdr_from_origin_1(stream):
    cwd = CwDPlugin(feature_layer=LAYER)
    bdr = BDRPlugin(feature_layer=LAYER)
    steps = {"cwd": [], "bdr": [], "all": []}

    def before_forward(strategy):
        cwd.last_loss = None

    def before_backward(strategy):
        origin = strategy.experience.origin_experience.current_experience
        steps["all"].append(origin)
        if cwd.last_loss is not None:
            steps["cwd"].append(origin)
        if bdr.prior is not None:
            steps["bdr"].append(origin)

    probe = Probe(before_forward=before_forward, before_backward=before_backward)
    strategy = naive(mlp(), [ReplayPlugin(mem_size=20), cwd, bdr, probe])
    for experience in _online(stream, boundaries=True):
        strategy.train(experience)
    # 2 origins x 60 samples, mini-experiences of 13, 13, 13, 13, 8 samples,
    # batches of 10: 9 steps per origin
    assert steps["all"] == [0] * 9 + [1] * 9
    assert steps["cwd"] == [0] * 9
    assert steps["bdr"] == [1] * 9


@pytest.mark.parametrize("name", ["CwDPlugin", "BDRPlugin"])
def test_online_stream_without_task_boundaries_is_refused(stream, name):
    plugin = (
        CwDPlugin(feature_layer=LAYER)
        if name == "CwDPlugin"
        else BDRPlugin(feature_layer=LAYER)
    )
    strategy = naive(mlp(), [ReplayPlugin(mem_size=20), plugin])
    first = next(iter(_online(stream, boundaries=False)))
    with pytest.raises(ValueError) as error:
        strategy.train(first)
    message = str(error.value)
    assert "\n" not in message
    assert name in message and "access_task_boundaries=True" in message
    assert strategy.clock.train_iterations == 0


# -- psi: the labels that enter the loss ------------------------------------


class LabelRecorder(Probe):
    """Every label that enters the strategy's cross-entropies in
    experience 1 (the data batch and, for ER-ACE, its buffer batch; DER's
    and the ReplayPlugin's memory samples are part of ``mb_y``), and BDR's
    counts at the first step."""

    def __init__(self, bdr: BDRPlugin, num_classes: int = 4) -> None:
        super().__init__(before_backward=self._record)
        self.bdr = bdr
        self.labels = torch.zeros(num_classes, dtype=torch.float64)
        self.counts = None

    def _record(self, strategy) -> None:
        if strategy.clock.train_exp_counter != 1:
            return
        if self.counts is None:
            self.counts = self.bdr.phase_counts.double().clone()
        labels = [strategy.mb_y]
        if isinstance(strategy, ER_ACE) and strategy.replay_loader is not None:
            labels.append(strategy.mb_buffer_y)
        for y in labels:
            for label in y.tolist():
                self.labels[label] += 1


def _buffer_strategy(cls, recorder_bdr, epochs, **kwargs):
    model = mlp()
    recorder = LabelRecorder(recorder_bdr)
    strategy = cls(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
        criterion=nn.CrossEntropyLoss(),
        train_mb_size=BATCH,
        train_epochs=epochs,
        eval_mb_size=60,
        device="cpu",
        plugins=[recorder_bdr, recorder],
        evaluator=EvaluationPlugin(loggers=[]),
        **kwargs,
    )
    return strategy, recorder


def _build(kind: str, epochs: int):
    bdr = BDRPlugin(feature_layer=LAYER)
    if kind == "er_ace":
        # a buffer of 4 classes x 5 (the current classes included), batches
        # of 5 drawn by a cycling loader: 2 epochs x 6 steps = 3 passes
        return _buffer_strategy(ER_ACE, bdr, epochs, mem_size=20, batch_size_mem=5)
    if kind == "der":
        return _buffer_strategy(
            DER, bdr, epochs, mem_size=20, batch_size_mem=5, beta=0.5
        )
    recorder = LabelRecorder(bdr)
    if kind == "concat":
        memory = ConcatReplayPlugin(HerdingBuffer(mem_per_class=5, feature_layer=LAYER))
    else:  # 20 samples of experience 0, batches of 10: 6 steps = 3 passes
        memory = ReplayPlugin(mem_size=20)
    if kind == "replay_plugin_device":  # the fast input path's device loaders
        speed = {
            "cls": FastNaive,
            "batch_augment": BatchAugment((0.0,) * 3, (1.0,) * 3),
        }
    else:
        speed = {}
    return naive(mlp(), [memory, bdr, recorder], epochs=epochs, **speed), recorder


@pytest.mark.parametrize(
    "kind", ["concat", "replay_plugin", "replay_plugin_device", "er_ace", "der"]
)
def test_psi_counts_the_labels_the_loss_sees(stream, kind):
    """Over 2 epochs of experience 1 whose memory draws are whole passes,
    the per-epoch class counts behind ``psi`` equal the labels recorded at
    every step."""
    epochs = 2
    strategy, recorder = _build(kind, epochs)
    strategy.train(stream[0])
    strategy.train(stream[1])
    per_epoch = recorder.labels / epochs
    assert per_epoch[:2].min() > 0  # old classes entered the loss
    torch.testing.assert_close(recorder.counts, per_epoch)
    torch.testing.assert_close(
        recorder.counts / recorder.counts.sum(), per_epoch / per_epoch.sum()
    )


def test_psi_with_random_memory_draws_matches_the_recorded_frequencies(stream):
    """Batches of 12 new samples (5 steps an epoch) with memory batches of 8
    from a memory of 20 (3 batches a pass): each epoch the memory makes one
    whole pass and then 2 batches, 16 samples drawn without replacement
    from a fresh permutation. Over 30 epochs the recorded per-epoch count
    of an old class k (``M_k`` samples in the memory) is ``M_k`` plus the
    mean of 30 hypergeometric draws (N = 20, K = M_k, n = 16), whose
    standard deviation is at most ``sqrt(16 * 1/4 * 4/19) / sqrt(30)``,
    0.17: the tolerance of 1.0 is about 6 of them. (An old class's count
    if each memory sample were counted once would be ``M_k``, about 10,
    instead of about 18.)"""
    epochs = 30
    bdr = BDRPlugin(feature_layer=LAYER)
    recorder = LabelRecorder(bdr)
    replay = ReplayPlugin(mem_size=20, batch_size_mem=8)
    strategy = naive(mlp(), [replay, bdr, recorder], epochs=epochs, batch=12)
    strategy.train(stream[0])
    memory = torch.tensor(list(replay.storage_policy.buffer.targets))
    strategy.train(stream[1])
    per_epoch = recorder.labels / epochs
    sd = math.sqrt(16 * 0.25 * 4 / 19) / math.sqrt(epochs)
    assert 1.0 > 5 * sd
    torch.testing.assert_close(recorder.counts, per_epoch, atol=1.0, rtol=0)
    torch.testing.assert_close(per_epoch[2:], torch.full((2,), 30.0).double())
    for k in (0, 1):  # the memory's share of the old class, drawn 1.8 times
        assert abs(per_epoch[k] - 1.8 * (memory == k).sum()) < 1.0


def test_er_ace_measures_each_sample_once(stream):
    """ER-ACE's buffer already holds samples of the current classes, copies
    of the new data: the phase-start centres and scatters are those of the
    distinct samples (new data plus the buffer's old classes), computed
    here from the inputs."""
    bdr = BDRPlugin(feature_layer=LAYER)
    captured = {}

    def at_first_step(strategy):
        if strategy.clock.train_exp_counter != 1 or captured:
            return
        data = strategy.adapted_dataset
        buffer = strategy.storage_policy.buffer
        samples = {}
        for dataset in (data, buffer):
            for i in range(len(dataset)):
                x, y = dataset[i][0], int(dataset[i][1])
                samples[x.numpy().tobytes()] = (x, y)
        assert len(samples) == len(data) + 10  # 2 old classes x 5
        x = torch.stack([x for x, _ in samples.values()])
        with torch.no_grad():  # no dropout, no BatchNorm: train mode is eval's
            features = strategy.model.features(x.flatten(1))
        captured.update(
            features=features.double(),
            y=torch.tensor([y for _, y in samples.values()]),
            # the phase-start statistics (this step's update comes after)
            centres=bdr.centres.clone(),
            scatters=bdr.scatters.clone(),
        )

    probe = Probe(before_forward=at_first_step)
    model = mlp()
    strategy = ER_ACE(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
        mem_size=20,
        batch_size_mem=5,
        train_mb_size=BATCH,
        eval_mb_size=60,
        device="cpu",
        plugins=[bdr, probe],
        evaluator=EvaluationPlugin(loggers=[]),
    )
    strategy.train(stream[0])
    strategy.train(stream[1])
    features, y = captured["features"], captured["y"]
    for k in range(4):
        f = features[y == k]
        centre = f.mean(0)
        scatter = (f - centre).pow(2).sum(1).mean()
        torch.testing.assert_close(
            captured["centres"][k].double(), centre, atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(
            captured["scatters"][k].double(), scatter, atol=1e-5, rtol=1e-4
        )


def test_psi_without_shuffling_counts_the_batches_drawn(stream):
    """``train(..., shuffle=False)``: the memory's unfinished pass holds its
    first samples, the same each epoch, so the counts are exact."""
    epochs = 3
    bdr = BDRPlugin(feature_layer=LAYER)
    recorder = LabelRecorder(bdr)
    replay = ReplayPlugin(mem_size=20, batch_size_mem=8)
    strategy = naive(mlp(), [replay, bdr, recorder], epochs=epochs, batch=12)
    strategy.train(stream[0], shuffle=False)
    strategy.train(stream[1], shuffle=False)
    torch.testing.assert_close(recorder.counts, recorder.labels / epochs)


def test_a_plugin_joining_an_online_stream_late_counts_the_origin(stream):
    """A tracker that first sees the stream after its first training
    experience (here at the second mini-experience of origin 1) takes the
    origin's position in its stream."""
    tracker = PhaseTracker("CwDPlugin", "adds its term during the first experience")
    online = list(_online(stream, boundaries=True))
    phases = []
    for counter, experience in enumerate(online[6:], start=6):
        strategy = SimpleNamespace(
            experience=experience, clock=SimpleNamespace(train_exp_counter=counter)
        )
        phases.append(tracker.update(strategy))
    assert phases == [1, 1, 1, 1]


def test_lucir_with_another_criterion_names_its_opt_in(stream):
    """LUCIR builds its BDRPlugin itself: the refusal says how to opt in
    there, and the opt-in trains."""
    strategy = make_lucir_bdr(criterion=mse_onehot)
    with pytest.raises(IncompatibleStrategyError) as error:
        strategy.train(stream[0])
    assert "mse_onehot" in str(error.value)
    assert "strategy.bdr.assume_softmax_ce = True" in str(error.value)
    assert strategy.clock.train_iterations == 0
    strategy.bdr.assume_softmax_ce = True
    strategy.train(stream[0])
    strategy.train(stream[1])
    assert strategy.bdr.prior is not None
