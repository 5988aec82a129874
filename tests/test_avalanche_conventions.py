"""LUCIR as a drop-in Avalanche ``SupervisedTemplate``: evaluation on the
whole test stream, periodic evaluation, Avalanche's class-id layouts, the
usual optimizer and scheduler arguments, third-party backbones, and the
cosine model in Avalanche's own strategies."""

from __future__ import annotations

import functools
import inspect
import warnings

import numpy as np
import pytest
import torch
import torchvision
from avalanche.benchmarks import nc_benchmark
from avalanche.benchmarks.classic import SplitCIFAR100
from avalanche.benchmarks.scenarios.supervised import class_incremental_benchmark
from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset
from avalanche.models import SlimResNet18
from avalanche.training import Naive
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EarlyStoppingPlugin, LRSchedulerPlugin
from helpers import make_benchmark
from helpers import make_tiny_lucir as make_lucir
from probe import Probe
from torch import nn
from torch.optim import SGD, Adam
from torch.optim.lr_scheduler import StepLR

from bdr_avalanche import LUCIR
from bdr_avalanche.metrics import classifier_weight_norms
from bdr_avalanche.models import CosineIncrementalNet, SmallCNN, remove_last_relu
from bdr_avalanche.params import TrainingParams
from bdr_avalanche.protocol import make_evaluator, train_and_evaluate

EXP_ACC = "Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp{:03d}"
STREAM_ACC = "Top1_Acc_Stream/eval_phase/test_stream/Task000"
FORGETTING = "StreamForgetting/eval_phase/test_stream"


class Events(Probe):
    """``Probe`` with the callbacks these tests count as well."""

    def before_training_iteration(self, strategy, **kwargs):
        self._run("before_training_iteration", strategy)

    def after_training_epoch(self, strategy, **kwargs):
        self._run("after_training_epoch", strategy)

    def after_eval(self, strategy, **kwargs):
        self._run("after_eval", strategy)


def blob_datasets(num_classes=6, train_per_class=30, test_per_class=10, size=8):
    """helpers' Gaussian blobs (3 x size x size) as train and test datasets."""
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(num_classes, 3, size, size, generator=gen)

    def dataset(n):
        y = torch.arange(num_classes).repeat_interleave(n)
        x = centres[y] + 0.8 * torch.randn(len(y), 3, size, size, generator=gen)
        return _make_taskaware_tensor_classification_dataset(
            x, y, targets=y.tolist(), task_labels=0
        )

    return dataset(train_per_class), dataset(test_per_class)


ORDER = [3, 5, 0, 4, 1, 2]
"""A class order whose experiences (2 classes each) list their ids in
increasing order, so that LUCIR's arrival order is exactly the one
``class_ids_from_zero_from_first_exp=True`` gives."""


def nc_blobs(**options):
    train, test = blob_datasets()
    return nc_benchmark(
        train,
        test,
        n_experiences=3,
        task_labels=False,
        fixed_class_order=ORDER,
        **options,
    )


def canonical_loop(strategy, benchmark) -> list[dict]:
    """Avalanche's loop: train on each experience, evaluate on the whole
    test stream; the RNG is re-seeded before each experience."""
    history = []
    for t, experience in enumerate(benchmark.train_stream):
        RNGManager.set_random_seeds(t + 1)
        strategy.train(experience)
        history.append(dict(strategy.eval(benchmark.test_stream)))
    return history


# ------------------------------------------------------------ evaluation


