"""Tiny synthetic class-incremental benchmarks for fast CPU tests."""

from __future__ import annotations

import pytest
import torch
from avalanche.benchmarks import nc_benchmark
from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset
from avalanche.training.determinism.rng_manager import RNGManager


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


@pytest.fixture
def benchmark():
    RNGManager.set_random_seeds(0)
    return make_benchmark()


def tiny_training(**fields):
    """The tiny runs' ``TrainingParams`` (1 epoch, batch 16, 5 exemplars per
    class, no learning-rate step), with ``fields`` replaced."""
    from bdr_avalanche.params import TrainingParams

    tiny = dict(
        epochs=1, batch_size=16, eval_batch_size=64, milestones=[100], mem_per_class=5
    )
    return TrainingParams(**{**tiny, **fields})


def split_training(kwargs: dict) -> tuple[dict, dict]:
    """``kwargs`` split into ``TrainingParams`` fields and the rest."""
    from bdr_avalanche.params import TrainingParams, hparams_of

    names = hparams_of(TrainingParams)
    training = {k: v for k, v in kwargs.items() if k in names}
    return training, {k: v for k, v in kwargs.items() if k not in names}


def make_tiny_lucir(*plugins, epochs: int = 1, **kwargs):
    """A tiny LUCIR (:func:`tiny_training`); ``plugins`` run after its own.
    ``kwargs`` that name a ``TrainingParams`` field (``lr``, ``first_lr``,
    ...) replace it; the others override LUCIR's arguments."""
    from bdr_avalanche import LUCIR
    from bdr_avalanche.models import SmallCNN
    from bdr_avalanche.protocol import make_evaluator

    training, kwargs = split_training(kwargs)
    options = dict(
        backbone=SmallCNN(in_channels=3, width=8),
        training=tiny_training(epochs=epochs, **training),
        device="cpu",
        plugins=list(plugins),
        evaluator=make_evaluator(),
    )
    return LUCIR(**{**options, **kwargs})


def make_lucir_bdr(*plugins, backbone=None, **kwargs):
    """A tiny LUCIR+BDR (1 epoch, batch 16, 5 exemplars per class) with
    hyper-parameters away from the defaults; ``plugins`` run after its own."""
    from bdr_avalanche import LUCIR
    from bdr_avalanche.models import SmallCNN
    from bdr_avalanche.params import BDRParams, TrainingParams
    from bdr_avalanche.protocol import make_evaluator

    return LUCIR(
        backbone=SmallCNN(in_channels=3, width=8) if backbone is None else backbone,
        training=TrainingParams(
            epochs=1, batch_size=16, eval_batch_size=64, mem_per_class=5
        ),
        bdr=BDRParams(m1=0.7, m2=0.6, momentum=0.9, tau=1.5),
        device="cpu",
        plugins=list(plugins),
        evaluator=make_evaluator(),
        **kwargs,
    )
