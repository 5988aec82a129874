"""Float64 transcriptions of the paper's official code.

The reference is the FACIL fork shipped with the BDR paper
(``zyuh/BDR-main``). Each ``ref_*`` function is an independent float64
transcription of what that code computes, written with plain Python loops
over samples and classes; none of them calls or mirrors ``bdr_avalanche``:

- ``ref_less_forget``: ``nn.CosineEmbeddingLoss()(f, f_old, ones)``
  (approach/lucir_cwd_BDR.py:352), before the ``lamda`` weight;
- ``ref_margin_ranking``: ``nn.MarginRankingLoss(margin)`` over the
  ``hard_num * K`` (ground-truth score, top-K new-class score) pairs
  (approach/lucir_cwd_BDR.py:363-388);
- ``ref_cwd``: ``F.normalize`` then ``DecorrelateLossClass``
  (approach/lucir_cwd_BDR.py:328-329, approach/aux_loss.py:24-58): classes
  with ``count <= reject_threshold`` are skipped, the sum of the per-class
  terms is divided by the number of samples of the contributing classes;
- ``ref_herding``: ``HerdingExemplarsSelector._select_indices``
  (dataset/exemplars_selection.py:99-146) on ``feats / feats.norm``.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "as_rows",
    "ref_cwd",
    "ref_herding",
    "ref_less_forget",
    "ref_margin_ranking",
    "ref_normalize",
]


def as_rows(x: torch.Tensor) -> list[list[float]]:
    """``x`` as float64 Python rows."""
    return x.double().tolist()


def ref_normalize(row: list[float]) -> list[float]:
    """``F.normalize(p=2)`` of one row: ``x / max(||x||, 1e-12)``."""
    norm = math.sqrt(sum(v * v for v in row))
    return [v / max(norm, 1e-12) for v in row]


def ref_less_forget(features, old_features) -> float:
    """``nn.CosineEmbeddingLoss()(f, f_old, ones)``: mean over the batch of
    ``1 - cos``, the cosine computed as ATen does (``EPSILON = 1e-12`` added
    to each squared norm)."""
    total = 0.0
    rows = list(zip(as_rows(features), as_rows(old_features), strict=True))
    for a, b in rows:
        dot = sum(u * v for u, v in zip(a, b, strict=True))
        sq_a = sum(u * u for u in a) + 1e-12
        sq_b = sum(v * v for v in b) + 1e-12
        total += 1.0 - dot / math.sqrt(sq_a * sq_b)
    return total / len(rows)


def ref_margin_ranking(scores, targets, num_old, margin, k) -> float:
    """The reference's hard-negative ranking loss: for each old-class sample,
    ``k`` copies of its ground-truth score against its ``k`` highest
    new-class scores; ``MarginRankingLoss(margin)`` with target 1 is the
    mean over the pairs of ``max(0, -(x1 - x2) + margin)``; 0 without an
    old-class sample (``loss_mr = torch.zeros(1)``)."""
    gt_scores, novel_scores = [], []
    for row, y in zip(as_rows(scores), targets.tolist(), strict=True):
        if y < num_old:  # hard_index = targets < num_old_classes
            gt_scores += [row[y]] * k
            novel_scores += sorted(row[num_old:], reverse=True)[:k]
    if not gt_scores:
        return 0.0
    pairs = zip(gt_scores, novel_scores, strict=True)
    return sum(max(0.0, -1.0 * (g - n) + margin) for g, n in pairs) / len(gt_scores)


def ref_cwd(features, targets, reject_threshold) -> float:
    """``DecorrelateLossClass(reject_threshold)(F.normalize(f), y)``."""
    x = [ref_normalize(r) for r in as_rows(features)]
    y = targets.tolist()
    d = len(x[0])
    loss, n_count = 0.0, 0
    for label in sorted(set(y)):  # y.unique(return_counts=True)
        rows = [x[i] for i in range(len(y)) if y[i] == label]
        n = len(rows)
        if n <= reject_threshold:  # `if uniq_c[i] <= self.reject_threshold`
            continue
        mean = [sum(r[j] for r in rows) / n for j in range(d)]
        centred = [[r[j] - mean[j] for j in range(d)] for r in rows]
        var = [sum(c[j] ** 2 for c in centred) / (n - 1) for j in range(d)]  # unbiased
        z = [[c[j] / math.sqrt(1e-8 + var[j]) for j in range(d)] for c in centred]
        off_diagonal = [
            sum(r[a] * r[b] for r in z) ** 2
            for a in range(d)
            for b in range(d)
            if a != b
        ]
        loss += sum(off_diagonal) / len(off_diagonal)  # .pow(2).mean()
        n_count += n
    return 0.0 if n_count == 0 else loss / n_count


def ref_herding(features: torch.Tensor, m: int) -> list[int]:
    """``HerdingExemplarsSelector._select_indices`` for one class, in float64:
    features divided by their norm, then ``m`` greedy picks, each the first
    (strict ``<``) sample minimising ``||mu - f/(k+1) - sum_others||``."""
    feats = features.double()
    feats = feats / feats.norm(dim=1).view(-1, 1)
    cls_mu = feats.mean(0)
    selected, selected_feat = [], []
    for k in range(m):
        sum_others = torch.zeros(feats.shape[1], dtype=torch.float64)
        for j in selected_feat:
            sum_others += j / (k + 1)
        dist_min = math.inf
        for item in range(feats.shape[0]):
            if item not in selected:
                feat = feats[item]
                dist = float(torch.norm(cls_mu - feat / (k + 1) - sum_others))
                if dist < dist_min:
                    dist_min, newone, newonefeat = dist, item, feat
        selected_feat.append(newonefeat)
        selected.append(newone)
    return selected
