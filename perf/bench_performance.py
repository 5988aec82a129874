"""Performance benchmark of LUCIR, CwD, BDR and herding against Avalanche.

Why: CwD and BDR are meant to be cheap add-ons to a LUCIR training step
(target: at most +5 % step time), and our vectorised herding is meant to be
much faster than Avalanche's ``HerdingSelectionStrategy`` and than a
per-sample loop (target: at least 20x, with identical picks). This script
measures all of it side by side, in one run, on the current device:

1. training images/s of Avalanche's ``Naive`` (the ``naive`` baseline of
   ``make_baseline``: same backbone, linear incremental head, SGD, no
   memory) and of our ``LUCIR``, ``LUCIR+CwD`` and ``LUCIR+CwD+BDR`` on one
   synthetic 2-experience class-incremental stream of CIFAR-like uint8
   images, through two input paths: a ``DataLoader`` running CIFAR-100's
   torchvision transforms (with the runner's default workers), and the
   fast input path (``BatchAugment.cifar()`` on the device, plus the
   runner's default autocast: bf16 on CUDA). ``Naive`` takes the same
   switches as ``LUCIR`` (``make_baseline(..., speed=Speed(...))``, the
   speed mixins of :mod:`bdr_avalanche.training`), so it runs through the
   same input path and autocast and the ratios measure the methods.
   Experience 0 is where CwD acts; experience 1 is where LUCIR's old model,
   less-forget and ranking losses and BDR's prior are active. Only the
   training epochs are timed (not the per-experience setup, herding or
   BDR's phase statistics), the first epoch of each experience is a
   warm-up, a run's throughput is the median over its timed epochs, and the
   configurations run round-robin ``--repeats`` times (median reported,
   spread in brackets; ratios are taken within a round);
2. herding of ``m = 20`` exemplars among 500 L2-normalised 512-d features:
   ``functional.herding_select`` versus Avalanche's own selection routine
   (``HerdingSelectionStrategy.make_sorted_indices_from_features``, which
   ranks all 500 samples; its first ``m`` are compared) versus a
   per-sample Python loop;
3. BDR's per-step statistics update (batch of 128 x 512 features, 100
   classes): ``functional.update_class_statistics`` versus a per-sample loop;
4. peak memory: per configuration on CUDA (``max_memory_allocated``), the
   process's peak resident set size on CPU.

Run from the repository root::

    python perf/bench_performance.py [--device auto|cpu|cuda]
                                           [--size small|full] [--repeats N]
                                           [--threads N] [--amp MODE]
                                           [--channels-last] [--compile]

``--size small`` (the default on CPU) uses a CIFAR ResNet-8 on a few hundred
images and finishes in under 2 minutes on a 2-core CPU; ``--size full``
(the default on CUDA) uses the paper's CIFAR ResNet-18 with batch 128 on
10,000 images per experience. ``--amp``, ``--channels-last`` and
``--compile`` set the fast path's switches. The exit status is 1 if the
three herding formulations do not pick the same exemplars or the two BDR
updates disagree.

One module per benchmark, next to this entry point: :mod:`bench_training`
(1 and 4, its tables in :mod:`bench_training_report`), :mod:`bench_herding`
(2) and :mod:`bench_bdr_update` (3), with the timing helpers they share in
:mod:`bench_common`.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import torch
from bench_bdr_update import benchmark_bdr_update
from bench_common import device_name, peak_rss_mib
from bench_herding import benchmark_herding
from bench_training import SIZES, benchmark_training, input_paths
from bench_training_report import print_training, print_training_summary


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--size",
        choices=tuple(SIZES),
        default=None,
        help="training sizes (default: full on CUDA, small on CPU)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement")
    parser.add_argument(
        "--amp",
        choices=("auto", "off", "bf16", "fp16"),
        default="auto",
        help="autocast of the fast-path runs (auto: bf16 on CUDA, off on CPU)",
    )
    parser.add_argument(
        "--channels-last", action="store_true", help="fast-path runs: channels-last"
    )
    parser.add_argument(
        "--compile", action="store_true", help="fast-path runs: torch.compile"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: torch's choice; use fewer on a busy "
        "machine, where threads waiting for each other distort small operations)",
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error(
            "--device cuda: CUDA is not available on this machine "
            "(torch.cuda.is_available() is False); use --device cpu"
        )
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.size is None:
        args.size = "full" if args.device == "cuda" else "small"
    return args


def main() -> int:
    args = parse_args()
    warnings.filterwarnings("ignore", message="No loggers specified")
    warnings.filterwarnings("ignore", module="avalanche")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    device = torch.device(args.device)
    size = SIZES[args.size]
    cuda = device.type == "cuda"
    print(
        f"device: {args.device} ({device_name(device)}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads, size {args.size}, "
        f"repeats {args.repeats}"
    )

    paths = input_paths(args, device)
    runs = benchmark_training(size, paths, device, args.repeats)
    print_training(runs, paths, size, args.repeats, cuda)
    herding_ok = benchmark_herding(device, args.repeats)
    bdr_ok = benchmark_bdr_update(device, args.repeats)

    print("\nSummary")
    print_training_summary(runs, paths, size, cuda)
    if cuda:
        print(
            "  peak memory: torch.cuda.max_memory_allocated per configuration "
            "(table above)"
        )
    else:
        print(
            f"  peak memory: {peak_rss_mib():.0f} MiB, peak resident set size of "
            "the whole process (CPU: no per-configuration figure)"
        )
    print(f"  wall time: {time.perf_counter() - start:.1f} s")
    return 0 if herding_ok and bdr_ok else 1


if __name__ == "__main__":
    sys.exit(main())
