"""HerdingBuffer: m exemplars per class or a fixed total, herding on eval
features."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from avalanche.models import SimpleMLP
from avalanche.training import Naive
from avalanche.training.plugins import BiCPlugin, EvaluationPlugin, ReplayPlugin
from helpers import AddConstant, make_benchmark
from probe import Probe

from bdr_avalanche import HerdingBuffer
from bdr_avalanche.functional import herding_select
from bdr_avalanche.models import CosineIncrementalNet, SmallCNN


def agent(model, exp):
    """What HerdingBuffer reads from a strategy, with the head grown for exp."""
    model.train()
    model.head.adaptation(exp)
    return SimpleNamespace(model=model, device=torch.device("cpu"), eval_mb_size=7)


def stacked(dataset):
    xs, ys = zip(
        *[(dataset[i][0], dataset[i][1]) for i in range(len(dataset))], strict=True
    )
    return torch.stack(xs), torch.tensor(ys)


def test_herding_buffer_per_class_selection():
    """m per seen class, old classes untouched, eval features, right labels."""
    torch.manual_seed(0)
    bench = make_benchmark(train_transform=AddConstant(5.0))
    model = CosineIncrementalNet(SmallCNN(in_channels=3, width=8))
    buffer = HerdingBuffer(mem_per_class=4)
    history = []
    for t, exp in enumerate(bench.train_stream):
        with torch.no_grad():  # a model that changes between experiences
            for p in model.backbone.parameters():
                p.add_(0.1 * torch.randn_like(p))
        buffer.post_adapt(agent(model, exp), exp)

        new_classes = exp.classes_in_this_experience
        x_eval, y = stacked(exp.dataset.eval())
        model.eval()
        with torch.no_grad():
            features = F.normalize(model.backbone(x_eval), dim=1)
        for c in new_classes:
            members = torch.nonzero(y == c).flatten()
            expected = members[herding_select(features[members], 4)]
            assert torch.equal(buffer.class_indices[c], expected)
        for c, picks in history[-1].items() if history else []:
            assert torch.equal(buffer.class_indices[c], picks)
        history.append({c: p.clone() for c, p in buffer.class_indices.items()})

        seen = 2 * (t + 1)
        assert buffer.seen_classes == list(range(seen))
        assert len(buffer.buffer) == 4 * seen == buffer.max_size
        xb, yb = stacked(buffer.buffer)
        assert torch.bincount(yb).tolist() == [4] * seen
        # samples come with the training transform (x + 5), label by label
        x_train, y_train = stacked(exp.dataset)
        for c in new_classes:
            idx = buffer.class_indices[c]
            assert torch.equal(y_train[idx], torch.full((4,), c))
            torch.testing.assert_close(xb[yb == c], x_train[idx])


def test_herding_buffer_small_class_and_resize():
    """A class smaller than m keeps all its samples; resize keeps prefixes."""
    bench = make_benchmark(train_per_class=3)
    model = CosineIncrementalNet(SmallCNN(in_channels=3, width=8))
    buffer = HerdingBuffer(mem_per_class=5)
    buffer.post_adapt(agent(model, bench.train_stream[0]), bench.train_stream[0])
    assert [len(buffer.class_indices[c]) for c in (0, 1)] == [3, 3]
    assert buffer.max_size == 6  # what it holds, not 2 x mem_per_class
    before = {c: p.clone() for c, p in buffer.class_indices.items()}
    buffer.resize(None, 4)
    assert buffer.mem_per_class == 2 and len(buffer.buffer) == 4 == buffer.max_size
    for c in (0, 1):
        assert torch.equal(buffer.class_indices[c], before[c][:2])


def test_herding_buffer_max_size_is_read_only():
    """max_size follows the memory; setting it is an error, not a no-op."""
    buffer = HerdingBuffer(mem_per_class=5)
    with pytest.raises(AttributeError, match="resize"):
        buffer.max_size = 100
    assert buffer.max_size == 0


@pytest.mark.parametrize("plugin", [ReplayPlugin, BiCPlugin])
def test_herding_buffer_in_avalanche_replay_plugins(plugin):
    """Per class, Avalanche's ReplayPlugin (and BiC) take
    mem_size=buffer.max_size, before and after the memory fills; any other
    mem_size fails Avalanche's own bare assert (see the class docstring)."""
    with pytest.raises(AssertionError):
        plugin(mem_size=200, storage_policy=HerdingBuffer(mem_per_class=20))

    bench = make_benchmark(train_per_class=3)
    model = CosineIncrementalNet(SmallCNN(in_channels=3, width=8))
    buffer = HerdingBuffer(mem_per_class=5)
    assert plugin(mem_size=buffer.max_size, storage_policy=buffer).mem_size == 0
    buffer.post_adapt(agent(model, bench.train_stream[0]), bench.train_stream[0])
    replay = plugin(mem_size=buffer.max_size, storage_policy=buffer)
    assert replay.mem_size == 6 == len(buffer.buffer)
    assert replay.storage_policy is buffer
    with pytest.raises(AssertionError):
        plugin(mem_size=10, storage_policy=buffer)  # 5 per class x 2 classes


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one of mem_per_class .* and max_size"),
        ({"mem_per_class": 20, "max_size": 200}, "exactly one of"),
        ({"max_size": 0}, "max_size must be an integer >= 1"),
        ({"max_size": 2.5}, "max_size must be an integer >= 1"),
    ],
    ids=["neither", "both", "zero_total", "float_total"],
)
def test_herding_buffer_needs_one_size(kwargs, match):
    """Exactly one of mem_per_class and max_size, checked when built."""
    with pytest.raises(ValueError, match=match):
        HerdingBuffer(**kwargs)


