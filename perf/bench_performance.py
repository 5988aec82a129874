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
"""

from __future__ import annotations

import argparse
import math
import platform
import resource
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from avalanche.benchmarks import nc_benchmark
from avalanche.benchmarks.scenarios.deprecated.new_classes import NCScenario
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin
from avalanche.training.storage_policy import HerdingSelectionStrategy
from avalanche.training.templates import SupervisedTemplate
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import Dataset

from bdr_avalanche import LUCIR
from bdr_avalanche.baselines import make_baseline
from bdr_avalanche.benchmarks import cifar100_transforms
from bdr_avalanche.experiment.config import ExperimentConfig
from bdr_avalanche.experiment.factories import amp_dtype
from bdr_avalanche.experiment.factories import num_workers as runner_num_workers
from bdr_avalanche.functional import herding_select, update_class_statistics
from bdr_avalanche.models import CifarResNet, resnet18_cifar
from bdr_avalanche.training import Speed
from bdr_avalanche.training.augment import BatchAugment

METHODS = ("Naive", "LUCIR", "LUCIR+CwD", "LUCIR+CwD+BDR")
LUCIR_FLAGS = {
    "LUCIR": {},
    "LUCIR+CwD": {"cwd": True},
    "LUCIR+CwD+BDR": {"cwd": True, "bdr": True},
}
LR = 0.01
HERDING_SAMPLES, HERDING_DIM, HERDING_M = 500, 512, 20
BDR_BATCH, BDR_DIM, BDR_CLASSES = 128, 512, 100


@dataclass(frozen=True)
class Size:
    """Model and data of the training-throughput part."""

    name: str
    backbone_name: str
    backbone: Callable[[], nn.Module]
    train_per_class: int
    batch_size: int
    epochs: int
    """Epochs per experience; the first one is a warm-up and not timed."""
    num_classes: int = 10
    num_experiences: int = 2
    mem_per_class: int = 20

    def describe(self) -> str:
        per_exp = self.num_classes // self.num_experiences
        return (
            f"{self.backbone_name}, synthetic 32x32 uint8 images, "
            f"{self.num_experiences} "
            f"experiences x {per_exp} classes x {self.train_per_class} images, "
            f"batch {self.batch_size}, {self.epochs} epochs per experience "
            f"(1 warm-up), {self.mem_per_class} exemplars per class"
        )


SIZES = {
    "small": Size("small", "CIFAR ResNet-8", lambda: CifarResNet(depth=8), 96, 64, 3),
    "full": Size("full", "CIFAR ResNet-18", resnet18_cifar, 2000, 128, 4),
}

CIFAR100_IMAGE_STEPS = 160 * (50 * 500 + 5 * 10 * 500 + 20 * (50 + 60 + 70 + 80 + 90))
"""Training image-steps of the paper's CIFAR-100 run (B50, 5 phases of 10
classes, 500 images per class, 20 exemplars per class, 160 epochs)."""


# --------------------------------------------------------------------- timing
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(
    fn: Callable[[], object], device: torch.device, repeats: int
) -> tuple[float, object]:
    """Median seconds of one call of ``fn`` over ``repeats`` samples (each
    sample runs ``fn`` enough times to last ~50 ms), and ``fn``'s result."""
    result = fn()  # warm-up
    synchronize(device)
    number = 1
    while True:
        elapsed = _time_calls(fn, number, device)
        if elapsed >= 0.05 or number >= 10_000:
            break
        number = min(10_000, max(2 * number, math.ceil(0.06 * number / elapsed)))
    samples = [elapsed / number]
    samples += [_time_calls(fn, number, device) / number for _ in range(repeats - 1)]
    return statistics.median(samples), result


def _time_calls(fn: Callable[[], object], number: int, device: torch.device) -> float:
    start = time.perf_counter()
    for _ in range(number):
        fn()
    synchronize(device)
    return max(time.perf_counter() - start, 1e-9)


