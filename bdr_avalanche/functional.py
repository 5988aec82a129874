"""Pure tensor functions behind LUCIR, CwD, BDR and herding.

Every function here is side-effect free and works on batched tensors with
no Python loop over samples and no host synchronisation (no ``.item()``,
no data-dependent shapes), so the plugins can call them at every training
step on any device. Notation follows the documentation's math page
(``docs/math.md``): ``K`` classes, ``d``-dimensional penultimate features
``f(x)``.

Precision: the functions accept float16/bfloat16 inputs (features coming out
of an autocast model) and may run inside ``torch.autocast``; they compute in
float32, their floating-point outputs are float32, and autograd casts the
gradient back to the input's dtype. Reduced precision therefore only enters
through the rounding of the inputs and of the returned gradient. Two things
would go wrong otherwise: autocast runs matrix products in float16/bfloat16
(CwD's ``d x d`` correlation sums overflow float16 for ``d = 512``, and
bfloat16 rounding gives a zero-scatter class a spurious O(1) standardised
spread), and the small ``eps`` of ``F.normalize`` (1e-12) and
``F.cosine_similarity`` (1e-8) round to 0 in float16, so a zero feature
vector gives ``0 / 0``. Zero feature vectors are normalised by
:func:`_unit_rows`.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "bdr_log_prior",
    "class_squared_distances",
    "class_statistics",
    "class_sums",
    "update_class_statistics",
    "class_wise_decorrelation_loss",
    "less_forget_loss",
    "margin_ranking_loss",
    "herding_select",
]

#: Added inside the logarithm of the BDR prior, as in the paper's code.
PRIOR_EPS = 1e-12
#: Lower bound on a class scatter, so a class whose features coincide gets a
#: large but finite inverse scatter instead of ``inf``.
SCATTER_EPS = 1e-12
#: Added to the per-dimension variance in CwD's standardisation.
CWD_VAR_EPS = 1e-8


def _unit_rows(x: Tensor) -> Tensor:
    r"""Rows of ``x`` divided by their L2 norm, in float32; a zero row stays 0.

    ``F.normalize`` divides by :math:`\max(\|x\|, \epsilon)`: a zero row
    gets the value 0 but the gradient :math:`g / \epsilon` (:math:`10^{12} g`,
    which is ``inf`` once cast back to a float16 input, and in float16 the
    ``eps`` itself rounds to 0, giving ``nan``). Here a zero norm is replaced
    by 1: same value, gradient ``g``, and every non-zero row is normalised
    exactly. The gradient of a non-zero row still scales as
    :math:`1 / \|x\|`, as the true gradient of a scale-invariant loss does.
    """
    x = x.float()
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    return x / torch.where(norm > 0, norm, 1.0)


def _autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """A context that switches autocast off on ``device``'s type (a no-op for
    a device type without autocast, e.g. ``meta``)."""
    try:
        return torch.autocast(device.type, enabled=False)
    except RuntimeError:
        return contextlib.nullcontext()


def bdr_log_prior(
    class_counts: Tensor, class_scatter: Tensor, m: float, tau: float = 1.0
) -> Tensor:
    r"""BDR's per-class logit prior ``pi`` (Zhou et al., 2023).

    .. math::
        \psi_k = \frac{n_k}{\sum_j n_j}, \qquad
        \omega_k = \frac{1 / v_k}{\sum_j 1 / v_j}, \qquad
        \pi_k = \log\big((m\,\psi_k + (1 - m)\,\omega_k)^{\tau} + 10^{-12}\big)

    Classes with no sample (``n_k = 0``) have no scatter: their ``psi`` and
    ``omega`` are 0, so their prior is ``log(1e-12)``, which removes them from
    the training softmax. Scatters are clamped at ``SCATTER_EPS`` so a class
    with zero scatter stays finite. Computed in float32 whatever the input
    dtype.

    :param class_counts: ``(K,)`` number of training samples of each class.
    :param class_scatter: ``(K,)`` mean squared distance of each class's
        features to its centre.
    :param m: weight of the frequency term ``psi`` (``m1`` at the start of a
        phase, ``m2`` during it), in [0, 1].
    :param tau: exponent applied to the mixture.
    :return: ``(K,)`` float32 log-prior to add to the logits.
    """
    counts = class_counts.float()
    present = counts > 0
    psi = counts / counts.sum().clamp_min(1.0)
    inv_scatter = torch.where(
        present, class_scatter.float().clamp_min(SCATTER_EPS).reciprocal(), 0.0
    )
    omega = inv_scatter / inv_scatter.sum().clamp_min(torch.finfo(torch.float32).tiny)
    mixture = m * psi + (1.0 - m) * omega
    return torch.log(mixture.pow(tau) + PRIOR_EPS)


def class_sums(
    features: Tensor, targets: Tensor, num_classes: int
) -> tuple[Tensor, Tensor]:
    """Per-class sample count and feature sum of a batch.

    :param features: ``(N, d)`` features.
    :param targets: ``(N,)`` integer labels in ``[0, num_classes)``.
    :param num_classes: ``K``.
    :return: float32 ``counts (K,)`` and ``sums (K, d)`` (zero for an
        absent class). Sums of several batches add up, so a dataset's
        centres are the summed ``sums`` over the summed ``counts``.
    """
    features = features.float()
    counts = features.new_zeros(num_classes).index_add_(
        0, targets, features.new_ones(targets.shape[0])
    )
    sums = features.new_zeros(num_classes, features.shape[1])
    return counts, sums.index_add_(0, targets, features)


def class_squared_distances(
    features: Tensor, targets: Tensor, centres: Tensor
) -> Tensor:
    """Per-class sum of ``||f_i - mu_{y_i}||^2`` over a batch.

    :param centres: ``(K, d)`` class centres the distances are taken to.
    :return: float32 ``(K,)``, zero for a class absent from the batch.
    """
    sq_dist = (features.float() - centres.float()[targets]).pow(2).sum(dim=1)
    return sq_dist.new_zeros(centres.shape[0]).index_add_(0, targets, sq_dist)


def class_statistics(
    features: Tensor, targets: Tensor, num_classes: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class count, centre and scatter of a set of features.

    :param features: ``(N, d)`` features.
    :param targets: ``(N,)`` integer labels in ``[0, num_classes)``.
    :param num_classes: ``K``.
    :return: ``counts (K,)`` (float), ``centres (K, d)`` and
        ``scatters (K,)`` with ``scatter_k = mean_i ||f_i - mu_k||^2``; all
        zero for an absent class.
    """
    counts, sums = class_sums(features, targets, num_classes)
    denom = counts.clamp_min(1.0)
    centres = sums / denom[:, None]
    scatters = class_squared_distances(features, targets, centres) / denom
    return counts, centres, scatters