def test_full_stream_evaluation_matches_the_protocol():
    """Evaluating on the whole test stream after every experience gives the
    protocol's accuracy matrix on the seen part, 0 on the rest, and the same
    forgetting."""
    benchmark = make_benchmark()
    RNGManager.set_random_seeds(0)
    reference = make_lucir()

    def reseed(t, results):  # as canonical_loop does
        RNGManager.set_random_seeds(t + 2)

    RNGManager.set_random_seeds(1)
    results = train_and_evaluate(reference, benchmark, on_experience_end=reseed)

    RNGManager.set_random_seeds(0)
    history = canonical_loop(make_lucir(), benchmark)

    for t, metrics in enumerate(history):
        accuracy = [metrics[EXP_ACC.format(j)] for j in range(3)]
        np.testing.assert_array_equal(
            accuracy[: t + 1], results.accuracy_matrix[t, : t + 1]
        )
        assert accuracy[t + 1 :] == [0.0] * (2 - t)
        # equal test experiences: the stream accuracy counts unseen ones as 0
        assert metrics[STREAM_ACC] == pytest.approx(
            results.seen_accuracy[t] * (t + 1) / 3
        )
    assert results.accuracy_matrix[0, 0] > 0.5
    assert history[-1][FORGETTING] == pytest.approx(results.forgetting)


def test_unseen_classes_are_masked():
    """Before and during training, classes not learned yet have masked logits
    (never predicted) and accuracy 0; nothing fails."""
    outputs = []

    def record(strategy):
        outputs.append((strategy.mb_output.clone(), strategy.mb_y.clone()))

    RNGManager.set_random_seeds(0)
    benchmark = make_benchmark()
    strategy = make_lucir(Probe(after_eval_forward=record))
    metrics = strategy.eval(benchmark.test_stream)  # before any training
    assert set(metrics) >= {EXP_ACC.format(j) for j in range(3)}
    outputs.clear()
    strategy.train(benchmark.train_stream[0])
    metrics = strategy.eval(benchmark.test_stream)
    assert metrics[EXP_ACC.format(1)] == metrics[EXP_ACC.format(2)] == 0.0
    mask = strategy.model.head.mask_value
    for output, y in outputs:
        assert output.shape[1] == int(y.max()) + 1
        assert (output[:, :2] > mask).all() and (output[:, 2:] == mask).all()
    assert strategy.model.head.num_classes == 2


