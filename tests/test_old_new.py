"""The protocol's old/new-class breakdown (:class:`OldNewAccuracy`): read from
Avalanche's own evaluation pass, so it sees what the strategy's evaluation
outputs (plugins' ``after_eval_forward``, masking, relabelled class ids),
and the test data are evaluated once per experience."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.logging import BaseLogger
from avalanche.training import Naive
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import BiCPlugin, EvaluationPlugin
from helpers import (
    ARRIVAL,
    make_benchmark,
    make_lucir_bdr,
    make_tiny_lucir,
    shuffled_benchmark,
)
from torch import nn

from bdr_avalanche import baselines
from bdr_avalanche.metrics import OldNewAccuracy, OldNewBreakdown, old_new_breakdown
from bdr_avalanche.models import SmallCNN
from bdr_avalanche.params import TrainingParams
from bdr_avalanche.protocol import make_evaluator, train_and_evaluate

NAN = float("nan")
NAMES = {
    "old": "OldAcc_Stream/eval_phase/test_stream",
    "new": "NewAcc_Stream/eval_phase/test_stream",
    "old_to_new": "OldToNew_Stream/eval_phase/test_stream",
}


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


def breakdown_by_loops(predict, test_experiences, new_classes) -> tuple[float, ...]:
    """(old accuracy, new accuracy, old->new share) by plain loops over the
    test images, in the benchmark's class ids; ``predict(x)`` gives the
    predicted class id of each image of the batch ``x``."""
    new_classes = {int(c) for c in new_classes}
    old = new = old_correct = new_correct = old_as_new = 0
    for exp in test_experiences:
        data = exp.dataset.eval()
        x = torch.stack([data[i][0] for i in range(len(data))])
        labels = [int(data[i][1]) for i in range(len(data))]
        for y, p in zip(labels, predict(x), strict=True):
            if y in new_classes:
                new += 1
                new_correct += p == y
            else:
                old += 1
                old_correct += p == y
                old_as_new += p in new_classes
    return (
        old_correct / old if old else NAN,
        new_correct / new if new else NAN,
        old_as_new / old if old else NAN,
    )


@torch.no_grad()
def outputs_in_eval_mode(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        return model(x)
    finally:
        model.train(was_training)


def run_with_reference(strategy, benchmark, predict):
    """``train_and_evaluate`` with, after each experience ``t``, the
    breakdown by loops over the test experiences ``0..t`` (new: the classes
    of training experience ``t``, in the benchmark's ids)."""
    expected = []

    def check(t, results):
        expected.append(
            breakdown_by_loops(
                lambda x: predict(strategy, x),
                benchmark.test_stream[: t + 1],
                benchmark.train_stream[t].classes_in_this_experience,
            )
        )

    results = train_and_evaluate(strategy, benchmark, on_experience_end=check)
    return results, expected


def assert_breakdown(results, expected) -> None:
    got = list(
        zip(results.old_accuracy, results.new_accuracy, results.old_to_new, strict=True)
    )
    assert len(got) == len(expected)
    for t, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert all(same(a, b) for a, b in zip(g, e, strict=True)), (t, g, e)
    assert math.isnan(got[0][0]) and math.isnan(got[0][2])  # all new at first


def make_naive(*plugins, evaluator=None, seed: int = 0, **kwargs):
    """Avalanche's Naive on a linear classifier over all 6 classes (it may
    predict classes not seen yet)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 6))
    return Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
        criterion=nn.CrossEntropyLoss(),
        train_mb_size=16,
        train_epochs=1,
        eval_mb_size=64,
        device="cpu",
        plugins=list(plugins),
        evaluator=make_evaluator() if evaluator is None else evaluator,
        **kwargs,
    )


def naive_predict(strategy, x):
    return outputs_in_eval_mode(strategy.model, x).argmax(1).tolist()


class Names(BaseLogger):
    """Records the names and values of the metrics its evaluator logs."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[tuple[str, float]] = []

    def log_single_metric(self, name, value, x_plot) -> None:
        self.values.append((name, value))


class EvalForwards(SupervisedPlugin):
    """Counts the model's forward passes in eval mode after ``train``
    returns (the evaluation, and any second pass over the test data)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.handle = None

    def before_training(self, strategy, **kwargs):
        if self.handle is None:
            self.handle = strategy.model.register_forward_hook(self._count)

    def after_training(self, strategy, **kwargs):
        self.calls = 0

    def _count(self, module, args, output) -> None:
        if not module.training:
            self.calls += 1


class BoostClass(SupervisedPlugin):
    """An evaluation path that changes the outputs: a large bias on one
    class's logit in ``after_eval_forward``."""

    def __init__(self, cls: int, bias: float = 1e4) -> None:
        super().__init__()
        self.cls, self.bias = cls, bias

    def after_eval_forward(self, strategy, **kwargs):
        out = strategy.mb_output.clone()
        out[:, self.cls] += self.bias
        strategy.mb_output = out


# ------------------------------------------------------- against loops


def test_lucir_relabelled_ids_match_loops():
    """LUCIR relabels the shuffled ids to arrival order (``mb_y`` and the
    logits use them): the breakdown is the one computed in the benchmark's
    own ids, with the model called as LUCIR evaluates it."""
    RNGManager.set_random_seeds(0)
    benchmark = shuffled_benchmark()
    strategy = make_tiny_lucir(lr=0.05, epochs=4, milestones=[3], cwd=True, bdr=True)

    def predict(strategy, x):
        logits = outputs_in_eval_mode(strategy.model, x)
        return [strategy.class_order[i] for i in logits.argmax(1).tolist()]

    results, expected = run_with_reference(strategy, benchmark, predict)
    assert strategy.class_order == list(ARRIVAL)  # relabelling happened
    assert_breakdown(results, expected)
    assert all(0 < v < 1 for v in results.old_accuracy[1:] + results.new_accuracy[1:])
    assert results.old_to_new[1] > 0
    # and Avalanche's accuracy over the same evaluation agrees
    for t in (1, 2):
        mixed = (t * results.old_accuracy[t] + results.new_accuracy[t]) / (t + 1)
        assert mixed == pytest.approx(results.seen_accuracy[t], abs=1e-9)


def test_naive_matches_loops_and_is_logged():
    RNGManager.set_random_seeds(0)
    benchmark = shuffled_benchmark(noise=3.0)
    logger = Names()
    strategy = make_naive(evaluator=make_evaluator([logger]))
    results, expected = run_with_reference(strategy, benchmark, naive_predict)
    assert_breakdown(results, expected)
    assert min(results.old_to_new[1:]) > 0  # Naive forgets toward new classes
    assert all(0 < v < 1 for v in results.old_accuracy[1:])
    # logged as metric values, NaN ones left out
    first, *later = results.metrics
    assert NAMES["old"] not in first and NAMES["old_to_new"] not in first
    assert first[NAMES["new"]] == results.new_accuracy[0]
    for t, metrics in enumerate(later, start=1):
        assert metrics[NAMES["old"]] == results.old_accuracy[t]
        assert metrics[NAMES["new"]] == results.new_accuracy[t]
        assert metrics[NAMES["old_to_new"]] == results.old_to_new[t]
    logged = [v for name, v in logger.values if name == NAMES["old_to_new"]]
    assert logged == results.old_to_new[1:]


# ------------------------------------------- the strategy's own eval path


def test_outputs_changed_after_eval_forward_are_counted():
    """A plugin that biases class 2 (new in the last experience) in
    ``after_eval_forward``: every test image is predicted as 2, which only
    the strategy's evaluation does, not the model called directly."""
    RNGManager.set_random_seeds(0)
    benchmark = shuffled_benchmark()
    strategy = make_naive(BoostClass(2))

    def predict(strategy, x):
        logits = outputs_in_eval_mode(strategy.model, x)
        logits[:, 2] += 1e4  # what the strategy's evaluation outputs
        return logits.argmax(1).tolist()

    results, expected = run_with_reference(strategy, benchmark, predict)
    assert_breakdown(results, expected)
    # 2 is not seen before the last experience: old and new are all wrong
    assert results.old_accuracy[1] == 0 and results.old_to_new[1] == 0
    assert results.new_accuracy[:2] == [0, 0]
    # 2 is new in the last one: half of the new images, every old one
    assert results.old_accuracy[2] == 0 and results.old_to_new[2] == 1
    assert results.new_accuracy[2] == 0.5
    assert results.seen_accuracy[2] == pytest.approx(1 / 6)
    # the model called directly (the old second pass) tells another story
    direct = breakdown_by_loops(
        lambda x: naive_predict(strategy, x),
        benchmark.test_stream,
        benchmark.train_stream[2].classes_in_this_experience,
    )
    assert direct[2] < 1


def test_bic_bias_correction_through_avalanche_after_eval_forward():
    RNGManager.set_random_seeds(0)
    benchmark = make_benchmark()
    strategy = baselines.make_baseline(
        "bic",
        backbone=SmallCNN(in_channels=3, width=8),
        num_classes=6,
        training=TrainingParams(
            mem_per_class=5,
            lr=0.1,
            milestones=[1],
            batch_size=10,
            epochs=2,
            eval_batch_size=64,
        ),
        device="cpu",
        evaluator=make_evaluator(),
        hparams={"stage_2_epochs": 20},
    )
    bic = next(p for p in strategy.plugins if isinstance(p, BiCPlugin))
    assert type(bic).after_eval_forward is BiCPlugin.after_eval_forward
    changed = []

    def predict(strategy, x):
        raw = outputs_in_eval_mode(strategy.model, x)
        layer = bic.bias_layer  # fitted from the second experience on
        out = raw if layer is None else layer(raw)
        changed.append(bool((out.argmax(1) != raw.argmax(1)).any()))
        return out.argmax(1).tolist()

    results, expected = run_with_reference(strategy, benchmark, predict)
    assert not bic.is_first_experience and bic.bias_layer is not None
    assert_breakdown(results, expected)
    for t in (1, 2):
        mixed = (t * results.old_accuracy[t] + results.new_accuracy[t]) / (t + 1)
        assert mixed == pytest.approx(results.seen_accuracy[t], abs=1e-9)
    assert any(changed)  # the correction matters on these test images


# ------------------------------------------------------------- one pass


def test_test_data_evaluated_once_per_experience():
    """After each experience the model sees each test batch once (test
    experiences of 20 images, eval batches of 64: one batch each)."""
    RNGManager.set_random_seeds(0)
    benchmark = shuffled_benchmark()
    forwards = EvalForwards()
    strategy = make_lucir_bdr(forwards)
    calls = []
    train_and_evaluate(
        strategy, benchmark, on_experience_end=lambda t, r: calls.append(forwards.calls)
    )
    assert calls == [1, 2, 3]


def test_periodic_evaluation_takes_the_experience_being_trained():
    RNGManager.set_random_seeds(0)
    benchmark = shuffled_benchmark(noise=3.0)
    strategy = make_naive(eval_every=1)
    strategy.train(benchmark.train_stream[0], eval_streams=[])
    logger = Names()
    strategy.evaluator.loggers.append(logger)
    strategy.train(benchmark.train_stream[1], eval_streams=[benchmark.test_stream[:2]])
    metric = next(
        m for m in strategy.evaluator.metrics if isinstance(m, OldNewAccuracy)
    )
    assert metric.new_classes == [0, 5]  # the second experience's
    expected = breakdown_by_loops(
        lambda x: naive_predict(strategy, x), benchmark.test_stream[:2], [0, 5]
    )
    assert all(same(a, b) for a, b in zip(metric.result(), expected, strict=True))
    assert (NAMES["old_to_new"], expected[2]) in logger.values


def test_evaluator_without_the_metric_is_refused_before_training():
    strategy = make_naive(
        evaluator=EvaluationPlugin(accuracy_metrics(experience=True, stream=True))
    )
    with pytest.raises(ValueError, match="OldNewAccuracy.*make_evaluator"):
        train_and_evaluate(strategy, shuffled_benchmark())
    assert strategy.clock.train_exp_counter == 0


# ---------------------------------------------- the metric on its own


def fake_strategy(relabel=None):
    strategy = SimpleNamespace(
        is_eval=True,
        clock=SimpleNamespace(train_iterations=7),
        experience=None,
        mb_output=None,
        mb_y=None,
    )
    if relabel is not None:
        strategy.relabelled = lambda exp: SimpleNamespace(
            classes_in_this_experience=[
                relabel[c] for c in exp.classes_in_this_experience
            ]
        )
    return strategy


def experience(classes, j):
    return SimpleNamespace(
        classes_in_this_experience=list(classes),
        current_experience=j,
        task_labels=[0],
        origin_stream=SimpleNamespace(name="test"),
    )


def feed(metric, strategy, batches, trained=None):
    """Train on an experience of classes ``trained`` (when given), then
    evaluate ``batches``: per experience (classes, [(logits, labels)...])."""
    if trained is not None:
        strategy.experience = experience(trained, 0)
        metric.before_training_exp(strategy)
    metric.before_eval(strategy)
    for j, (classes, exp_batches) in enumerate(batches):
        strategy.experience = experience(classes, j)
        metric.before_eval_exp(strategy)
        for logits, labels in exp_batches:
            strategy.mb_output, strategy.mb_y = logits, labels
            metric.after_eval_iteration(strategy)
    return metric.after_eval(strategy)


def random_batches(gen, classes_per_exp, widths, mapping=None):
    """Per experience, two batches of labels from its classes (in the ids
    of ``mapping``) and random logits of the given width."""
    out = []
    for classes, width in zip(classes_per_exp, widths, strict=True):
        ids = torch.tensor([mapping[c] if mapping else c for c in classes])
        batches = []
        for n in (5, 9):
            labels = ids[torch.randint(0, len(ids), (n,), generator=gen)]
            batches.append((torch.randn(n, width, generator=gen), labels))
        out.append((classes, batches))
    return out


def loops_from_batches(batches, new_classes):
    new_classes = set(new_classes)
    old = new = old_correct = new_correct = old_as_new = 0
    for _, exp_batches in batches:
        for logits, labels in exp_batches:
            for row, y in zip(logits.tolist(), labels.tolist(), strict=True):
                p = max(range(len(row)), key=lambda k: (row[k], -k))  # first max
                if y in new_classes:
                    new, new_correct = new + 1, new_correct + (p == y)
                else:
                    old, old_correct = old + 1, old_correct + (p == y)
                    old_as_new += p in new_classes
    return (
        old_correct / old if old else NAN,
        new_correct / new if new else NAN,
        old_as_new / old if old else NAN,
    )


def test_metric_counts_match_loops_with_relabelled_ids():
    """Experiences of original classes [7, 3], [0, 9], [5, 2] relabelled to
    0..5; logits growing from experience to experience, without one for
    class 1 in the first (its images are never right)."""
    gen = torch.Generator().manual_seed(0)
    mapping = {7: 0, 3: 1, 0: 2, 9: 3, 5: 4, 2: 5}
    classes = [[7, 3], [0, 9], [5, 2]]
    batches = random_batches(gen, classes, widths=[1, 6, 6], mapping=mapping)
    batches[1][1][0][0][:, 4] += 0.7  # old images leaning toward a new class
    metric = OldNewAccuracy()
    strategy = fake_strategy(relabel=mapping)
    values = feed(metric, strategy, batches, trained=[5, 2])
    expected = loops_from_batches(batches, new_classes=[4, 5])
    got = metric.result()
    assert isinstance(got, OldNewBreakdown)
    assert all(same(a, b) for a, b in zip(got, expected, strict=True)), (got, expected)
    assert 0 < got.old_to_new < 1 and metric.new_classes == [4, 5]
    assert [(v.name, v.value, v.x_plot) for v in values] == [
        (NAMES["old"], got.old_accuracy, 7),
        (NAMES["new"], got.new_accuracy, 7),
        (NAMES["old_to_new"], got.old_to_new, 7),
    ]
    # Without the relabelling, the original ids would be taken as new.
    plain = OldNewAccuracy()
    feed(plain, fake_strategy(), batches, trained=[5, 2])
    assert plain.result() != got


def test_metric_new_classes_and_nan_rules():
    gen = torch.Generator().manual_seed(1)
    batches = random_batches(gen, [[0, 1], [2, 3]], widths=[4, 4])
    metric = OldNewAccuracy()
    strategy = fake_strategy()
    # not trained here (e.g. restored): new = the last evaluated experience
    feed(metric, strategy, batches)
    expected = loops_from_batches(batches, new_classes=[2, 3])
    assert all(same(a, b) for a, b in zip(metric.result(), expected, strict=True))
    # trained on [0, 1]: those are new, whatever is evaluated last
    feed(metric, strategy, batches, trained=[0, 1])
    expected = loops_from_batches(batches, new_classes=[0, 1])
    assert all(same(a, b) for a, b in zip(metric.result(), expected, strict=True))
    # every evaluated class new: old accuracy and old->new are NaN, not logged
    values = feed(metric, strategy, batches[:1])
    old, new, old_to_new = metric.result()
    assert math.isnan(old) and math.isnan(old_to_new)
    assert new == loops_from_batches(batches[:1], [0, 1])[1]
    assert [v.name for v in values] == [NAMES["new"]]
    # an evaluation with no image: no result; each evaluation starts afresh
    assert feed(metric, strategy, [([0, 1], [])]) is None
    assert metric.result() is None


def test_old_new_breakdown_from_confusion_counts():
    confusion = torch.tensor(
        [
            [5, 1, 0, 2],  # old class 0: 5 right, 2 predicted as new class 3
            [0, 3, 1, 0],  # old class 1
            [0, 0, 4, 0],  # new class 2
            [1, 0, 1, 2],  # new class 3
            [0, 0, 0, 1],  # old class 4, without a prediction column
        ]
    )
    got = old_new_breakdown(confusion, [2, 3])
    assert got == pytest.approx(OldNewBreakdown(8 / 13, 6 / 8, 4 / 13))
    only_new = old_new_breakdown(confusion[2:4], [0, 1])  # rows 0, 1 = 2, 3
    assert math.isnan(only_new.old_accuracy) and math.isnan(only_new.old_to_new)
    assert math.isnan(old_new_breakdown(confusion, [9]).new_accuracy)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_host_sync_per_eval_iteration():
    """Counting a batch never waits for the GPU (one read per evaluation)."""
    device = torch.device("cuda")
    metric = OldNewAccuracy()
    strategy = fake_strategy()
    strategy.experience = experience([0, 1, 2, 3], 0)
    metric.before_eval(strategy)
    metric.before_eval_exp(strategy)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for width in (4, 4, 6):
            strategy.mb_output = torch.randn(32, width, device=device)
            strategy.mb_y = torch.randint(0, 4, (32,), device=device)
            metric.after_eval_iteration(strategy)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    metric.after_eval(strategy)
    assert 0.0 <= metric.result().new_accuracy <= 1.0
