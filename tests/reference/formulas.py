"""Float64 loop references of the papers' formulas (``docs/math.md``).

Each function is a deliberately naive implementation (Python loops over
classes or samples) written from the formula, independently of the
vectorised code under test.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "ref_class_statistics",
    "ref_crop",
    "ref_cwd_loss",
    "ref_gradient_share",
    "ref_herding",
    "ref_less_forget",
    "ref_log_prior",
    "ref_margin_ranking",
]


def ref_log_prior(counts, scatters, m, tau=1.0):
    """BDR prior ``log((m psi + (1 - m) omega) ** tau + 1e-12)`` class by class.

    ``psi_k = n_k / sum n``; ``omega_k`` is the normalised inverse scatter
    (scatter clamped at 1e-12) over the classes with ``n_k > 0``; absent
    classes get ``psi = omega = 0``.
    """
    counts = [float(n) for n in counts]
    scatters = [float(v) for v in scatters]
    total = sum(counts)
    inv = [
        1.0 / max(v, 1e-12) if n > 0 else 0.0
        for n, v in zip(counts, scatters, strict=True)
    ]
    inv_total = sum(inv)
    out = []
    for n, iv in zip(counts, inv, strict=True):
        psi = n / total if total > 0 else 0.0
        omega = iv / inv_total if inv_total > 0 else 0.0
        out.append(math.log((m * psi + (1.0 - m) * omega) ** tau + 1e-12))
    return torch.tensor(out, dtype=torch.float64)


def ref_class_statistics(features, targets, num_classes):
    """Count, centre and scatter ``mean_i ||f_i - mu||^2`` of each class,
    gathering each class's rows with a Python loop; zeros for absent classes."""
    x = features.double()
    counts = torch.zeros(num_classes, dtype=torch.float64)
    centres = torch.zeros(num_classes, x.shape[1], dtype=torch.float64)
    scatters = torch.zeros(num_classes, dtype=torch.float64)
    for c in range(num_classes):
        rows = [x[i] for i in range(x.shape[0]) if int(targets[i]) == c]
        if not rows:
            continue
        mu = torch.stack(rows).mean(dim=0)
        counts[c] = len(rows)
        centres[c] = mu
        scatters[c] = sum(float(((r - mu) ** 2).sum()) for r in rows) / len(rows)
    return counts, centres, scatters


def ref_cwd_loss(features, targets, reject_threshold=1):
    """CwD: per qualifying class, standardise (unbiased var + 1e-8), form
    ``C = Z^T Z`` and average its squared off-diagonal entries by a double
    loop; sum over classes, divide by the number of contributing samples.
    Differentiable (torch ops), so it also gives a reference gradient."""
    x = features / features.norm(dim=1, keepdim=True)
    d = x.shape[1]
    total = x.new_zeros(())
    n_contrib = 0
    for c in sorted(set(targets.tolist())):
        xc = x[targets == c]
        n = xc.shape[0]
        if n <= reject_threshold:
            continue
        z = (xc - xc.mean(dim=0)) / torch.sqrt(xc.var(dim=0, unbiased=True) + 1e-8)
        cor = z.T @ z
        off = x.new_zeros(())
        for i in range(d):
            for j in range(d):
                if i != j:
                    off = off + cor[i, j] ** 2
        total = total + off / (d * (d - 1))
        n_contrib += n
    return total / n_contrib if n_contrib else total


def ref_less_forget(features, old_features):
    """Mean over samples of ``1 - <a, b> / (|a| |b|)``, one sample at a time."""
    total = 0.0
    for a, b in zip(
        features.detach().double(), old_features.detach().double(), strict=True
    ):
        total += 1.0 - float(a @ b) / (float(a.norm()) * float(b.norm()))
    return total / features.shape[0]


def ref_margin_ranking(scores, targets, num_old, margin, k):
    """Mean of ``max(0, margin - s_gt + s_new)`` over all (old-class sample,
    one of its k highest new-class scores) pairs, from sorted Python lists;
    0 when there is no old-class sample."""
    hinges = []
    for row, y in zip(scores.double().tolist(), targets.tolist(), strict=True):
        if y >= num_old:
            continue
        for s_new in sorted(row[num_old:], reverse=True)[:k]:
            hinges.append(max(0.0, margin - row[y] + s_new))
    return sum(hinges) / len(hinges) if hinges else 0.0


def ref_herding(features, m):
    """Brute-force herding on Python lists: at each step try every unpicked
    sample and keep the first one minimising ``||mu - (S + f_i)/(j + 1)||^2``."""
    x = features.double().tolist()
    n, d = len(x), len(x[0])
    mean = [sum(row[j] for row in x) / n for j in range(d)]
    picked, s = [], [0.0] * d
    for step in range(min(m, n)):
        best, best_dist = None, math.inf
        for i in range(n):
            if i in picked:
                continue
            dist = sum((mean[j] - (s[j] + x[i][j]) / (step + 1)) ** 2 for j in range(d))
            if dist < best_dist:
                best, best_dist = i, dist
        picked.append(best)
        s = [s[j] + x[best][j] for j in range(d)]
    return picked


def ref_gradient_share(logits, targets, is_memory, prior=None):
    """The memory's share of the logits' gradient: ``|softmax(z + pi) -
    onehot(y)|_1`` per sample in float64 by plain loops, summed over memory
    samples and over all samples."""
    memory_mass = total_mass = 0.0
    for i in range(len(targets)):
        z = [float(v) for v in logits[i]]
        if prior is not None:
            z = [v + float(p) for v, p in zip(z, prior, strict=True)]
        top = max(z)
        exps = [math.exp(v - top) for v in z]
        norm = sum(exps)
        mass = sum(
            abs(e / norm - (1.0 if k == int(targets[i]) else 0.0))
            for k, e in enumerate(exps)
        )
        total_mass += mass
        if bool(is_memory[i]):
            memory_mass += mass
    return memory_mass, total_mass


def ref_crop(x, top, left, size, padding, flip=None):
    """The padded crop (and flip) at given offsets, image by image: pad with
    zeros, slice, mirror."""
    th, tw = size
    out = []
    for k in range(len(x)):
        image = F.pad(x[k], (padding,) * 4)
        image = image[:, top[k] : top[k] + th, left[k] : left[k] + tw]
        out.append(image.flip(-1) if flip is not None and flip[k] else image)
    return torch.stack(out)