def test_periodic_evaluation_and_early_stopping():
    """eval_every with eval_streams validates every epoch; EarlyStoppingPlugin
    reads that validation and stops training."""
    RNGManager.set_random_seeds(0)
    benchmark = make_benchmark()
    events = Events(after_eval=lambda s: None, after_training_epoch=lambda s: None)
    # margin 1: no epoch ever counts as an improvement, so it stops after one
    stopper = EarlyStoppingPlugin(patience=1, val_stream_name="test_stream", margin=1.0)
    strategy = make_lucir(stopper, events, epochs=4, eval_every=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "not computed yet"
        for t, experience in enumerate(benchmark.train_stream):
            strategy.train(experience, eval_streams=[benchmark.test_stream[: t + 1]])
    assert events.calls["after_training_epoch"] == 3  # one epoch per experience
    assert events.calls["after_eval"] >= 3 * 2  # before training, after the epoch
    assert stopper.best_val is not None
    assert strategy.model.head.num_classes == 6


# ------------------------------------------------------- class-id layouts


def test_avalanche_default_class_ids_train_as_arrival_order_ids():
    """With Avalanche's default (original) class ids LUCIR relabels classes in
    order of arrival: the run equals the one on the same stream built with
    class_ids_from_zero_from_first_exp=True."""
    runs = {}
    for name, options in {
        "original": {},
        "from_zero": {"class_ids_from_zero_from_first_exp": True},
    }.items():
        benchmark = nc_blobs(**options)
        RNGManager.set_random_seeds(0)
        strategy = make_lucir(epochs=2)
        runs[name] = (canonical_loop(strategy, benchmark), strategy)
    original, strategy = runs["original"]
    assert strategy.class_order == ORDER
    assert runs["from_zero"][1].class_order == list(range(6))
    for a, b in zip(original, runs["from_zero"][0], strict=True):
        keys = [EXP_ACC.format(j) for j in range(3)] + [STREAM_ACC]
        assert [a[k] for k in keys] == [b[k] for k in keys]
    assert original[0][EXP_ACC.format(0)] > 0.5
    assert original[0][EXP_ACC.format(1)] == original[0][EXP_ACC.format(2)] == 0.0


def test_class_ids_from_zero_in_each_exp_fails_before_training():
    """Ids reused by every experience are refused before the first training
    iteration, naming an option that nc_benchmark and SplitCIFAR100 have."""
    benchmark = nc_blobs(class_ids_from_zero_in_each_exp=True)
    events = Events(before_training_iteration=lambda s: None)
    strategy = make_lucir(events)
    with pytest.raises(ValueError, match="class_ids_from_zero_from_first_exp=True"):
        strategy.train(benchmark.train_stream[0])
    assert "before_training_iteration" not in events.calls
    for api in (nc_benchmark, SplitCIFAR100):
        assert "class_ids_from_zero_from_first_exp" in inspect.signature(api).parameters


def test_class_incremental_benchmark_trains():
    """0.6's class_incremental_benchmark (original ids, no relabelling option)
    trains as it is, under the protocol and on the whole test stream."""
    train, test = blob_datasets()
    benchmark = class_incremental_benchmark(
        {"train": train, "test": test},
        class_order=[5, 1, 2, 0, 4, 3],
        num_experiences=3,
    )
    # no task labels: Avalanche's metric names have no Task000
    exp_acc = "Top1_Acc_Exp/eval_phase/test_stream/Exp{:03d}"
    full = []

    def evaluate_all(t, results):
        full.append(strategy.eval(benchmark.test_stream))

    RNGManager.set_random_seeds(0)
    strategy = make_lucir(epochs=4, lr=0.05, milestones=(3,))
    results = train_and_evaluate(strategy, benchmark, on_experience_end=evaluate_all)
    assert strategy.class_order == [1, 5, 0, 2, 3, 4]
    assert np.isnan(results.accuracy_matrix[np.triu_indices(3, 1)]).all()
    assert results.last_accuracy > 0.5
    assert len(strategy.storage_policy.buffer) == 6 * 5
    for t, metrics in enumerate(full):
        accuracy = [metrics[exp_acc.format(j)] for j in range(3)]
        np.testing.assert_array_equal(
            accuracy[: t + 1], results.accuracy_matrix[t, : t + 1]
        )
        assert accuracy[t + 1 :] == [0.0] * (2 - t)


def test_resume_with_original_class_ids():
    """A state taken on a stream with original ids restores LUCIR's arrival
    order, the relabelled memory and the model."""
    benchmark = nc_blobs()
    RNGManager.set_random_seeds(0)
    strategy = make_lucir()
    strategy.train(benchmark.train_stream[0])
    state = strategy.state_dict()
    assert state["class_order"] == ORDER[:2]

    RNGManager.set_random_seeds(1)
    restored = make_lucir()
    restored.load_state_dict(state, benchmark.train_stream)
    assert restored.class_order == ORDER[:2]
    memory = restored.storage_policy.buffer
    assert {int(memory[i][1]) for i in range(len(memory))} == {0, 1}
    keys = [EXP_ACC.format(j) for j in range(3)] + [STREAM_ACC]
    before = strategy.eval(benchmark.test_stream)
    after = restored.eval(benchmark.test_stream)
    assert [before[k] for k in keys] == [after[k] for k in keys]
    restored.train(benchmark.train_stream[1])
    assert restored.class_order == ORDER[:4]


# ------------------------------------------------- optimizer and schedule


def lrs_per_epoch(strategy, benchmark, experiences=2) -> list[float]:
    lrs = []
    strategy.plugins.insert(
        0,
        Probe(
            before_training_epoch=lambda s: lrs.append(
                round(s.optimizer.param_groups[0]["lr"], 8)
            )
        ),
    )
    for experience in benchmark.train_stream[:experiences]:
        strategy.train(experience)
    return lrs


def test_lr_scheduler_plugin_on_strategy_optimizer(benchmark):
    """An LRSchedulerPlugin built on strategy.optimizer schedules the learning
    rate (restarting each experience) instead of LUCIR's MultiStepLR."""
    strategy = make_lucir(epochs=3, milestones=(80, 120), lr=0.1)
    optimizer = strategy.optimizer
    strategy.plugins.append(LRSchedulerPlugin(StepLR(strategy.optimizer, 1, 0.1)))
    assert lrs_per_epoch(strategy, benchmark) == [0.1, 0.01, 0.001] * 2
    assert strategy.optimizer is optimizer and strategy.scheduler is None


def test_optimizer_instance_and_scheduler_as_for_avalanche(benchmark):
    """As for Avalanche's strategies: an optimizer and an LRSchedulerPlugin on
    it. Each experience starts fresh: no state, trainable parameters only."""
    backbone = SmallCNN(in_channels=3, width=8)
    optimizer = SGD(backbone.parameters(), lr=0.2, momentum=0.5)
    schedule = LRSchedulerPlugin(StepLR(optimizer, 1, 0.5))
    states = []

    def check(strategy):
        group = strategy.optimizer.param_groups[0]
        trainable = [p for p in strategy.model.parameters() if p.requires_grad]
        assert [id(p) for p in group["params"]] == [id(p) for p in trainable]
        assert group["momentum"] == 0.5
        states.append(len(strategy.optimizer.state))

    strategy = LUCIR(
        backbone=backbone,
        training=TrainingParams(epochs=2, batch_size=16, mem_per_class=5),
        optimizer=optimizer,
        device="cpu",
        plugins=[schedule, Probe(before_training_exp=check)],
        evaluator=make_evaluator(),
    )
    assert strategy.optimizer is optimizer
    assert lrs_per_epoch(strategy, benchmark) == [0.2, 0.1] * 2
    assert states == [0, 0]


def test_optimizer_factory(benchmark):
    """A factory builds strategy.optimizer; MultiStepLR still schedules it."""
    strategy = make_lucir(
        optimizer=functools.partial(Adam, lr=0.01), epochs=2, milestones=(1,)
    )
    assert isinstance(strategy.optimizer, Adam)
    assert lrs_per_epoch(strategy, benchmark) == [0.01, 0.001] * 2


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: make_lucir(optimizer=functools.partial(Adam), lr=0.5), "lr set"),
        (
            lambda: make_lucir(
                LRSchedulerPlugin(StepLR(SGD([nn.Parameter(torch.ones(1))], 0.1), 1))
            ),
            "strategy.optimizer",
        ),
        (
            lambda: make_lucir(optimizer=lambda params: "sgd"),
            "torch.optim.Optimizer",
        ),
    ],
    ids=["lr-with-optimizer", "scheduler-on-other-optimizer", "bad-factory"],
)
def test_optimizer_arguments_refused_clearly(build, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build()


def test_milestones_with_lr_scheduler_plugin_refused(benchmark):
    """milestones are LUCIR's own schedule's: with an LRSchedulerPlugin they
    are refused before training."""
    strategy = make_lucir(milestones=(3,))
    strategy.plugins.append(LRSchedulerPlugin(StepLR(strategy.optimizer, 1)))
    with pytest.raises(ValueError, match="milestones"):
        strategy.train(benchmark.train_stream[0])


# ------------------------------------------------------------- backbones


def image_benchmark(num_classes=4, per_class=4, size=32):
    """A tiny stream of 3 x size x size images, two classes per experience."""
    train, test = blob_datasets(num_classes, per_class, 3, size)
    return nc_benchmark(
        train,
        test,
        n_experiences=2,
        task_labels=False,
        fixed_class_order=list(range(num_classes)),
        class_ids_from_zero_from_first_exp=True,
    )


def features(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    backbone.eval()
    with torch.no_grad():
        return backbone(x)


@pytest.mark.parametrize(
    ("factory", "dim", "size"),
    [
        pytest.param(
            lambda: torchvision.models.resnet18(num_classes=10),
            512,
            16,
            id="torchvision-resnet18",
            marks=pytest.mark.integration,  # seconds on a CPU
        ),
        pytest.param(
            lambda: SlimResNet18(10, nf=4),
            32,
            32,  # needs 3 x 32 x 32
            id="avalanche-slim-resnet18",
        ),
    ],
)
def test_resnet_backbones(factory, dim, size):
    """torchvision's resnet18 and Avalanche's SlimResNet18 train as LUCIR
    backbones: classifier dropped, last ReLU removed (features can be
    negative), no warning."""
    torch.manual_seed(0)
    x = torch.randn(8, 3, size, size)
    kept = factory()
    CosineIncrementalNet(kept, feature_dim=dim)  # drops the classifier only
    assert (features(kept, x) >= 0).all()

    benchmark = image_benchmark(size=size)
    backbone = factory()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        strategy = make_lucir(backbone=backbone, feature_dim=dim, batch_size=8)
    assert not [w for w in caught if "ReLU" in str(w.message)]
    assert strategy.model.head.in_features == dim
    assert features(backbone, x).shape == (8, dim)
    assert (features(backbone, x) < 0).any()
    history = canonical_loop(strategy, benchmark)
    assert set(history[-1]) >= {EXP_ACC.format(0), EXP_ACC.format(1)}
    assert strategy.model.head.num_classes == 4


def test_unknown_backbone_warns_that_its_relu_was_kept():
    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)

        def forward(self, x):
            return torch.relu(self.conv(x)).mean(dim=(2, 3))

    with pytest.warns(UserWarning, match="ReLU was kept"):
        strategy = make_lucir(backbone=Encoder(), feature_dim=8)
    assert strategy.model.head.in_features == 8


def test_sequential_backbone_loses_its_final_relu():
    backbone = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    x = torch.randn(4, 3, 8, 8)
    assert (features(backbone, x) >= 0).all()
    assert remove_last_relu(backbone)
    assert isinstance(backbone[1], nn.Identity) and (features(backbone, x) < 0).any()
    assert remove_last_relu(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


# -------------------------------------------- the cosine model elsewhere


def test_cosine_net_in_naive_with_original_class_ids():
    """Naive(CosineIncrementalNet(...)) trains with Avalanche's model and
    optimizer adaptation on original class ids and evaluates on the whole
    stream (unseen classes: accuracy 0)."""
    RNGManager.set_random_seeds(0)
    benchmark = nc_blobs()
    model = CosineIncrementalNet(SmallCNN(in_channels=3, width=8))
    strategy = Naive(
        model=model,
        optimizer=SGD(model.parameters(), lr=0.1, momentum=0.9),
        train_mb_size=16,
        train_epochs=2,
        eval_mb_size=64,
        device="cpu",
        evaluator=make_evaluator(),
    )
    history = canonical_loop(strategy, benchmark)
    assert history[0][EXP_ACC.format(0)] > 0.5
    assert history[0][EXP_ACC.format(1)] == history[0][EXP_ACC.format(2)] == 0.0
    assert model.head.classes == ORDER
    optimized = {id(p) for g in strategy.optimizer.param_groups for p in g["params"]}
    assert all(id(block) in optimized for block in model.head.blocks)
    assert history[-1][EXP_ACC.format(2)] > 0.5
    # the diagnostics read each class's row at its id
    norms = classifier_weight_norms(model)
    rows = model.head.weight.detach().norm(dim=1)
    torch.testing.assert_close(norms[ORDER], rows)


def test_cosine_net_drops_torchvision_classifier():
    net = CosineIncrementalNet(torchvision.models.resnet18(num_classes=7))
    assert isinstance(net.backbone.fc, nn.Identity) and net.head.in_features == 512
    with pytest.raises(ValueError, match="feature_dim=64"):
        CosineIncrementalNet(torchvision.models.resnet18(), feature_dim=64)