def update_class_statistics(
    phase_counts: Tensor,
    centres: Tensor,
    scatters: Tensor,
    batch_features: Tensor,
    batch_targets: Tensor,
) -> tuple[Tensor, Tensor]:
    r"""Blend BDR's running class centres and scatters with one batch.

    For every class ``k`` present in the batch (``b_k`` samples, ``N_k``
    the class's count in the phase), in this order, as the paper's code
    does:

    1. the centre moves towards the batch's class mean,
       :math:`\mu_k \leftarrow \frac{N_k \mu_k + b_k \bar f_k}{N_k + b_k}`
       (``b_k = 1`` included);
    2. the batch scatter :math:`s_k` is the mean of
       :math:`\|f_i - \mu_k\|^2` over the batch's class-``k`` samples,
       about the *updated* running centre of step 1 (not about the batch's
       own class mean, which would bias it low by about
       :math:`(b_k - 1) / b_k`);
    3. if ``b_k >= 2``:
       :math:`v_k \leftarrow \frac{N_k v_k + b_k s_k}{N_k + b_k}`.

    Each class's scatter is blended with its own weights. (The paper's code
    blends every class's scatter with the weights of the last class of its
    centre loop, a variable-scoping slip; per-class weights are the evident
    intent.)

    :return: the new ``centres (K, d)`` and ``scatters (K,)`` (new float32
        tensors, whatever the dtype of the inputs).
    """
    num_classes = centres.shape[0]
    features = batch_features.detach()
    b_counts, b_sums = class_sums(features, batch_targets, num_classes)
    batch_size = b_counts.clamp_min(1.0)
    # lerp(mu, mean, b / (N + b)) = (N mu + b mean) / (N + b); an absent
    # class (b = 0) has weight 0 and keeps its centre
    weight = b_counts / (phase_counts.float() + b_counts).clamp_min(1.0)
    new_centres = torch.lerp(
        centres.float(), b_sums / batch_size[:, None], weight[:, None]
    )
    b_scatters = (
        class_squared_distances(features, batch_targets, new_centres) / batch_size
    )
    new_scatters = torch.lerp(
        scatters.float(), b_scatters, torch.where(b_counts >= 2, weight, 0.0)
    )
    return new_centres, new_scatters


