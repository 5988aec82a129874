"""LUCIR strategy and plugin: adaptive weight, frozen rows, shared scale."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import make_tiny_lucir
from probe import Probe

from bdr_avalanche.params import LUCIRParams

make_lucir = make_tiny_lucir


def test_adaptive_weight_and_less_forget_value(benchmark):
    """lambda = lambda_base * sqrt(K_old / K_new); the term matches its formula."""
    seen = []

    def check(strategy):
        lucir = strategy.lucir
        if lucir.old_model is None:
            assert "less_forget" not in lucir.last_losses
            return
        head = strategy.model.head
        k_old = lucir.num_old_classes
        k_new = head.num_classes - k_old
        assert math.isclose(lucir.lambda_, 3.0 * math.sqrt(k_old / k_new))
        with torch.no_grad():
            f = strategy.model.backbone(strategy.mb_x)
            f_old = lucir.old_model.backbone(strategy.mb_x)
        expected = lucir.lambda_ * (1 - F.cosine_similarity(f, f_old)).mean()
        torch.testing.assert_close(lucir.last_losses["less_forget"], expected)
        seen.append((k_old, k_new))

    strategy = make_lucir(
        Probe(before_backward=check), lucir=LUCIRParams(lambda_base=3.0)
    )
    for exp in benchmark.train_stream:
        strategy.train(exp)
    assert set(seen) == {(2, 2), (4, 2)}


def test_margin_ranking_uses_unscaled_scores(benchmark):
    """The margin loss equals its formula on logits / sigma."""

    def check(strategy):
        lucir = strategy.lucir
        if lucir.old_model is None:
            return
        scores = strategy.mb_output.detach() / strategy.model.head.sigma.detach()
        with torch.no_grad():
            cos = strategy.model.head.cosine(strategy.model.backbone(strategy.mb_x))
        torch.testing.assert_close(scores, cos, atol=1e-5, rtol=1e-5)
        y, k_old = strategy.mb_y, lucir.num_old_classes
        terms = []
        for i in range(len(y)):
            if y[i] < k_old:
                hard = scores[i, k_old:].topk(2).values
                terms += (0.5 - scores[i, y[i]] + hard).clamp_min(0).tolist()
        expected = torch.tensor(sum(terms) / len(terms) if terms else 0.0)
        torch.testing.assert_close(
            lucir.last_losses["margin_ranking"], expected, atol=1e-5, rtol=1e-5
        )

    probe = Probe(before_backward=check)
    strategy = make_lucir(probe)
    for exp in benchmark.train_stream[:2]:
        strategy.train(exp)
    assert probe.calls["before_backward"] > 0


def test_old_rows_get_no_gradient_and_scale_is_shared(benchmark):
    """Old class rows are frozen; one learnable sigma serves every class."""
    grads = []

    def check(strategy):
        head = strategy.model.head
        grads.append([b.grad is not None for b in head.blocks])
        assert head.sigma.grad is not None

    strategy = make_lucir(Probe(after_backward=check))
    strategy.train(benchmark.train_stream[0])
    head = strategy.model.head
    first_block = head.blocks[0].detach().clone()
    sigma_before = head.sigma.detach().clone()
    strategy.train(benchmark.train_stream[1])

    assert grads[0] == [True]
    assert grads[-1] == [False, True]
    torch.testing.assert_close(head.blocks[0].detach(), first_block)
    assert not torch.equal(head.sigma.detach(), sigma_before)
    sigmas = [n for n, _ in strategy.model.named_parameters() if "sigma" in n]
    assert sigmas == ["head.sigma"] and head.sigma.numel() == 1
    optimized = {id(p) for g in strategy.optimizer.param_groups for p in g["params"]}
    assert id(head.sigma) in optimized and id(head.blocks[0]) not in optimized


def test_last_relu_is_removed(benchmark):
    """The backbone's final ReLU is off: features take negative values."""
    strategy = make_lucir()
    assert strategy.model.backbone.last_relu is False
    x = torch.stack([benchmark.train_stream[0].dataset[i][0] for i in range(32)])
    strategy.model.eval()
    with torch.no_grad():
        assert (strategy.model.backbone(x) < 0).any()


def test_first_experience_lr_and_batch_size(benchmark):
    """first_lr and first_batch_size apply to the first experience only."""
    seen = []

    def check(strategy):
        seen.append((strategy.optimizer.param_groups[0]["lr"], strategy.train_mb_size))

    strategy = make_lucir(
        Probe(before_training_exp=check), lr=0.05, first_lr=0.2, first_batch_size=8
    )
    for exp in benchmark.train_stream[:2]:
        strategy.train(exp)
    assert seen == [(0.2, 8), (0.05, 16)]


def test_memory_is_mixed_into_the_data(benchmark):
    """Old-class exemplars share mini-batches with the new data."""
    batches = []

    def check(strategy):
        if strategy.clock.train_exp_counter == 1:
            batches.append(strategy.mb_y.clone())

    strategy = make_lucir(Probe(before_forward=check))
    for exp in benchmark.train_stream[:2]:
        strategy.train(exp)
    labels = torch.cat(batches)
    assert len(labels) == 60 + 2 * 5
    assert (labels < 2).sum() == 10
    assert any(((b < 2).any() and (b >= 2).any()) for b in batches)


def test_evaluating_unseen_classes_gives_them_accuracy_zero(benchmark):
    """Classes the head does not have yet are evaluated, with accuracy 0."""
    strategy = make_lucir()
    strategy.train(benchmark.train_stream[0])
    metrics = strategy.eval(benchmark.test_stream)
    key = "Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp{:03d}"
    assert metrics[key.format(1)] == metrics[key.format(2)] == 0.0


def test_learning_rate_schedule_restarts_each_experience(benchmark):
    """MultiStepLR decays at the milestones and restarts with each experience."""
    lrs = []

    def check(strategy):
        lrs.append(round(strategy.optimizer.param_groups[0]["lr"], 6))

    strategy = make_lucir(
        Probe(before_training_epoch=check), epochs=3, lr=0.1, milestones=[1, 2]
    )
    for exp in benchmark.train_stream[:2]:
        strategy.train(exp)
    assert lrs == [0.1, 0.01, 0.001] * 2


def test_k_larger_than_new_classes_is_rejected(benchmark):
    """k must not exceed the number of new classes of an experience: the
    stream tells at the start of the first experience, before any step."""
    strategy = make_lucir(lucir=LUCIRParams(k=3))
    with pytest.raises(ValueError, match=r"k must be in \[1, 2\].*experience 1"):
        strategy.train(benchmark.train_stream[0])
    assert strategy.clock.train_iterations == 0
