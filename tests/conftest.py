"""Fixtures shared by the tests; the helpers they are built on (tiny
benchmarks, the tiny LUCIR builder) are in ``helpers.py``."""

from __future__ import annotations

import pytest
from avalanche.training.determinism.rng_manager import RNGManager
from helpers import make_benchmark


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
