"""What every benchmark stream builder shares: the error type, the iCaRL
class order, the layout of ``n_base``/``n_phases`` (checked by
:func:`~bdr_avalanche.benchmarks.specs.class_split`) and the one Avalanche
generator call.

Keeping the generator call in one place makes CIFAR-100, ImageNet and the
ImageFolder trees follow the same protocol: ``n_base`` classes in the first
experience, then ``n_phases`` equal experiences, classes in the order
``class_order(num_classes, seed)`` and class ids remapped to arrival order
(the cosine head of LUCIR/BDR grows in that order).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from avalanche.benchmarks import nc_benchmark
from avalanche.benchmarks.scenarios.deprecated.new_classes import NCScenario

from .._checks import check_positive_int
from .specs import ICARL_SEED, class_split

__all__ = [
    "ICARL_SEED",
    "DatasetError",
    "class_order",
    "error_reason",
    "make_stream",
    "stream_layout",
]


class DatasetError(ValueError):
    """A data set is missing, incomplete or not in the expected on-disk layout.

    The message names the offending path, what is wrong with it and the
    layout that was expected.
    """


def error_reason(err: BaseException) -> str:
    """``"<type>: <message>"`` of ``err`` on one line, for a :class:`DatasetError`
    (``zlib.error`` rather than a bare ``error``)."""
    name = type(err).__name__
    if name == "error":
        name = f"{type(err).__module__}.error"
    text = " ".join(str(err).split())
    return f"{name}: {text}" if text else name


def class_order(num_classes: int, seed: int = ICARL_SEED) -> list[int]:
    """The class order ``numpy.random.RandomState(seed).permutation(num_classes)``.

    With the default seed 1993 this is the iCaRL order of the
    class-incremental literature (CIFAR-100: 68, 56, 78, 8, ...; ImageNet-1k:
    54, 7, 894, 512, ...).
    """
    check_positive_int("num_classes", num_classes)
    return np.random.RandomState(seed).permutation(num_classes).tolist()


def stream_layout(
    num_classes: int, n_base: int, n_phases: int, dataset: str | None = None
) -> tuple[int, dict[int, int] | None]:
    """``(n_experiences, per_exp_classes)`` for ``nc_benchmark``.

    ``n_base`` classes in the first experience, then ``n_phases`` equal
    experiences; ``n_base=0`` (the "B0" protocol) gives ``n_phases`` equal
    experiences from the start. A split that does not tile the classes
    raises :func:`~bdr_avalanche.benchmarks.specs.class_split`'s
    ``ValueError`` (naming ``dataset``).
    """
    class_split(num_classes, n_base, n_phases, dataset=dataset)
    if n_base == 0:
        return n_phases, None
    return 1 + n_phases, {0: n_base}


def make_stream(
    train_set: Any,
    test_set: Any,
    *,
    num_classes: int,
    n_base: int,
    n_phases: int,
    seed: int,
    train_transform: Callable | None,
    eval_transform: Callable | None,
) -> NCScenario:
    """The class-incremental stream of ``train_set``/``test_set``.

    This is the ``nc_benchmark`` call Avalanche's ``SplitCIFAR100`` makes,
    with the order fixed to :func:`class_order` and class ids remapped to
    arrival order. The transforms become the datasets' ``train`` and
    ``eval`` transform groups, so ``experience.dataset.eval()`` gives the
    eval transform even on training data (herding relies on it).
    """
    n_experiences, per_exp_classes = stream_layout(num_classes, n_base, n_phases)
    return nc_benchmark(
        train_dataset=train_set,
        test_dataset=test_set,
        n_experiences=n_experiences,
        task_labels=False,
        seed=seed,
        fixed_class_order=class_order(num_classes, seed),
        shuffle=True,
        per_exp_classes=per_exp_classes,
        class_ids_from_zero_in_each_exp=False,
        class_ids_from_zero_from_first_exp=True,
        train_transform=train_transform,
        eval_transform=eval_transform,
    )
