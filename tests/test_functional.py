"""Checks of ``bdr_avalanche.functional`` against plain reference code.

The references (:mod:`reference.formulas`) are deliberately naive float64
implementations of the papers' formulas (written out in ``docs/math.md``),
with Python loops over classes or samples, written independently of the
vectorised functions under test.
"""

from __future__ import annotations

import math

import pytest
import torch
from reference.formulas import (
    ref_class_statistics,
    ref_cwd_loss,
    ref_herding,
    ref_less_forget,
    ref_log_prior,
    ref_margin_ranking,
)
from torch.testing import assert_close

from bdr_avalanche import functional as fn

SEEDS = [0, 1, 2]


def _labels(sizes):
    """Shuffled label vector with ``sizes[c]`` samples of class ``c``."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    return labels[torch.randperm(labels.numel())]


# ---------------------------------------------------------------------------
# bdr_log_prior
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("m", [0.0, 0.8, 1.0])
@pytest.mark.parametrize("tau", [1.0, 0.5, 2.0])
def test_bdr_log_prior_matches_reference(seed, m, tau):
    torch.manual_seed(seed)
    counts = torch.randint(1, 500, (7,))
    counts[2] = 0  # absent class, with a stale non-zero scatter
    scatters = torch.rand(7) * 2.0 + 0.1
    scatters[4] = 0.0  # class whose features coincide
    out = fn.bdr_log_prior(counts, scatters, m=m, tau=tau)
    assert out.dtype == torch.float32 and out.shape == (7,)
    assert torch.isfinite(out).all()
    ref = ref_log_prior(counts, scatters, m, tau)
    assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    # an absent class is pushed to log(1e-12) whatever m and tau
    assert_close(out[2].double(), torch.tensor(math.log(1e-12)).double())


def test_bdr_log_prior_hand_values():
    counts = torch.tensor([3, 1, 0])
    scatters = torch.tensor([1.0, 0.5, 7.0])
    # psi = (3/4, 1/4, 0); omega = (1/3, 2/3, 0)
    out = fn.bdr_log_prior(counts, scatters, m=0.5, tau=1.0)
    expected = torch.log(torch.tensor([0.75 / 2 + 1 / 6, 0.125 + 1 / 3, 0.0]) + 1e-12)
    assert_close(out, expected)


# ---------------------------------------------------------------------------
# class_statistics / update_class_statistics
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_class_statistics_matches_reference(seed):
    torch.manual_seed(seed)
    targets = _labels([5, 1, 0, 3, 8])  # class 1 single, class 2 absent
    features = torch.randn(targets.numel(), 6) * 3.0 + 1.0
    counts, centres, scatters = fn.class_statistics(features, targets, 5)
    r_counts, r_centres, r_scatters = ref_class_statistics(features, targets, 5)
    assert_close(counts.double(), r_counts)
    assert_close(centres.double(), r_centres, rtol=1e-5, atol=1e-5)
    assert_close(scatters.double(), r_scatters, rtol=1e-5, atol=1e-5)
    assert scatters[1] == 0 and scatters[2] == 0 and (centres[2] == 0).all()


def test_update_class_statistics_by_hand():
    """Centres blended N/(N+b), b/(N+b) for every class in the batch; the
    batch scatter taken about the updated centre; scatters blended for
    b >= 2 only; an absent class untouched. (The whole-phase comparison
    with the paper's code is in test_bdr_reference.py.)"""
    # class 0: N = 2, batch {0, 4}: centre (2*0 + 4) / 4 = 1, batch scatter
    # about 1: (1 + 9) / 2 = 5, scatter (2*1 + 2*5) / 4 = 3
    # class 1: N = 3, batch {4}: centre (3*0 + 4) / 4 = 1, scatter kept
    # class 2: absent
    new_c, new_s = fn.update_class_statistics(
        torch.tensor([2, 3, 5]),
        torch.zeros(3, 1),
        torch.ones(3),
        torch.tensor([[0.0], [4.0], [4.0]]),
        torch.tensor([0, 0, 1]),
    )
    assert_close(new_c, torch.tensor([[1.0], [1.0], [0.0]]))
    assert_close(new_s, torch.tensor([3.0, 1.0, 1.0]))


# ---------------------------------------------------------------------------
# class_wise_decorrelation_loss
# ---------------------------------------------------------------------------


def _cwd_batch(seed):
    """Batch with classes of 1, 2, 3, 5 and 6 samples (labels not contiguous);
    the 3-sample class has identical features (zero variance)."""
    torch.manual_seed(seed)
    sizes = {7: 1, 3: 2, 42: 3, 0: 5, 11: 6}
    targets = torch.cat([torch.full((n,), c) for c, n in sizes.items()])
    targets = targets[torch.randperm(targets.numel())]
    features = torch.randn(targets.numel(), 6)
    features[targets == 42] = torch.randn(6)
    return features, targets


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("reject_threshold", [1, 2])
def test_cwd_matches_reference_value_and_gradient(seed, reject_threshold):
    features, targets = _cwd_batch(seed)
    x = features.clone().requires_grad_(True)
    loss = fn.class_wise_decorrelation_loss(x, targets, reject_threshold)
    loss.backward()
    x_ref = features.double().requires_grad_(True)
    ref = ref_cwd_loss(x_ref, targets, reject_threshold)
    ref.backward()
    assert ref > 0
    assert_close(loss.double(), ref.detach(), rtol=1e-4, atol=1e-6)
    assert torch.isfinite(x.grad).all()
    assert_close(x.grad.double(), x_ref.grad, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_cwd_skips_small_classes(seed):
    features, targets = _cwd_batch(seed)
    counts = {c: int((targets == c).sum()) for c in targets.tolist()}
    for threshold in (1, 2):
        keep = torch.tensor([counts[c] > threshold for c in targets.tolist()])
        full = fn.class_wise_decorrelation_loss(features, targets, threshold)
        kept = fn.class_wise_decorrelation_loss(
            features[keep], targets[keep], threshold
        )
        assert_close(full, kept, rtol=1e-5, atol=1e-7)
    # raising the threshold to 2 removes the 2-sample class
    assert not torch.allclose(
        fn.class_wise_decorrelation_loss(features, targets, 1),
        fn.class_wise_decorrelation_loss(features, targets, 2),
    )


def test_cwd_all_classes_rejected_is_zero():
    torch.manual_seed(0)
    features = torch.randn(5, 4, requires_grad=True)
    loss = fn.class_wise_decorrelation_loss(features, torch.arange(5), 1)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(features.grad).all()
    targets = torch.tensor([0, 0, 1, 1, 2])
    assert fn.class_wise_decorrelation_loss(features, targets, 2).item() == 0.0
    assert fn.class_wise_decorrelation_loss(features, targets, 1).item() > 0.0


def test_cwd_zero_variance_class_contributes_nothing():
    torch.manual_seed(0)
    features = torch.randn(4, 5).repeat(2, 1)  # classes 0 and 1 hold rows 0..3
    features[4:] = torch.randn(5)  # class 1: four identical rows
    targets = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    x = features.clone().requires_grad_(True)
    loss = fn.class_wise_decorrelation_loss(x, targets)
    loss.backward()
    assert torch.isfinite(x.grad).all()
    # class 1 adds 0 to the sum but its 4 samples count in the denominator
    alone = fn.class_wise_decorrelation_loss(features[:4], targets[:4])
    assert_close(loss, alone / 2, rtol=1e-5, atol=1e-7)
    assert_close(
        loss.double(), ref_cwd_loss(features.double(), targets), rtol=1e-4, atol=1e-6
    )


# ---------------------------------------------------------------------------
# less_forget_loss
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_less_forget_matches_reference(seed):
    torch.manual_seed(seed)
    features = torch.randn(9, 7, requires_grad=True)
    old = torch.randn(9, 7, requires_grad=True)
    loss = fn.less_forget_loss(features, old)
    assert_close(loss.double(), torch.tensor(ref_less_forget(features, old)).double())
    loss.backward()
    assert features.grad is not None and old.grad is None  # old side detached
    same = fn.less_forget_loss(old.detach() * 3.0, old)
    assert_close(same, torch.tensor(0.0), atol=1e-6, rtol=0)
    opposite = fn.less_forget_loss(-old.detach(), old)
    assert_close(opposite, torch.tensor(2.0))


# ---------------------------------------------------------------------------
# margin_ranking_loss
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("margin", [0.5, 0.2])
def test_margin_ranking_matches_reference(seed, k, margin):
    torch.manual_seed(seed)
    num_old, num_classes = 6, 10
    scores = torch.rand(16, num_classes) * 2.0 - 1.0
    targets = torch.randint(0, num_classes, (16,))
    targets[:3] = torch.tensor([0, 5, 2])  # at least some old-class samples
    out = fn.margin_ranking_loss(scores, targets, num_old, margin=margin, k=k)
    ref = ref_margin_ranking(scores, targets, num_old, margin, k)
    assert ref > 0
    assert_close(out.double(), torch.tensor(ref).double(), rtol=1e-5, atol=1e-6)


def test_margin_ranking_no_old_samples_is_zero():
    torch.manual_seed(0)
    scores = torch.rand(8, 10, requires_grad=True)
    targets = torch.randint(6, 10, (8,))
    out = fn.margin_ranking_loss(scores, targets, 6, margin=0.5, k=2)
    assert out.item() == 0.0
    out.backward()
    assert torch.isfinite(scores.grad).all()


def test_margin_ranking_hand_values():
    # one old sample (class 0, s_gt = 0.9); new classes 2, 3, 4 score
    # 0.7, 0.1, 0.5 -> hinges with margin 0.5: 0.3 (k=1), then 0.1 (k=2)
    scores = torch.tensor([[0.9, 0.0, 0.7, 0.1, 0.5], [0.0, 0.0, 1.0, 1.0, 1.0]])
    targets = torch.tensor([0, 3])
    assert_close(
        fn.margin_ranking_loss(scores, targets, 2, margin=0.5, k=1), torch.tensor(0.3)
    )
    assert_close(
        fn.margin_ranking_loss(scores, targets, 2, margin=0.5, k=2), torch.tensor(0.2)
    )


# ---------------------------------------------------------------------------
# herding_select
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("m", [0, 1, 7, 30, 37])
def test_herding_matches_brute_force(seed, m):
    torch.manual_seed(seed)
    n = 30
    features = torch.nn.functional.normalize(torch.randn(n, 8), dim=1)
    picks = fn.herding_select(features, m)
    assert picks.dtype == torch.int64 and picks.shape == (min(m, n),)
    assert len(set(picks.tolist())) == min(m, n)
    assert picks.tolist() == ref_herding(features, m)


@pytest.mark.parametrize("seed", SEEDS)
def test_herding_picks_are_avalanches_first_m(seed):
    # Avalanche ranks the whole class; its first m are the same exemplars
    from avalanche.training.storage_policy import HerdingSelectionStrategy

    torch.manual_seed(seed)
    features = torch.nn.functional.normalize(torch.randn(200, 64), dim=1)
    ranking = HerdingSelectionStrategy(torch.nn.Identity(), "")
    expected = ranking.make_sorted_indices_from_features(features)[:20]
    assert fn.herding_select(features, 20).tolist() == list(expected)


def test_herding_hand_example():
    # mean 3.25: herding gives [2, 1, 3, 0]; plain nearest-to-mean would give
    # [2, 1, 0, 3]
    features = torch.tensor([[0.0], [1.0], [2.0], [10.0]])
    assert fn.herding_select(features, 4).tolist() == [2, 1, 3, 0]
    assert fn.herding_select(features, 10).tolist() == [2, 1, 3, 0]
    assert ref_herding(features, 4) == [2, 1, 3, 0]
