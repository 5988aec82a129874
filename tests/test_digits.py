"""The class-incremental split of scikit-learn's ``digits``."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from sklearn.datasets import load_digits

from bdr_avalanche.benchmarks import split_digits


@pytest.fixture(scope="module")
def digit_counts():
    """Number of samples of each original digit in the whole data set."""
    return Counter(load_digits().target.tolist())


def class_counts(stream) -> Counter:
    """Samples per (remapped) class id over every experience of a stream."""
    counts: Counter = Counter()
    for exp in stream:
        counts.update(int(y) for y in exp.dataset.targets)
    return counts


def test_default_experiences(digits_benchmark):
    """Four training experiences with class ids in order of arrival."""
    expected = [[0, 1, 2, 3], [4, 5], [6, 7], [8, 9]]
    assert digits_benchmark.n_experiences == 4
    for stream in (digits_benchmark.train_stream, digits_benchmark.test_stream):
        assert [sorted(e.classes_in_this_experience) for e in stream] == expected


def test_sizes_sum_to_whole_data_set(digits_benchmark):
    """Train and test sets together hold each of the 1797 images once."""
    train = sum(len(e.dataset) for e in digits_benchmark.train_stream)
    test = sum(len(e.dataset) for e in digits_benchmark.test_stream)
    assert train + test == 1797
    assert 0 < test < train


def test_split_is_stratified(digits_benchmark, digit_counts):
    """Every class keeps about a third of its samples for testing."""
    train, test = (
        class_counts(digits_benchmark.train_stream),
        class_counts(digits_benchmark.test_stream),
    )
    original = digits_benchmark.classes_order_original_ids
    assert sorted(train) == sorted(test) == list(range(10))
    for class_id in range(10):
        total = digit_counts[original[class_id]]
        assert train[class_id] + test[class_id] == total
        assert abs(test[class_id] - total / 3) <= 1


def test_sample_shape(digits_benchmark):
    """Samples are float images of shape (1, 8, 8) with an int label."""
    x, y, *_ = digits_benchmark.train_stream[0].dataset[0]
    assert x.shape == (1, 8, 8)
    assert x.dtype == torch.float32
    assert int(y) in range(4)
    x_test, *_ = digits_benchmark.test_stream[3].dataset[0]
    assert x_test.shape == (1, 8, 8)
    assert x_test.dtype == torch.float32


@pytest.mark.parametrize(("n_base", "increment"), [(4, 4), (5, 3), (3, 2)])
def test_incompatible_increment(n_base, increment):
    """n_base and increment that do not tile the 10 classes raise ValueError."""
    with pytest.raises(ValueError, match="increment"):
        split_digits(n_base=n_base, increment=increment)


@pytest.mark.parametrize(
    ("n_base", "increment", "sizes"),
    [(2, 2, [2, 2, 2, 2, 2]), (4, 3, [4, 3, 3])],
)
def test_other_increments(n_base, increment, sizes):
    """Other tilings of the 10 classes give one experience per block of classes."""
    bench = split_digits(n_base=n_base, increment=increment)
    assert bench.n_experiences == len(sizes)
    assert [len(e.classes_in_this_experience) for e in bench.train_stream] == sizes


def test_seed_sets_class_order(digits_benchmark):
    """The same seed repeats the class order; another seed changes it."""
    default, same, other = digits_benchmark, split_digits(), split_digits(seed=0)
    assert same.original_classes_in_exp == default.original_classes_in_exp
    assert same.classes_order_original_ids == default.classes_order_original_ids
    assert other.classes_order_original_ids != default.classes_order_original_ids