def test_herding_buffer_fixed_total_is_the_budget():
    """With max_size, ReplayPlugin's mem_size is the total; max_size is the
    budget, settable (next experience) and applied at once by resize."""
    buffer = HerdingBuffer(max_size=200)
    replay = ReplayPlugin(mem_size=200, storage_policy=buffer)
    assert replay.storage_policy is buffer and buffer.max_size == 200
    assert buffer.mem_per_class is None and buffer.fixed_total
    with pytest.raises(AssertionError):
        ReplayPlugin(mem_size=100, storage_policy=buffer)

    bench = make_benchmark(train_per_class=10)
    model = CosineIncrementalNet(SmallCNN(in_channels=3, width=8))
    buffer = HerdingBuffer(max_size=15)
    buffer.post_adapt(agent(model, bench.train_stream[0]), bench.train_stream[0])
    sizes = {c: len(p) for c, p in buffer.class_indices.items()}
    assert sizes == {0: 8, 1: 7} and buffer.max_size == 15 == len(buffer.buffer)
    before = {c: p.clone() for c, p in buffer.class_indices.items()}

    buffer.max_size = 6  # like Avalanche's buffers: from the next experience on
    assert buffer.max_size == 6 and len(buffer.buffer) == 15
    buffer.resize(None, 5)  # at once
    assert buffer.max_size == 5 == len(buffer.buffer)
    assert {c: len(p) for c, p in buffer.class_indices.items()} == {0: 3, 1: 2}
    for c in (0, 1):
        assert torch.equal(buffer.class_indices[c], before[c][: (3, 2)[c]])
    with pytest.raises(ValueError, match="max_size must be an integer >= 1"):
        buffer.max_size = 0

    # fewer than one exemplar per class: the largest ids get none
    buffer.post_adapt(agent(model, bench.train_stream[1]), bench.train_stream[1])
    buffer.post_adapt(agent(model, bench.train_stream[2]), bench.train_stream[2])
    assert buffer.seen_classes == list(range(6))
    sizes = [len(buffer.class_indices[c]) for c in range(6)]
    assert sizes == [1, 1, 1, 1, 1, 0] and len(buffer.buffer) == 5
    _, y = stacked(buffer.buffer)
    assert y.tolist() == [0, 1, 2, 3, 4]