class EpochTimer(SupervisedPlugin):
    """Records (images, seconds) of every training epoch.

    The device is synchronised at epoch boundaries only, so the timed steps
    run as they would in a real training run.
    """

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device
        self.epochs: list[tuple[int, float]] = []
        self._images = 0
        self._start = 0.0

    def before_training_epoch(self, strategy, **kwargs) -> None:
        synchronize(self.device)
        self._images = 0
        self._start = time.perf_counter()

    def after_training_iteration(self, strategy, **kwargs) -> None:
        self._images += strategy.mb_x.shape[0]

    def after_training_epoch(self, strategy, **kwargs) -> None:
        synchronize(self.device)
        self.epochs.append((self._images, time.perf_counter() - self._start))

    def images_per_second(self) -> float:
        """Median throughput of the epochs recorded since the last call,
        the first one (warm-up) excluded, so that one epoch disturbed by
        another process does not count; clears the record."""
        timed = self.epochs[1:] or self.epochs
        self.epochs = []
        return statistics.median(n / s for n, s in timed)


# ------------------------------------------------------------------ training
class SyntheticImages(Dataset):
    """CIFAR-like training data: uint8 32x32 RGB images (a class-dependent
    colour plus noise), served as PIL images like torchvision's CIFAR100."""

    def __init__(self, num_classes: int, per_class: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.targets = torch.arange(num_classes).repeat_interleave(per_class).tolist()
        colour = torch.randint(40, 216, (num_classes, 1, 1, 3), generator=gen)
        noise = torch.randint(-40, 41, (len(self.targets), 32, 32, 3), generator=gen)
        self.data = (colour[self.targets] + noise).to(torch.uint8).numpy()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.data[index]), self.targets[index]


def make_stream(size: Size) -> NCScenario:
    """The class-incremental stream of synthetic CIFAR-like images with
    CIFAR-100's torchvision transforms (pad-4 random crop, flip,
    normalisation), ids in arrival order."""
    train_transform, eval_transform = cifar100_transforms()
    return nc_benchmark(
        SyntheticImages(size.num_classes, size.train_per_class, seed=0),
        SyntheticImages(size.num_classes, 2, seed=1),
        n_experiences=size.num_experiences,
        task_labels=False,
        fixed_class_order=list(range(size.num_classes)),
        class_ids_from_zero_from_first_exp=True,
        train_transform=train_transform,
        eval_transform=eval_transform,
    )


@dataclass(frozen=True)
class InputPath:
    """How training batches reach the model."""

    name: str
    fast: bool
    """The fast input path (in-memory uint8 images augmented on the device
    by ``BatchAugment.cifar()``); else a ``DataLoader`` running the
    torchvision transforms."""
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    compile: bool = False
    num_workers: int = 0


def input_paths(args: argparse.Namespace, device: torch.device) -> list[InputPath]:
    """The ``DataLoader`` path as the runner sets it up by default (workers
    on CUDA) and the fast path with the requested switches."""
    cfg = ExperimentConfig(device=str(device))
    workers = runner_num_workers(cfg, device, fast=False)
    amp = amp_dtype(ExperimentConfig(amp=args.amp), device)
    switches = [f"{str(amp).removeprefix('torch.')} autocast" if amp else "fp32"]
    switches += ["channels-last"] * args.channels_last + ["compile"] * args.compile
    return [
        InputPath(
            f"DataLoader + torchvision ({workers} workers), fp32",
            False,
            None,
            num_workers=workers,
        ),
        InputPath(
            "fast input path, " + ", ".join(switches),
            True,
            amp,
            args.channels_last,
            args.compile,
        ),
    ]


