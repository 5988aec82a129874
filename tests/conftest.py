"""Fixtures shared by the tests; the helpers they are built on (tiny
benchmarks, the tiny LUCIR builder) are in ``helpers.py``."""

from __future__ import annotations

import os

import pytest
import torch
from avalanche.training.determinism.rng_manager import RNGManager
from helpers import make_benchmark

SLOW_MARKERS = ("integration", "system")
"""The markers of the tiers that ``make test-fast`` leaves out."""


def pytest_configure(config: pytest.Config) -> None:
    """In a pytest-xdist worker (``make test`` runs one per core), torch
    and the processes the tests start use one thread: the workers already
    share the cores, and more threads than cores slow every one of them."""
    if hasattr(config, "workerinput"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the modules that hold integration or system tests first, each
    module's tests in their order: with several workers (``make test``
    hands each worker whole modules), the longest modules then start early
    instead of ending the run alone."""
    slow = {
        item.module.__name__
        for item in items
        if any(item.get_closest_marker(name) for name in SLOW_MARKERS)
    }
    items.sort(key=lambda item: item.module.__name__ not in slow)


@pytest.fixture
def benchmark():
    """The tiny Gaussian-blob stream (three experiences of two classes),
    built after seeding every generator with 0."""
    RNGManager.set_random_seeds(0)
    return make_benchmark()


@pytest.fixture(scope="session")
def digits_benchmark():
    """The default digits stream (``split_digits()``: 4 base classes, then
    experiences of 2), built once: tests read it and must not change it."""
    from bdr_avalanche.benchmarks import split_digits

    return split_digits()