def test_herding_buffer_fixed_total_state_dict():
    """A fixed-total memory saves its budget; loading it into a per-class
    buffer (or the reverse) is a clear error."""
    bench = make_benchmark(train_per_class=10)
    model = CosineIncrementalNet(SmallCNN(in_channels=3, width=8))
    buffer = HerdingBuffer(max_size=9)
    for exp in bench.train_stream[:2]:
        buffer.post_adapt(agent(model, exp), exp)
    state = buffer.state_dict()
    assert state["max_size"] == 9 and "mem_per_class" not in state

    restored = HerdingBuffer(max_size=100)
    restored.load_state_dict(state, bench.train_stream)
    assert restored.max_size == 9 and restored.seen_classes == buffer.seen_classes
    for c in buffer.seen_classes:
        assert torch.equal(restored.class_indices[c], buffer.class_indices[c])
    assert torch.equal(stacked(restored.buffer)[0], stacked(buffer.buffer)[0])

    with pytest.raises(ValueError, match=r"max_size=9.*HerdingBuffer\(max_size=...\)"):
        HerdingBuffer(mem_per_class=3).load_state_dict(state, bench.train_stream)
    per_class = HerdingBuffer(mem_per_class=3)
    per_class.post_adapt(agent(model, bench.train_stream[0]), bench.train_stream[0])
    with pytest.raises(ValueError, match="mem_per_class=3"):
        restored.load_state_dict(per_class.state_dict(), bench.train_stream)


def test_herding_buffer_fixed_total_with_naive_and_replay_plugin():
    """Naive + ReplayPlugin(mem_size=B, HerdingBuffer(max_size=B)): the memory
    is class-balanced, holds B exemplars once there are enough, is replayed,
    and every class keeps a prefix of its herding order."""
    torch.manual_seed(0)
    budget = 25
    bench = make_benchmark()  # 6 classes, 2 per experience, 30 samples each
    model = SimpleMLP(num_classes=6, input_size=3 * 8 * 8, hidden_size=32)
    buffer = HerdingBuffer(max_size=budget, feature_layer="features")
    orders: dict[int, torch.Tensor] = {}  # a class's full herding order
    replayed: list[set[int]] = []

    def herding_orders(strategy):
        """Right after the memory's update: every class's picks are a prefix
        of its herding order (the new classes' computed here, on the same
        eval features), and the memory is class-balanced within the budget."""
        exp = strategy.experience
        x, y = stacked(exp.dataset.eval())
        model.eval()
        with torch.no_grad():
            features = F.normalize(model.features(x.flatten(1)), dim=1)
        for c in exp.classes_in_this_experience:
            members = torch.nonzero(y == c).flatten()
            orders[c] = members[herding_select(features[members], len(members))]
        seen = len(buffer.seen_classes)
        shares = [budget // seen + (i < budget % seen) for i in range(seen)]
        assert [len(buffer.class_indices[c]) for c in range(seen)] == shares
        assert max(shares) - min(shares) <= 1
        for c in range(seen):
            picks = buffer.class_indices[c]
            assert torch.equal(picks, orders[c][: len(picks)])
        assert buffer.max_size == budget == len(buffer.buffer)
        _, yb = stacked(buffer.buffer)
        assert torch.bincount(yb, minlength=seen).tolist() == shares

    def record_replay(strategy):
        if strategy.clock.train_exp_counter > 0:
            replayed[-1].update(strategy.mb_y.tolist())

    strategy = Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
        train_mb_size=16,
        train_epochs=1,
        eval_mb_size=64,
        plugins=[
            ReplayPlugin(mem_size=budget, storage_policy=buffer),
            Probe(
                after_training_exp=herding_orders,
                before_backward=record_replay,
            ),
        ],
        evaluator=EvaluationPlugin(loggers=[]),
        device="cpu",
    )
    for t, exp in enumerate(bench.train_stream):
        replayed.append(set())
        strategy.train(exp)
        if t > 0:  # the memory's classes come back in the batches
            assert set(range(2 * t)) <= replayed[-1]
    assert [len(buffer.class_indices[c]) for c in range(6)] == [5, 4, 4, 4, 4, 4]