def make_strategy(
    method: str, size: Size, path: InputPath, device: torch.device, timer: EpochTimer
) -> SupervisedTemplate:
    """``Naive`` (the ``naive`` baseline: linear incremental head, new data
    only) or ``LUCIR``, with the input path's speed switches."""
    torch.manual_seed(0)
    backbone = size.backbone()
    speed = Speed(
        batch_augment=BatchAugment.cifar() if path.fast else None,
        amp_dtype=path.amp_dtype,
        channels_last=path.channels_last,
        compile=path.compile,
    )
    common = dict(
        lr=LR,
        milestones=(10_000,),
        train_mb_size=size.batch_size,
        train_epochs=size.epochs,
        eval_mb_size=256,
        device=device,
        evaluator=EvaluationPlugin(loggers=[]),
        plugins=[timer],
    )
    if method == "Naive":
        return make_baseline(
            "naive",
            backbone=backbone,
            num_classes=size.num_classes,
            speed=speed,
            **common,
        )
    return LUCIR(
        backbone=backbone,
        mem_per_class=size.mem_per_class,
        compile_backbone=speed.compile,
        **speed.strategy_args(),
        **LUCIR_FLAGS[method],
        **common,
    )


def run_once(
    method: str, size: Size, path: InputPath, stream: NCScenario, device: torch.device
) -> dict:
    """Train ``method`` on the whole stream: images/s per experience and
    the CUDA peak memory (bytes; 0 on CPU)."""
    RNGManager.set_random_seeds(0)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    timer = EpochTimer(device)
    strategy = make_strategy(method, size, path, device, timer)
    throughput = []
    for experience in stream.train_stream:
        strategy.train(
            experience,
            eval_streams=[],
            num_workers=path.num_workers,
            persistent_workers=path.num_workers > 0,
        )
        throughput.append(timer.images_per_second())
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    return {"ips": throughput, "peak": peak}


def benchmark_training(
    size: Size, paths: list[InputPath], device: torch.device, repeats: int
) -> dict[str, dict[str, list[dict]]]:
    """Round-robin runs (order rotated every repeat) of every method on
    every input path: ``runs[path.name][method]`` is the list of runs."""
    stream = make_stream(size)
    configs = [(p, m) for p in paths for m in METHODS]
    runs: dict[str, dict[str, list[dict]]] = {p.name: {} for p in paths}
    for r in range(repeats):
        shift = r % len(configs)
        for path, method in configs[shift:] + configs[:shift]:
            result = run_once(method, size, path, stream, device)
            runs[path.name].setdefault(method, []).append(result)
    return runs


def _spread(values: list[float]) -> float:
    """Half the range, in % of the median."""
    return 50 * (max(values) - min(values)) / statistics.median(values)


def paired_ratio(
    runs: dict[str, list[dict]], method: str, reference: str, exp: int
) -> float:
    """Median over repeats of ``method``'s images/s divided by
    ``reference``'s in the same round (robust to slow drifts of the machine)."""
    pairs = zip(runs[method], runs[reference], strict=True)
    return statistics.median(a["ips"][exp] / b["ips"][exp] for a, b in pairs)


def overhead_pct(runs: dict[str, list[dict]], method: str, exp: int) -> float:
    """Step-time increase of ``method`` over LUCIR, in %."""
    return 100 * (1 / paired_ratio(runs, method, "LUCIR", exp) - 1)


def _table_row(runs: dict, method: str, n_exp: int, cuda: bool) -> str:
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
    runs: dict, paths: list[InputPath], size: Size, repeats: int, cuda: bool
) -> None:
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


# ------------------------------------------------------------------- herding
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


# ------------------------------------------------------------ BDR statistics
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


# ---------------------------------------------------------------------- main
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_mib() -> float:
    """The process's peak resident set size (``ru_maxrss``: KiB on Linux,
    bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


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
    slowest = min(
        statistics.median(r["ips"][e] for r in runs[paths[-1].name]["LUCIR+CwD+BDR"])
        for e in range(size.num_experiences)
    )
    print(
        f"  LUCIR+CwD+BDR, {paths[-1].name}: {slowest:.0f} images/s (slower "
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
