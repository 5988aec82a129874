"""A non-finite loss term stops training with a message naming the term and
the experience; the strategy's state survives a save/load round trip."""

from __future__ import annotations

import pytest
import torch
from avalanche.training import Naive
from helpers import make_tiny_lucir
from torch import nn

import bdr_avalanche.plugins.bdr as bdr_module
import bdr_avalanche.plugins.lucir as lucir_module
from bdr_avalanche import LUCIR
from bdr_avalanche.plugins import BDRPlugin, FiniteLossGuard, NonFiniteLossError
from bdr_avalanche.plugins.guard import step_loss_terms
from bdr_avalanche.protocol import make_evaluator


def make_lucir(check_every: int = 1, **kwargs) -> LUCIR:
    return make_tiny_lucir(finite_check_every=check_every, **kwargs)


def nan_like(function):
    def wrapped(*args, **kwargs):
        return function(*args, **kwargs) * float("nan")

    return wrapped


@pytest.mark.parametrize("check_every", [1, 1000])
def test_nan_margin_ranking_term_is_named_with_its_experience(
    benchmark, monkeypatch, check_every
):
    monkeypatch.setattr(
        lucir_module,
        "margin_ranking_loss",
        nan_like(lucir_module.margin_ranking_loss),
    )
    strategy = make_lucir(check_every, cwd=True, bdr=True)
    strategy.train(benchmark.train_stream[0])  # no margin term in experience 0
    with pytest.raises(NonFiniteLossError) as info:
        strategy.train(benchmark.train_stream[1])
    message = str(info.value)
    assert "margin_ranking" in message
    assert "in experience 1" in message
    if check_every == 1:  # stopped at once, before NaN weights spread it
        for finite in ("classification", "less_forget", "bdr_prior"):
            assert finite not in message
    else:  # found at the end of the epoch, after NaN updates
        assert "classification" in message


def test_infinite_bdr_prior_is_named(benchmark, monkeypatch):
    def infinite_prior(*args, **kwargs):
        return torch.full((args[0].shape[0],), float("inf"))

    monkeypatch.setattr(bdr_module, "bdr_log_prior", infinite_prior)
    strategy = make_lucir(bdr=True)
    strategy.train(benchmark.train_stream[0])
    with pytest.raises(NonFiniteLossError, match="bdr_prior.*in experience 1"):
        strategy.train(benchmark.train_stream[1])


def test_guard_on_an_avalanche_strategy_checks_the_total_loss(benchmark):
    class Exploding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))

        def forward(self, x):
            return self.net(x) * float("inf")

    strategy = Naive(
        model=Exploding(),
        optimizer=torch.optim.SGD([p for p in Exploding().parameters()], lr=0.1),
        criterion=nn.CrossEntropyLoss(),
        train_mb_size=16,
        device="cpu",
        plugins=[FiniteLossGuard(check_every=3)],
        evaluator=make_evaluator(),
    )
    with pytest.raises(NonFiniteLossError, match=r"term\(s\) loss in experience 0"):
        strategy.train(benchmark.train_stream[0])


def test_finite_training_is_not_stopped(benchmark):
    strategy = make_lucir(cwd=True, bdr=True)
    for experience in benchmark.train_stream:
        strategy.train(experience)


def test_state_dict_round_trip_restores_model_memory_and_teacher(benchmark):
    first = make_lucir(cwd=True, bdr=True)
    for experience in benchmark.train_stream[:2]:
        first.train(experience)
    state = first.state_dict()

    second = make_lucir(cwd=True, bdr=True)
    second.load_state_dict(state, benchmark.train_stream)
    assert second.clock.train_exp_counter == 2
    assert second.model.head.num_classes == first.model.head.num_classes
    # the old rows are frozen again, the last block trainable
    assert [b.requires_grad for b in second.model.head.blocks] == [False, True]
    x = torch.randn(8, 3, 8, 8)
    first.model.eval(), second.model.eval()
    torch.testing.assert_close(second.model(x), first.model(x), rtol=0, atol=0)
    torch.testing.assert_close(
        second.lucir.old_model(x), first.lucir.old_model(x), rtol=0, atol=0
    )
    assert second.lucir.num_old_classes == first.lucir.num_old_classes
    memory_a, memory_b = first.storage_policy, second.storage_policy
    assert memory_a.seen_classes == memory_b.seen_classes
    for cls in memory_a.seen_classes:
        assert torch.equal(memory_a.class_indices[cls], memory_b.class_indices[cls])
    xs_a = torch.stack([s[0] for s in memory_a.buffer.eval()])
    xs_b = torch.stack([s[0] for s in memory_b.buffer.eval()])
    assert torch.equal(xs_a, xs_b)


def test_state_dict_of_bdr_alone(benchmark):
    plugin = BDRPlugin()
    plugin.prior = torch.tensor([0.5, -1.0])
    restored = BDRPlugin()
    restored.load_state_dict(plugin.state_dict(), "cpu")
    assert torch.equal(restored.prior, plugin.prior)
    assert restored.centres is None


def test_memory_from_changed_data_is_refused(benchmark):
    strategy = make_lucir()
    strategy.train(benchmark.train_stream[0])
    state = strategy.state_dict()
    state["memory"]["classes"][0]["indices"] = torch.tensor([10_000])
    with pytest.raises(ValueError, match="the data changed"):
        make_lucir().load_state_dict(state, benchmark.train_stream)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_lucir_cwd_bdr_train_finite_under_autocast(benchmark, dtype):
    """Every step is checked by the guard (check_every=1): no term of LUCIR,
    CwD or BDR becomes non-finite with the forward pass in half precision."""
    strategy = make_lucir(cwd=True, bdr=True)
    with torch.autocast("cpu", dtype=dtype):
        for experience in benchmark.train_stream:
            strategy.train(experience)
    terms = step_loss_terms(strategy)
    assert {"classification", "less_forget", "margin_ranking", "bdr_prior"} <= set(
        terms
    )
    assert all(torch.isfinite(t).all() for t in terms.values())
