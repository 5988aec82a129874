"""The tables and the summary of the training-throughput benchmark
(:mod:`bench_training`): images/s per method and experience, the ratio to
``Naive`` and the step-time overhead over ``LUCIR``, both paired by round
(robust to slow drifts of the machine)."""

from __future__ import annotations

import statistics

from bench_training import METHODS, InputPath, Size

__all__ = [
    "CIFAR100_IMAGE_STEPS",
    "overhead_pct",
    "paired_ratio",
    "print_training",
    "print_training_summary",
]

Runs = dict[str, list[dict]]
"""The runs of every method on one input path: ``runs[method]``."""

CIFAR100_IMAGE_STEPS = 160 * (50 * 500 + 5 * 10 * 500 + 20 * (50 + 60 + 70 + 80 + 90))
"""Training image-steps of the paper's CIFAR-100 run (B50, 5 phases of 10
classes, 500 images per class, 20 exemplars per class, 160 epochs)."""


def _spread(values: list[float]) -> float:
    """Half the range, in % of the median."""
    return 50 * (max(values) - min(values)) / statistics.median(values)


def paired_ratio(runs: Runs, method: str, reference: str, exp: int) -> float:
    """Median over repeats of ``method``'s images/s divided by
    ``reference``'s in the same round (robust to slow drifts of the machine)."""
    pairs = zip(runs[method], runs[reference], strict=True)
    return statistics.median(a["ips"][exp] / b["ips"][exp] for a, b in pairs)


def overhead_pct(runs: Runs, method: str, exp: int) -> float:
    """Step-time increase of ``method`` over LUCIR, in %."""
    return 100 * (1 / paired_ratio(runs, method, "LUCIR", exp) - 1)


def _table_row(runs: Runs, method: str, n_exp: int, cuda: bool) -> str:
    line = f"  {method:<15}"
    for e in range(n_exp):
        values = [r["ips"][e] for r in runs[method]]
        cell = f"{statistics.median(values):8.0f} [±{_spread(values):4.1f}%]"
        ratio = paired_ratio(runs, method, "Naive", e)
        overhead = "" if method == "Naive" else f"{overhead_pct(runs, method, e):+.1f}%"
        line += f"{cell:>20}{ratio:9.2f}{overhead:>10}"
    if cuda:
        line += f"{max(r['peak'] for r in runs[method]) / 2**20:10.0f}"
    return line


def print_training(
    runs: dict[str, Runs], paths: list[InputPath], size: Size, repeats: int, cuda: bool
) -> None:
    """One table per input path, then the fast path's speed-up."""
    print(f"\nTraining throughput, {repeats} round-robin runs")
    print(f"  {size.describe()}")
    print(
        "  img/s: median [± half range]; vs Naive: images/s ratio; vs LUCIR: "
        "step-time increase (both paired by round, median)"
    )
    header = f"  {'method':<15}"
    for e in range(size.num_experiences):
        header += f"{f'exp {e} img/s':>20}{'vs Naive':>9}{'vs LUCIR':>10}"
    header += f"{'peak MiB':>10}" if cuda else ""
    for path in paths:
        print(f"\n  {path.name}")
        print(header)
        print("  " + "-" * (len(header) - 2))
        for method in METHODS:
            print(_table_row(runs[path.name], method, size.num_experiences, cuda))
    if len(paths) > 1:
        _print_speedups(runs, paths, size)


def _print_speedups(runs: dict[str, Runs], paths: list[InputPath], size: Size) -> None:
    """images/s of the second input path over the first's, per method."""
    slow, fast = (runs[p.name] for p in paths)
    print(f"\n  {paths[1].name} / {paths[0].name}, images/s (median of runs):")
    for method in METHODS:
        speedups = [
            statistics.median(r["ips"][e] for r in fast[method])
            / statistics.median(r["ips"][e] for r in slow[method])
            for e in range(size.num_experiences)
        ]
        print(
            f"  {method:<15}"
            + "".join(f"   exp {e} {s:5.2f}x" for e, s in enumerate(speedups))
        )


def print_training_summary(
    runs: dict[str, Runs], paths: list[InputPath], size: Size, cuda: bool
) -> None:
    """The summary lines of the training part: step-time ratios to
    ``Naive``, CwD+BDR's overhead against its target, and the time the
    paper's CIFAR-100 run would take at the measured speed."""
    for path in paths:
        ratios = [
            1 / paired_ratio(runs[path.name], "LUCIR+CwD+BDR", "Naive", e)
            for e in range(size.num_experiences)
        ]
        print(
            f"  step-time ratio LUCIR+CwD+BDR / Naive, {path.name}: "
            + ", ".join(f"exp {e} {r:.2f}x" for e, r in enumerate(ratios))
            + " (same input path and autocast for both)"
        )
    for path in paths:
        overhead = [
            overhead_pct(runs[path.name], "LUCIR+CwD+BDR", e)
            for e in range(size.num_experiences)
        ]
        print(
            f"  CwD+BDR step-time overhead over LUCIR, {path.name}: "
            + ", ".join(f"exp {e} {o:+.1f}%" for e, o in enumerate(overhead))
            + f" (target <= 5%: {'met' if max(overhead) <= 5 else 'NOT met'})"
        )
    _print_paper_run(runs[paths[-1].name], paths[-1], size, cuda)


def _print_paper_run(runs: Runs, path: InputPath, size: Size, cuda: bool) -> None:
    """How long the paper's CIFAR-100 run would train at the slower
    experience's speed of LUCIR+CwD+BDR on ``path``."""
    slowest = min(
        statistics.median(r["ips"][e] for r in runs["LUCIR+CwD+BDR"])
        for e in range(size.num_experiences)
    )
    print(
        f"  LUCIR+CwD+BDR, {path.name}: {slowest:.0f} images/s (slower "
        f"experience); the paper's CIFAR-100 run ({CIFAR100_IMAGE_STEPS / 1e6:.2f}M "
        f"image-steps) would train in {CIFAR100_IMAGE_STEPS / slowest / 60:.0f} min "
        f"with {size.backbone_name}"
        + (
            f" (GPU target >= 15000 images/s: "
            f"{'met' if slowest >= 15000 else 'NOT met'})"
            if cuda and size.name == "full"
            else ""
        )
    )
