"""HerdingBuffer: m exemplars per class, herding on eval features."""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from conftest import AddConstant, make_benchmark

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
    before = {c: p.clone() for c, p in buffer.class_indices.items()}
    buffer.resize(None, 4)
    assert buffer.mem_per_class == 2 and len(buffer.buffer) == 4
    for c in (0, 1):
        assert torch.equal(buffer.class_indices[c], before[c][:2])
