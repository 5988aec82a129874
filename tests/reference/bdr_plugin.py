"""BDR's statistics as the paper's code computes them.

``ReferenceBDR`` restates ``approach/BDR.py`` of the paper's repository
(``zyuh/BDR-main``, class ``BDR_loss``) from its semantics: float64, plain
Python loops over samples and classes, nothing shared with ``bdr_avalanche``.

- ``initialize``: over the phase's *training* loader, model in eval mode,
  one pass counts the samples and sums the features of each class
  (``compute_psi``, ``compute_fk``), a second pass sums the squared
  distances to those centres (``compute_omega_k``);
  ``pi = log((m1 psi + (1 - m1) omega) ** tau + 1e-12)``.
- ``momentum_update`` (every step of a phase ``t > 0``, on the step's
  detached features): the centre of every class in the batch is blended
  ``N/(N+b)``, ``b/(N+b)`` with the batch mean; the batch scatter is taken
  about that *updated* centre; only classes with ``b >= 2`` blend their
  scatter; ``pi <- momentum pi + (1 - momentum) pi_hat(m2)``.

The paper's code blends the scatters with the weights of the last class of
its centre loop; ``slip=True`` reproduces that, the default uses each
class's own weights (what the package implements).
"""

from __future__ import annotations

import math

__all__ = ["ReferenceBDR"]


def _vec(row) -> list[float]:
    return [float(v) for v in row]


def _sq_dist(a: list[float], b: list[float]) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b, strict=True))


class ReferenceBDR:
    """The paper's ``BDR_loss``, class ids ``0..K-1`` all present."""

    def __init__(self, m1, m2, momentum, tau, slip=False):
        self.m1, self.m2, self.momentum, self.tau = m1, m2, momentum, tau
        self.slip = slip

    def _prior(self, m):
        inv = [1.0 / v for v in self.scatters]
        total_n, total_inv = sum(self.counts), sum(inv)
        return [
            math.log((m * n / total_n + (1 - m) * w / total_inv) ** self.tau + 1e-12)
            for n, w in zip(self.counts, inv, strict=True)
        ]

    def initialize(self, first_pass, second_pass):
        """Each pass: a list of ``(features, labels)`` batches."""
        counts, sums = {}, {}
        for features, labels in first_pass:
            for f, y in zip(features, labels, strict=True):
                y = int(y)
                counts[y] = counts.get(y, 0) + 1
                old = sums.get(y, [0.0] * len(f))
                sums[y] = [a + b for a, b in zip(old, _vec(f), strict=True)]
        k = len(counts)
        self.counts = [counts[c] for c in range(k)]
        self.centres = [[s / counts[c] for s in sums[c]] for c in range(k)]
        squared = [0.0] * k
        for features, labels in second_pass:
            for f, y in zip(features, labels, strict=True):
                squared[int(y)] += _sq_dist(_vec(f), self.centres[int(y)])
        self.scatters = [squared[c] / self.counts[c] for c in range(k)]
        self.pi = self._prior(self.m1)
        return self.pi

    def momentum_update(self, features, labels):
        batch_sum, batch_n = {}, {}  # insertion order = first appearance
        for f, y in zip(features, labels, strict=True):
            y = int(y)
            old = batch_sum.get(y, [0.0] * len(f))
            batch_sum[y] = [a + b for a, b in zip(old, _vec(f), strict=True)]
            batch_n[y] = batch_n.get(y, 0) + 1
        weights = {}
        for y, b in batch_n.items():
            n = self.counts[y]
            w1, w2 = n / (n + b), b / (n + b)
            weights[y] = (w1, w2)
            mean = [s / b for s in batch_sum[y]]
            self.centres[y] = [
                w1 * c + w2 * m for c, m in zip(self.centres[y], mean, strict=True)
            ]
        last = weights[y]  # the weights the paper's code leaves in scope
        batch_sq = {}
        for f, y in zip(features, labels, strict=True):
            y = int(y)
            batch_sq[y] = batch_sq.get(y, 0.0) + _sq_dist(_vec(f), self.centres[y])
        for y, b in batch_n.items():
            if b != 1:
                w1, w2 = last if self.slip else weights[y]
                self.scatters[y] = w1 * self.scatters[y] + w2 * batch_sq[y] / b
        estimate = self._prior(self.m2)
        self.pi = [
            self.momentum * p + (1 - self.momentum) * e
            for p, e in zip(self.pi, estimate, strict=True)
        ]
        return self.pi