def class_wise_decorrelation_loss(
    features: Tensor, targets: Tensor, reject_threshold: int = 1
) -> Tensor:
    r"""CwD's class-wise decorrelation loss (Shi et al., CVPR 2022).

    Features are L2-normalised. For each class ``c`` with more than
    ``reject_threshold`` samples, each dimension is standardised within the
    class (mean 0, divided by ``sqrt(var + 1e-8)``, unbiased variance), the
    ``d x d`` matrix :math:`C_c = X_c^\top X_c` is formed and the mean of its
    squared off-diagonal entries is taken. The terms are summed over classes
    and divided by the number of samples of the contributing classes.

    The class loop is replaced by the ``N x N`` same-class mask ``S`` (so
    the number of classes need not be known, and nothing waits on the
    device): per-sample class statistics are ``S @ x``, and
    :math:`\|X_c^\top X_c\|_F^2 = \|X_c X_c^\top\|_F^2` turns the
    off-diagonal sum into the squared Gram matrix on same-class pairs minus
    the squared per-class diagonals.

    Autocast is switched off inside: it would run these matrix products in
    float16/bfloat16, where the squared Gram entries (about ``d^2``)
    overflow float16 and the rounding of the class means gives a class of
    identical features an O(1) standardised spread. A zero feature vector
    is normalised to 0 (see :func:`_unit_rows`).

    :param features: ``(N, d)`` penultimate features, ``d >= 2``.
    :param targets: ``(N,)`` integer labels.
    :param reject_threshold: classes with at most this many samples in the
        batch are skipped (at least 1: one sample has no variance).
    :return: scalar loss (0 when no class qualifies).
    """
    d = features.shape[1]
    with _autocast_off(features.device):
        x = _unit_rows(features)
        same = (targets[:, None] == targets[None, :]).to(x.dtype)
        count = same.sum(dim=1)  # size of each sample's class in the batch
        centred = x - (same @ x) / count[:, None]
        var = (same @ centred.pow(2)) / (count - 1.0).clamp_min(1.0)[:, None]
        valid = (count > reject_threshold).to(x.dtype)
        z = centred / torch.sqrt(var + CWD_VAR_EPS) * valid[:, None]

        frobenius = ((z @ z.T).pow(2) * same).sum()
        class_diagonals = same @ z.pow(2)  # row i: diag(C_c) of i's class
        diagonal = (class_diagonals.pow(2).sum(dim=1) / count).sum()
        n_valid = valid.sum().clamp_min(1.0)
        return (frobenius - diagonal) / (d * (d - 1)) / n_valid


def less_forget_loss(features: Tensor, old_features: Tensor) -> Tensor:
    r"""LUCIR's less-forget term without its weight:
    :math:`\frac{1}{N}\sum_i \big(1 - \cos(f(x_i), f_{old}(x_i))\big)`.

    ``old_features`` come from the frozen previous model and are detached.
    Computed in float32 (in float16 the norm of a ``1e4``-scale feature
    overflows and ``F.cosine_similarity``'s ``eps`` rounds to 0); a zero
    feature vector has cosine 0 with anything (see :func:`_unit_rows`).
    """
    cosine = (_unit_rows(features) * _unit_rows(old_features.detach())).sum(dim=1)
    return (1.0 - cosine).mean()


def margin_ranking_loss(
    scores: Tensor,
    targets: Tensor,
    num_old_classes: int,
    margin: float = 0.5,
    k: int = 2,
) -> Tensor:
    r"""LUCIR's inter-class separation (margin ranking) loss.

    For every sample of an old class (``target < num_old_classes``), the
    ground-truth cosine score is compared with the ``k`` highest new-class
    scores: :math:`\max(0, \text{margin} - s_{gt} + s_{new})`, averaged over
    all such (sample, hard new class) pairs. Zero when the batch has no
    old-class sample.

    :param scores: ``(N, K)`` cosine scores, i.e. logits *without* the scale.
    :param targets: ``(N,)`` labels; classes ``[num_old_classes, K)`` are new.
    :param k: number of hard new classes, at most ``K - num_old_classes``.
    :return: float32 scalar (the hinge sum overflows float16 for large
        scores, so the scores are upcast first).
    """
    scores = scores.float()
    gt = scores.gather(1, targets[:, None])
    hard_new = scores[:, num_old_classes:].topk(k, dim=1).values
    hinge = F.relu(margin - gt + hard_new)
    is_old = (targets < num_old_classes).to(hinge.dtype)
    return (hinge * is_old[:, None]).sum() / (is_old.sum() * k).clamp_min(1.0)


def herding_select(features: Tensor, m: int) -> Tensor:
    """iCaRL herding: indices of ``m`` samples whose running mean tracks the
    mean of ``features``, in pick order.

    At step ``j`` the sample ``i`` minimising
    ``||mu - (S_j + f_i) / (j + 1)||`` is picked, ``S_j`` being the sum of
    the picked features; a sample is picked at most once and the loop stops
    after ``m`` picks (``min(m, N)``). Callers pass L2-normalised features.

    :param features: ``(N, d)`` features of one class.
    :param m: number of samples to pick.
    :return: ``(min(m, N),)`` int64 indices.
    """
    n = features.shape[0]
    m = min(m, n)
    x = features.float()
    mean = x.mean(dim=0)
    picked_sum = torch.zeros_like(mean)
    available = torch.ones(n, dtype=torch.bool, device=x.device)
    picks = torch.empty(m, dtype=torch.long, device=x.device)
    for step in range(m):
        candidates = (picked_sum + x) / (step + 1)
        distances = (candidates - mean).pow(2).sum(dim=1)
        distances = distances.masked_fill(~available, float("inf"))
        best = distances.argmin()
        picks[step] = best
        available[best] = False
        picked_sum = picked_sum + x[best]
    return picks
