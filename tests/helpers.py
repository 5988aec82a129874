"""What the tests share that is not a fixture: tiny synthetic
class-incremental benchmarks (ids in arrival order, or shuffled so that
LUCIR relabels them), the settings of a quick digits run and the one
builder of a tiny LUCIR strategy (``from helpers import make_tiny_lucir``).

The fixtures built on them are in ``conftest.py``."""

from __future__ import annotations

import torch
from avalanche.benchmarks import nc_benchmark
from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset
from torch import nn

from bdr_avalanche import LUCIR
from bdr_avalanche.models import SmallCNN
from bdr_avalanche.params import BDRParams, TrainingParams, hparams_of
from bdr_avalanche.protocol import make_evaluator

__all__ = [
    "ARRIVAL",
    "SHUFFLED_ORDER",
    "TINY_RUN",
    "AddConstant",
    "make_benchmark",
    "make_lucir_bdr",
    "make_tiny_lucir",
    "shuffled_benchmark",
    "split_training",
    "tiny_training",
]


class AddConstant:
    """A train transform that is easy to tell apart from the eval one."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.value


TINY_RUN = {
    "epochs": 2,
    "milestones": [1],
    "batch_size": 64,
    "width": 8,
    "mem_per_class": 5,
    "interactive": False,
    "text_log": False,
    "csv_log": False,
}
"""The keys of a quick digits run (``ExperimentConfig(**TINY_RUN, ...)``):
a few seconds on a CPU."""


def make_benchmark(
    num_classes: int = 6,
    per_exp: int = 2,
    train_per_class: int = 30,
    test_per_class: int = 10,
    train_transform=None,
    seed: int = 0,
):
    """Gaussian blobs shaped as 3x8x8 images; ids in arrival order."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, 3, 8, 8, generator=gen)

    def split(n: int):
        y = torch.arange(num_classes).repeat_interleave(n)
        x = centres[y] + 0.8 * torch.randn(len(y), 3, 8, 8, generator=gen)
        return x, y

    def dataset(x, y, transform):
        # the transform is the train group's only; eval sees the raw tensors
        return _make_taskaware_tensor_classification_dataset(
            x,
            y,
            targets=y.tolist(),
            task_labels=0,
            transform_groups={"train": (transform, None), "eval": (None, None)},
        )

    train, test = split(train_per_class), split(test_per_class)
    return nc_benchmark(
        dataset(*train, train_transform),
        dataset(*test, None),
        n_experiences=num_classes // per_exp,
        task_labels=False,
        fixed_class_order=list(range(num_classes)),
        class_ids_from_zero_from_first_exp=True,
    )


SHUFFLED_ORDER = (4, 1, 5, 0, 3, 2)
"""The class order of :func:`shuffled_benchmark`: experiences [1, 4], [0, 5],
[2, 3]."""

ARRIVAL = (1, 4, 0, 5, 2, 3)
"""LUCIR's class ``i`` on :func:`shuffled_benchmark` is its class ``ARRIVAL[i]``."""


def shuffled_benchmark(noise: float = 1.2, seed: int = 0, arrival_order: bool = False):
    """Gaussian blobs (3x8x8) whose class ids are *not* in arrival order, so
    that LUCIR relabels them; 30 train and 10 test images per class.

    With ``arrival_order`` the same images, in the same order, with the ids
    LUCIR gives them (class ``ARRIVAL[i]`` is ``i``): the equivalent stream
    whose ids are in arrival order already."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(6, 3, 8, 8, generator=gen)
    rank = torch.tensor([ARRIVAL.index(c) for c in range(6)])

    def dataset(n: int):
        y = torch.arange(6).repeat_interleave(n)
        x = centres[y] + noise * torch.randn(len(y), 3, 8, 8, generator=gen)
        if arrival_order:
            y = rank[y]
        return _make_taskaware_tensor_classification_dataset(
            x, y, targets=y.tolist(), task_labels=0
        )

    return nc_benchmark(
        dataset(30),
        dataset(10),
        n_experiences=3,
        task_labels=False,
        fixed_class_order=list(range(6)) if arrival_order else list(SHUFFLED_ORDER),
        class_ids_from_zero_from_first_exp=False,
    )


def tiny_training(**fields) -> TrainingParams:
    """The tiny runs' ``TrainingParams`` (1 epoch, batch 16, 5 exemplars per
    class, no learning-rate step), with ``fields`` replaced."""
    tiny = dict(
        epochs=1, batch_size=16, eval_batch_size=64, milestones=[100], mem_per_class=5
    )
    return TrainingParams(**{**tiny, **fields})


def split_training(kwargs: dict) -> tuple[dict, dict]:
    """``kwargs`` split into ``TrainingParams`` fields and the rest."""
    names = hparams_of(TrainingParams)
    training = {k: v for k, v in kwargs.items() if k in names}
    return training, {k: v for k, v in kwargs.items() if k not in names}


def make_tiny_lucir(
    *plugins,
    backbone: nn.Module | None = None,
    in_channels: int = 3,
    width: int = 8,
    epochs: int = 1,
    **kwargs,
) -> LUCIR:
    """A tiny LUCIR on the CPU: a ``SmallCNN(in_channels, width)`` unless
    ``backbone`` is given, :func:`tiny_training`, the protocol's evaluator;
    ``plugins`` run after its own. ``kwargs`` that name a ``TrainingParams``
    field (``lr``, ``first_lr``, ...) replace it; the others override LUCIR's
    arguments (``training=None``, ``evaluator=None``: LUCIR's defaults)."""
    fields, kwargs = split_training(kwargs)
    if backbone is None:
        backbone = SmallCNN(in_channels=in_channels, width=width)
    options = dict(
        backbone=backbone,
        training=tiny_training(epochs=epochs, **fields),
        device="cpu",
        plugins=list(plugins),
    )
    if "evaluator" not in kwargs:
        options["evaluator"] = make_evaluator()
    return LUCIR(**{**options, **kwargs})


def make_lucir_bdr(*plugins, **kwargs) -> LUCIR:
    """A tiny LUCIR+BDR (:func:`make_tiny_lucir`, ``TrainingParams``' own
    milestones) with BDR's hyper-parameters away from the defaults."""
    bdr = BDRParams(m1=0.7, m2=0.6, momentum=0.9, tau=1.5)
    milestones = TrainingParams().milestones
    return make_tiny_lucir(*plugins, milestones=milestones, bdr=bdr, **kwargs)
