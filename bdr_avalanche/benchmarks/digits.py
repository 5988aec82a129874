"""Class-incremental split of scikit-learn's bundled ``digits`` images.

1797 real 8x8 grey-scale handwritten digits shipped inside scikit-learn:
no download, small enough to run a whole LUCIR/CwD/BDR comparison on a CPU
in a few minutes. The default is 4 base classes then 3 experiences of 2.
"""

from __future__ import annotations

import numpy as np
import torch
from avalanche.benchmarks import nc_benchmark
from avalanche.benchmarks.scenarios.deprecated.new_classes import NCScenario
from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from .._checks import check_positive_int
from ._common import class_order
from .specs import DATASETS, ICARL_SEED, class_split
from .transforms import torchvision_transforms

__all__ = ["digits_class_sizes", "split_digits"]

#: The private Avalanche names this module relies on, checked against the
#: installed Avalanche by ``tests/test_avalanche_private.py``
#: (``Class()._name``: an instance attribute). The tensors become a
#: classification dataset through Avalanche's own private factory.
AVALANCHE_PRIVATE = (
    "avalanche.benchmarks.utils._make_taskaware_tensor_classification_dataset",
)

SPEC = DATASETS["digits"]
assert SPEC.classes is not None and SPEC.increment is not None  # given by its spec
NUM_CLASSES = SPEC.classes


def split_digits(
    n_base: int = SPEC.n_base,
    increment: int = SPEC.increment,
    seed: int = ICARL_SEED,
    test_size: float = 1 / 3,
    augment: bool = True,
) -> NCScenario:
    """The ``digits`` benchmark: ``n_base`` classes, then experiences of
    ``increment`` classes.

    The class order is ``numpy.random.RandomState(seed).permutation(10)``
    (the iCaRL convention) and class ids are remapped to arrival order, as
    LUCIR's cosine head requires. Train and test sets are a stratified
    split. Images are scaled to [0, 1] and standardised with the training
    mean and std; with ``augment``, training images are randomly shifted by
    up to one pixel.
    """
    check_positive_int("n_base", n_base, minimum=SPEC.min_n_base)
    n_phases, _ = class_split(
        NUM_CLASSES, n_base, increment=increment, dataset=SPEC.name
    )
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    train_idx, test_idx = _split(digits.target, seed, test_size)
    mean, std = images[train_idx].mean(), images[train_idx].std()
    images = (images - mean) / std

    def make(idx: np.ndarray, transform):
        x, y = images[idx], labels[idx]
        return _make_taskaware_tensor_classification_dataset(
            x, y, targets=y.tolist(), task_labels=0, transform=transform
        )

    train_transform, eval_transform = torchvision_transforms(SPEC.recipe())
    return nc_benchmark(
        make(train_idx, train_transform if augment else None),
        make(test_idx, eval_transform),
        n_experiences=1 + n_phases,
        task_labels=False,
        fixed_class_order=class_order(NUM_CLASSES, seed),
        per_exp_classes={0: n_base},
        class_ids_from_zero_from_first_exp=True,
    )


def digits_class_sizes(seed: int = ICARL_SEED, test_size: float = 1 / 3) -> list[int]:
    """Training images per class of :func:`split_digits` (same split)."""
    target = load_digits().target
    train_idx, _ = _split(target, seed, test_size)
    return np.bincount(target[train_idx], minlength=NUM_CLASSES).tolist()


def _split(target: np.ndarray, seed: int, test_size: float) -> tuple[np.ndarray, ...]:
    """Stratified train/test indices."""
    return tuple(
        train_test_split(
            np.arange(len(target)),
            test_size=test_size,
            random_state=seed,
            stratify=target,
        )
    )
