"""Numerical safety of ``bdr_avalanche.functional`` in reduced precision.

Every per-step function of BDR, CwD and LUCIR is run

- under ``torch.autocast("cpu", dtype=bfloat16 | float16)`` with float32
  inputs, and
- on inputs that already are bfloat16 / float16 (features coming out of an
  autocast model on a GPU),

on ordinary batches and on degenerate ones: a class with one sample, a class
whose features coincide (zero scatter), all-zero feature vectors, a class
absent from the batch, no class qualifying for CwD, features of magnitude
1e4 (their squares overflow float16) and 1e-6.

Checks, with the tolerances they use:

- the output is float32 and finite; the gradient w.r.t. the features (or
  scores) is finite and has the input's dtype;
- ``VALUE_RTOL``: the functions compute in float32 internally, so the
  output equals the float32 result on the same (rounded) inputs up to
  float32 rounding;
- ``GRAD_RTOL``: the gradient equals the float32 gradient on the same
  inputs up to one rounding to the input's dtype (relative to the largest
  entry; entries below the dtype's smallest normal number are not
  resolved: e.g. CwD's gradient for 1e4-scale features, ~1e-8, flushes to 0
  in float16);
- ``END_TO_END_RTOL``: against the float32 result on the *unrounded*
  inputs, the only error left is the rounding of the inputs to the reduced
  dtype (unit roundoff 2**-8 for bfloat16, 2**-11 for float16), amplified
  by the conditioning of each loss; the bound is relative to the value
  (plus an absolute term scaled by the largest input for the statistics
  and the margin ranking loss), and is multiplied by
  ``smallest normal / max |x|`` for inputs that are subnormal in the
  reduced dtype (1e-6 in float16, rounded to an absolute spacing of 6e-8).
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.testing import assert_close

from bdr_avalanche import functional as fn

N, D, NUM_CLASSES = 32, 512, 6  # ResNet-18-sized features; classes 4, 5 absent

#: name -> (dtype of the inputs, autocast dtype or None)
PRECISIONS = {
    "autocast-bf16": (torch.float32, torch.bfloat16),
    "autocast-fp16": (torch.float32, torch.float16),
    "input-bf16": (torch.bfloat16, None),
    "input-fp16": (torch.float16, None),
}
VALUE_RTOL = 1e-4
GRAD_RTOL = {torch.float32: 1e-4, torch.bfloat16: 1e-2, torch.float16: 2e-3}
END_TO_END_RTOL = {torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 1e-2}

FEATURE_CASES = [
    "normal",
    "large",  # magnitude 1e4: squares and norms overflow float16
    "tiny",  # magnitude 1e-6: subnormal in float16
    "single",  # class 3 has one sample
    "identical",  # all features of class 0 coincide: zero scatter
    "zero_class",  # all features of class 0 are zero vectors
    "zero_row",  # one zero feature vector in class 1
]


def _labels() -> torch.Tensor:
    """Classes 0, 1, 2 with 10 samples, class 3 with 2; 4 and 5 absent."""
    return torch.tensor([0] * 10 + [1] * 10 + [2] * 10 + [3] * 2)


def _features(case: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    targets = _labels()
    x = torch.randn(N, D, generator=gen) + 0.5 * torch.randn(D, generator=gen)
    if case == "large":
        x = x * 1e4
    elif case == "tiny":
        x = x * 1e-6
    elif case == "single":
        targets = targets.clone()
        targets[-1] = 2  # class 3 keeps one sample
    elif case == "identical":
        x[targets == 0] = torch.randn(D, generator=gen)
    elif case == "zero_class":
        x[targets == 0] = 0.0
    elif case == "zero_row":
        x[10] = 0.0
    elif case != "normal":
        raise ValueError(case)
    return x, targets


def _run(func, x: torch.Tensor, precision: str | None, *args):
    """``func(leaf, *args)`` at ``precision`` (float32 when ``None``), the
    leaf being a copy of ``x`` in the precision's input dtype; returns the
    leaf and the output."""
    if precision is None:
        dtype, autocast = torch.float32, None
    else:
        dtype, autocast = PRECISIONS[precision]
    leaf = x.to(dtype, copy=True).requires_grad_(True)
    ctx = (
        torch.autocast("cpu", dtype=autocast)
        if autocast is not None
        else contextlib.nullcontext()
    )
    with ctx:
        out = func(leaf, *args)
    return leaf, out


def _grad(out: torch.Tensor, leaf: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(out, leaf)
    return grad


def _check(func, x, precision, *args, atol=0.0, end_to_end_atol=0.0):
    """Run ``func`` (returning a scalar or vector; its sum is
    differentiated) at ``precision`` and compare with float32."""
    dtype = PRECISIONS[precision][0]
    leaf, out = _run(func, x, precision, *args)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    grad = _grad(out.sum(), leaf)
    assert grad.dtype == dtype
    assert torch.isfinite(grad).all()

    # float32 on the same (rounded) inputs: only float32 rounding differs
    ref_leaf, ref = _run(func, leaf.detach().float(), None, *args)
    assert_close(out, ref, rtol=VALUE_RTOL, atol=atol)
    ref_grad = _grad(ref.sum(), ref_leaf)
    grad_atol = max(
        GRAD_RTOL[dtype] * float(ref_grad.abs().max()), torch.finfo(dtype).tiny
    )
    assert_close(grad.float(), ref_grad, rtol=GRAD_RTOL[dtype], atol=grad_atol)

    # float32 on the unrounded inputs: the input rounding is all that is left;
    # inputs below the smallest normal number (1e-6 in float16) are rounded
    # to a fixed absolute spacing, so their relative rounding is larger
    _, exact = _run(func, x, None, *args)
    scale, tiny = float(x.abs().max()), torch.finfo(dtype).tiny
    rtol = END_TO_END_RTOL[dtype] * (max(1.0, tiny / scale) if scale > 0 else 1.0)
    assert_close(out, exact.detach(), rtol=rtol, atol=end_to_end_atol)
    return out.detach(), grad


# ---------------------------------------------------------------------------
# CwD
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("case", FEATURE_CASES)
def test_cwd_reduced_precision(case, precision):
    x, targets = _features(case)
    _check(fn.class_wise_decorrelation_loss, x, precision, targets, atol=1e-7)


@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("reject_threshold", [1, 10])
def test_cwd_no_class_qualifies(precision, reject_threshold):
    x, targets = _features("normal")
    if reject_threshold == 1:
        targets = torch.arange(N)  # every class has a single sample
    leaf, out = _run(
        fn.class_wise_decorrelation_loss, x, precision, targets, reject_threshold
    )
    assert out.dtype == torch.float32 and out == 0.0
    grad = _grad(out, leaf)
    assert torch.isfinite(grad).all() and (grad == 0).all()


def test_cwd_zero_vectors_get_a_bounded_gradient():
    # F.normalize's eps=1e-12 gave a zero feature vector the gradient g/eps
    # (~1e10 here, inf in float16); it is now that of the identity.
    x, targets = _features("zero_row")
    for dtype in (torch.float32, torch.float16):
        leaf = x.to(dtype).requires_grad_(True)
        grad = _grad(fn.class_wise_decorrelation_loss(leaf, targets), leaf)
        assert torch.isfinite(grad).all() and grad.abs().max() < 1.0


def test_cwd_leaves_autocast_on():
    x, targets = _features("normal")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fn.class_wise_decorrelation_loss(x, targets)
        assert torch.is_autocast_enabled("cpu")
        assert (x @ x.T).dtype == torch.bfloat16


# ---------------------------------------------------------------------------
# LUCIR: less-forget
# ---------------------------------------------------------------------------

LF_CASES = [*FEATURE_CASES, "zero_old"]


@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("case", LF_CASES)
def test_less_forget_reduced_precision(case, precision):
    x, _ = _features("normal" if case == "zero_old" else case)
    # old features close to the new ones (a small loss, ~3e-3, so relative
    # errors are seen), rounded to the same dtype as the new ones
    gen = torch.Generator().manual_seed(1)
    old = x + 0.1 * x.abs().mean() * torch.randn(N, D, generator=gen)
    if case == "zero_old":
        old[:4] = 0.0
    if case == "zero_class":
        old[:3] = 0.0  # zero on both sides

    def loss(both):  # new and old features stacked, rounded alike
        return fn.less_forget_loss(both[:N], both[N:])

    out, grad = _check(loss, torch.cat([x, old]), precision, atol=1e-6)
    assert (grad[N:] == 0).all()  # the old side is detached
    assert 0.0 <= out <= 2.0


def test_less_forget_zero_vectors():
    # cos(0, b) = 0: loss 1 per such sample, finite bounded gradient (was nan
    # in float16: the eps of cosine_similarity rounds to 0)
    old = torch.randn(4, 8)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        leaf = torch.zeros(4, 8, dtype=dtype, requires_grad=True)
        out = fn.less_forget_loss(leaf, old.to(dtype))
        assert out.dtype == torch.float32
        assert_close(out, torch.tensor(1.0))
        grad = _grad(out, leaf)
        assert torch.isfinite(grad).all() and grad.abs().max() < 1.0
        assert fn.less_forget_loss(old.to(dtype), torch.zeros(4, 8, dtype=dtype)) == 1


# ---------------------------------------------------------------------------
# LUCIR: margin ranking
# ---------------------------------------------------------------------------

K_TOTAL, K_OLD = 10, 5
MR_CASES = ["normal", "large", "tiny", "no_old", "all_old", "ties"]


def _scores(case: str) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    scores = torch.tanh(torch.randn(N, K_TOTAL, generator=gen))  # cosine-like
    targets = torch.randint(0, K_TOTAL, (N,), generator=gen)
    if case == "large":
        scores = scores * 1e4  # e.g. logits passed with sigma ~ 1e4
    elif case == "tiny":
        scores = scores * 1e-6
    elif case == "no_old":
        targets = targets % (K_TOTAL - K_OLD) + K_OLD
    elif case == "all_old":
        targets = targets % K_OLD
    elif case == "ties":
        scores = torch.zeros(N, K_TOTAL)
    elif case != "normal":
        raise ValueError(case)
    return scores, targets


@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("case", MR_CASES)
def test_margin_ranking_reduced_precision(case, precision):
    scores, targets = _scores(case)
    spread = float(scores.abs().max())

    def loss(s):
        return fn.margin_ranking_loss(s, targets, K_OLD, margin=0.5, k=2)

    # the hinge is Lipschitz in the scores: the input rounding moves it by
    # at most a few ulps of the largest score
    eps = torch.finfo(PRECISIONS[precision][0]).eps
    out, _ = _check(
        loss, scores, precision, atol=1e-6, end_to_end_atol=4 * eps * spread
    )
    if case == "no_old":
        assert out == 0.0


# ---------------------------------------------------------------------------
# BDR: class statistics, prior, running update
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("case", FEATURE_CASES)
@pytest.mark.parametrize("output", ["centres", "scatters", "prior"])
def test_class_statistics_and_prior_reduced_precision(case, precision, output):
    x, targets = _features(case)

    def stats(features):
        counts, centres, scatters = fn.class_statistics(features, targets, NUM_CLASSES)
        assert counts.dtype == torch.float32
        if output == "centres":
            return centres
        if output == "scatters":
            return scatters
        return fn.bdr_log_prior(counts, scatters, m=0.8)

    # absolute slack: float32 rounding (same inputs) or input rounding
    # (unrounded inputs) of the largest feature, resp. of its square; 1e-6
    # is subnormal in float16, where the spacing is eps * smallest normal
    finfo = torch.finfo(PRECISIONS[precision][0])
    scale = max(float(x.abs().max()), finfo.tiny)
    eps = finfo.eps
    atol = {"centres": 1e-6 * scale, "scatters": 1e-6 * scale**2, "prior": 1e-5}
    atol_e2e = {"centres": eps * scale, "scatters": eps * scale**2, "prior": 0.0}
    out, _ = _check(
        stats, x, precision, atol=atol[output], end_to_end_atol=atol_e2e[output]
    )
    if output == "prior":  # absent classes: log(1e-12)
        assert_close(out[4:], torch.full((2,), -27.631021))
    else:
        assert (out[4:] == 0).all()


@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("case", FEATURE_CASES)
def test_update_class_statistics_reduced_precision(case, precision):
    x, targets = _features(case)
    # stored state (float32, as the plugin keeps it) from another sample
    gen = torch.Generator().manual_seed(2)
    phase = x[torch.randperm(N, generator=gen)] * 1.1
    phase_counts, centres, scatters = fn.class_statistics(phase, targets, NUM_CLASSES)
    phase_counts = phase_counts * 10
    dtype, autocast = PRECISIONS[precision]
    ctx = (
        torch.autocast("cpu", dtype=autocast) if autocast else contextlib.nullcontext()
    )
    with ctx:
        new_c, new_s = fn.update_class_statistics(
            phase_counts, centres, scatters, x.to(dtype), targets
        )
        prior = fn.bdr_log_prior(phase_counts, new_s, m=0.8)
    ref_c, ref_s = fn.update_class_statistics(
        phase_counts, centres, scatters, x.to(dtype).float(), targets
    )
    for out, ref in ((new_c, ref_c), (new_s, ref_s)):
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
        assert_close(out, ref, rtol=VALUE_RTOL, atol=1e-6 * float(ref.abs().max()))
    assert prior.dtype == torch.float32 and torch.isfinite(prior).all()
    # absent classes keep their (zero) statistics
    assert (new_c[4:] == 0).all() and (new_s[4:] == 0).all()
    if case == "single":  # one sample of class 3: centre moves, scatter kept
        assert not torch.equal(new_c[3], centres[3]) and new_s[3] == scatters[3]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_update_class_statistics_accepts_half_state(dtype):
    # a stored state in half precision is upcast (lerp needs one dtype)
    x, targets = _features("normal")
    counts, centres, scatters = fn.class_statistics(x, targets, NUM_CLASSES)
    new_c, new_s = fn.update_class_statistics(
        counts.to(dtype), centres.to(dtype), scatters.to(dtype), x.to(dtype), targets
    )
    assert new_c.dtype == new_s.dtype == torch.float32
    ref_c, ref_s = fn.update_class_statistics(
        counts,
        centres.to(dtype).float(),
        scatters.to(dtype).float(),
        x.to(dtype).float(),
        targets,
    )
    assert_close(new_c, ref_c)
    assert_close(new_s, ref_s)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_bdr_log_prior_degenerate(dtype):
    # zero scatter, empty class, all classes degenerate, tiny and huge scatters
    counts = torch.tensor([500, 500, 20, 20, 0, 1]).to(dtype)
    for scatters in (
        torch.tensor([0.0, 1.0, 0.0, 2.0, 0.0, 0.0]),
        torch.zeros(6),
        torch.tensor([1e-12, 1e-10, 5e-10, 1e-9, 0.0, 0.0]),
        torch.tensor([5e10, 6e10, 1e11, 4e10, 0.0, 0.0]),
    ):
        out = fn.bdr_log_prior(counts, scatters.to(dtype), m=0.8)
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
        assert_close(out[4], torch.tensor(-27.631021))
