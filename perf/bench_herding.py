"""Herding benchmark: ``functional.herding_select`` versus Avalanche's
``HerdingSelectionStrategy`` and a per-sample Python loop.

Why: our vectorised herding is meant to be much faster than both (target:
at least 20x) while picking the same exemplars. ``m = 20`` exemplars are
chosen among 500 L2-normalised 512-d features; Avalanche's routine ranks
all 500 samples, and its first ``m`` are compared.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from avalanche.training.storage_policy import HerdingSelectionStrategy
from bench_common import seconds_per_call
from torch import Tensor, nn

from bdr_avalanche.functional import herding_select

__all__ = ["avalanche_herding", "benchmark_herding", "herding_per_sample_loop"]

HERDING_SAMPLES, HERDING_DIM, HERDING_M = 500, 512, 20


def herding_per_sample_loop(features: Tensor, m: int) -> Tensor:
    """Herding written sample by sample: at each of the ``m`` steps, the
    distance to the class mean of the running mean with each candidate
    added, one candidate at a time."""
    n = features.shape[0]
    mean = features.mean(dim=0)
    picked_sum = torch.zeros_like(mean)
    picks: list[int] = []
    for step in range(min(m, n)):
        best, best_distance = -1, math.inf
        for i in range(n):
            if i in picks:
                continue
            candidate = (picked_sum + features[i]) / (step + 1)
            distance = float((candidate - mean).pow(2).sum())
            if distance < best_distance:
                best, best_distance = i, distance
        picks.append(best)
        picked_sum = picked_sum + features[best]
    return torch.tensor(picks)


def avalanche_herding(features: Tensor, m: int) -> Tensor:
    """Avalanche's own herding routine on precomputed features (it ranks
    every sample; the first ``m`` are its picks)."""
    selector = HerdingSelectionStrategy(nn.Identity(), "")
    return torch.tensor(selector.make_sorted_indices_from_features(features)[:m])


def benchmark_herding(device: torch.device, repeats: int) -> bool:
    """Print the three formulations' times; whether they pick the same."""
    gen = torch.Generator().manual_seed(0)
    raw = torch.randn(HERDING_SAMPLES, HERDING_DIM, generator=gen)
    features = F.normalize(raw, dim=1).to(device)
    m = HERDING_M
    candidates = {
        "ours: functional.herding_select": lambda: herding_select(features, m),
        "Avalanche HerdingSelectionStrategy": lambda: avalanche_herding(features, m),
        "per-sample loop": lambda: herding_per_sample_loop(features, m),
    }
    print(
        f"\nHerding: {m} of {HERDING_SAMPLES} L2-normalised {HERDING_DIM}-d "
        f"features, median of {repeats}"
    )
    results = {}
    for name, fn in candidates.items():
        results[name] = seconds_per_call(fn, device, repeats)
    ours_time, ours_picks = results["ours: functional.herding_select"]
    same_all = True
    print(
        f"  {'implementation':<36}{'time ms':>10}{'ours faster':>13}{'same picks':>12}"
    )
    for name, (seconds, picks) in results.items():
        same = torch.equal(picks.cpu(), ours_picks.cpu())
        same_all &= same
        print(
            f"  {name:<36}{1e3 * seconds:10.3f}{seconds / ours_time:12.1f}x"
            f"{'yes' if same else 'NO':>12}"
        )
    return same_all
