"""Training-throughput benchmark: images/s of Avalanche's ``Naive`` and of
our ``LUCIR``, ``LUCIR+CwD`` and ``LUCIR+CwD+BDR``.

Why: CwD and BDR are meant to be cheap add-ons to a LUCIR training step
(target: at most +5 % step time). Every method trains on one synthetic
2-experience class-incremental stream of CIFAR-like uint8 images, through
two input paths (:func:`input_paths`): a ``DataLoader`` running
CIFAR-100's torchvision transforms, and the fast input path. ``Naive``
(the ``naive`` baseline of ``make_baseline``) takes the same speed
switches as ``LUCIR``, so the ratios measure the methods. Only the
training epochs are timed (:class:`EpochTimer`), and the configurations
run round-robin (:func:`benchmark_training`). The tables are printed by
:mod:`bench_training_report`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from avalanche.benchmarks import nc_benchmark
from avalanche.benchmarks.scenarios.deprecated.new_classes import NCScenario
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin
from avalanche.training.templates import SupervisedTemplate
from bench_common import synchronize
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from bdr_avalanche import LUCIR
from bdr_avalanche.baselines import make_baseline
from bdr_avalanche.benchmarks import cifar100_transforms
from bdr_avalanche.experiment.config import ExperimentConfig
from bdr_avalanche.experiment.factories import amp_dtype
from bdr_avalanche.experiment.factories import num_workers as runner_num_workers
from bdr_avalanche.models import CifarResNet, resnet18_cifar
from bdr_avalanche.params import TrainingParams
from bdr_avalanche.training import Speed
from bdr_avalanche.training.augment import BatchAugment

__all__ = [
    "METHODS",
    "SIZES",
    "EpochTimer",
    "InputPath",
    "Size",
    "benchmark_training",
    "input_paths",
]

METHODS = ("Naive", "LUCIR", "LUCIR+CwD", "LUCIR+CwD+BDR")
LUCIR_FLAGS = {
    "LUCIR": {},
    "LUCIR+CwD": {"cwd": True},
    "LUCIR+CwD+BDR": {"cwd": True, "bdr": True},
}
LR = 0.01


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
    training = TrainingParams(
        lr=LR,
        milestones=[10_000],
        batch_size=size.batch_size,
        epochs=size.epochs,
        eval_batch_size=256,
        mem_per_class=size.mem_per_class,
    )
    common = dict(
        training=training,
        device=device,
        evaluator=EvaluationPlugin(loggers=[]),
        plugins=[timer],
        speed=speed,
    )
    if method == "Naive":
        return make_baseline(
            "naive", backbone=backbone, num_classes=size.num_classes, **common
        )
    return LUCIR(backbone=backbone, **LUCIR_FLAGS[method], **common)


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
