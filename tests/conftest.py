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
