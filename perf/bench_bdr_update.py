"""BDR's per-step statistics update: ``functional.update_class_statistics``
versus the same update written sample by sample.

Why: BDR updates its class centres and scatters at every training step, so
the update must be a few vectorised operations, not a loop over the batch;
both formulations must give the same statistics. Batch of 128 x 512
features, 100 classes.
"""

from __future__ import annotations

import torch
from bench_common import seconds_per_call
from torch import Tensor

from bdr_avalanche.functional import update_class_statistics

__all__ = ["benchmark_bdr_update", "update_statistics_per_sample_loop"]

BDR_BATCH, BDR_DIM, BDR_CLASSES = 128, 512, 100


def update_statistics_per_sample_loop(
    phase_counts: Tensor,
    centres: Tensor,
    scatters: Tensor,
    features: Tensor,
    targets: Tensor,
) -> tuple[Tensor, Tensor]:
    """BDR's per-step update written sample by sample, in the paper's order:
    batch count and sum per class, the centre of every class in the batch
    blended, each sample's squared distance to its class's *updated*
    centre, then the scatter blend of every class with at least two
    samples."""
    centres, scatters = centres.clone(), scatters.clone()
    labels = targets.tolist()
    counts: dict[int, int] = {}
    sums: dict[int, Tensor] = {}
    for f, y in zip(features, labels, strict=True):
        counts[y] = counts.get(y, 0) + 1
        sums[y] = sums[y] + f if y in sums else f.clone()
    weights = {y: b / (float(phase_counts[y]) + b) for y, b in counts.items()}
    for y, b in counts.items():
        centres[y] = centres[y] + weights[y] * (sums[y] / b - centres[y])
    squares: dict[int, Tensor] = {}
    for f, y in zip(features, labels, strict=True):
        distance = (f - centres[y]).pow(2).sum()
        squares[y] = squares[y] + distance if y in squares else distance
    for y, b in counts.items():
        if b >= 2:
            scatters[y] = scatters[y] + weights[y] * (squares[y] / b - scatters[y])
    return centres, scatters


def benchmark_bdr_update(device: torch.device, repeats: int) -> bool:
    """Print both formulations' times; whether their results match."""
    gen = torch.Generator().manual_seed(0)
    k, d = BDR_CLASSES, BDR_DIM
    args = (
        torch.randint(20, 500, (k,), generator=gen).float(),
        torch.randn(k, d, generator=gen),
        torch.rand(k, generator=gen) + 0.5,
        torch.randn(BDR_BATCH, d, generator=gen),
        torch.randint(0, k, (BDR_BATCH,), generator=gen),
    )
    args = tuple(a.to(device) for a in args)
    print(
        f"\nBDR per-step statistics update: batch {BDR_BATCH} x {d}, {k} classes, "
        f"median of {repeats}"
    )
    ours_time, ours = seconds_per_call(
        lambda: update_class_statistics(*args), device, repeats
    )
    loop_time, loop = seconds_per_call(
        lambda: update_statistics_per_sample_loop(*args), device, repeats
    )
    error = max((a - b).abs().max().item() for a, b in zip(ours, loop, strict=True))
    same = all(
        torch.allclose(a, b, rtol=1e-5, atol=1e-5)
        for a, b in zip(ours, loop, strict=True)
    )
    print(f"  {'implementation':<36}{'time ms':>10}{'ours faster':>13}")
    print(f"  {'ours: update_class_statistics':<36}{1e3 * ours_time:10.3f}{1:12.1f}x")
    print(
        f"  {'per-sample loop':<36}{1e3 * loop_time:10.3f}"
        f"{loop_time / ours_time:12.1f}x"
    )
    print(
        f"  results match (rtol = atol = 1e-5): {'yes' if same else 'NO'} "
        f"(max abs difference {error:.1e})"
    )
    return same
