"""How often each class enters the training loss in an epoch.

BDR's ``psi`` is the label distribution of the training loss. A loader
that holds everything feeds each sample once an epoch; Avalanche's
``ReplayDataLoader`` (and this package's device loaders, which copy its
structure) draws a memory batch beside every data batch, cycling over the
memory, so a memory sample enters the loss several times an epoch.
:func:`epoch_label_counts` gives the expected class counts of one epoch of
such a loader from its structure (the datasets' labels, batch sizes,
batches per pass, shuffling), without loading a sample;
:func:`drawn_label_counts` those of a memory loader that draws a given
number of batches (DER's and ER-ACE's cycling buffer loader).

Counts are those of this process; the caller sums them over processes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence, Sized
from dataclasses import dataclass
from typing import Any, cast

import torch
from avalanche.benchmarks.utils.data_loader import MultiDatasetDataLoader
from torch import Tensor
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    RandomSampler,
    SequentialSampler,
)

from ..distributed import rank, world_size
from ..training.fast_input import DeviceBatchLoader, DeviceMultiLoader

__all__ = ["dataset_labels", "drawn_label_counts", "epoch_label_counts"]


def dataset_labels(dataset: Any) -> Tensor:
    """The class label of every sample of ``dataset`` (its ``targets``),
    as an ``int64`` tensor, without loading a sample."""
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise ValueError(
            f"BDRPlugin counts the classes of the training data from its targets, "
            f"and a {type(dataset).__name__} has none: use an AvalancheDataset"
        )
    return torch.as_tensor(list(targets), dtype=torch.long)


@dataclass(frozen=True)
class _Part:
    """One dataset of a loader, as this process draws it: a pass is
    ``batches_per_pass`` batches of ``batch_size`` over this process's
    ``samples_per_replica`` positions of the dataset (a ``DistributedSampler``
    pads the dataset with its first samples to ``replicas`` equal shares, or
    truncates it with ``drop_last``, and gives every ``replicas``-th
    position to each process), in a random order when ``shuffle``."""

    labels: Tensor
    batch_size: int
    batches_per_pass: int
    samples_per_replica: int
    shuffle: bool
    replicas: int = 1
    rank: int = 0

    def draws(self, batches: int) -> Tensor:
        """Expected number of times each sample enters this process's
        batches in ``batches`` batches that start with a fresh pass (a new
        pass, with a new permutation, follows each finished one)."""
        n = len(self.labels)
        out = torch.zeros(n, dtype=torch.float64)
        if n == 0 or batches == 0 or self.batches_per_pass == 0:
            return out
        passes, rest = divmod(batches, self.batches_per_pass)
        per_pass = min(
            self.batches_per_pass * self.batch_size, self.samples_per_replica
        )
        # rest < batches_per_pass: the last, possibly short, batch is not in it
        if self.shuffle:
            # every sample is equally likely at every position of a pass
            return out.fill_((passes * per_pass + rest * self.batch_size) / n)
        padded = torch.arange(self.samples_per_replica * self.replicas) % n
        order = padded[self.rank :: self.replicas]
        out += passes * torch.bincount(order[:per_pass], minlength=n)
        return out + torch.bincount(order[: rest * self.batch_size], minlength=n)

    def label_counts(self, batches: int, num_classes: int) -> Tensor:
        """Expected ``(num_classes,)`` class counts of ``batches`` batches."""
        counts = torch.zeros(num_classes, dtype=torch.float64)
        return counts.index_add_(0, self.labels, self.draws(batches))


def _split(n: int, batch_size: int, replicas: int, drop_last: bool) -> tuple[int, int]:
    """``(samples_per_replica, batches_per_pass)`` of a ``DistributedSampler``
    (or a plain sampler when ``replicas == 1``) batched by ``BatchSampler``."""
    if replicas == 1:
        per_replica = n
    else:
        per_replica = n // replicas if drop_last else math.ceil(n / replicas)
    batches = (
        per_replica // batch_size if drop_last else math.ceil(per_replica / batch_size)
    )
    return per_replica, batches


def _avalanche_parts(loader: MultiDatasetDataLoader) -> list[_Part]:
    """The parts of an Avalanche multi-dataset loader: each dataset gets a
    ``DataLoader`` of its own batch size and ``loader_kwargs`` (shuffle and
    drop_last), or a ``DistributedSampler`` (which shuffles by default)
    when the loader samples across processes."""
    if loader.never_ending:
        raise ValueError(
            "BDRPlugin counts the classes of one epoch of the training loader, and "
            f"this {type(loader).__name__} never ends an epoch"
        )
    kwargs = loader.loader_kwargs
    distributed = bool(loader.distributed_sampling)
    replicas, this_rank = (world_size(), rank()) if distributed else (1, 0)
    drop_last = bool(kwargs.get("drop_last", False))
    shuffle = bool(kwargs.get("shuffle", distributed))
    parts = []
    for dataset, batch_size in zip(loader.datasets, loader.batch_sizes, strict=True):
        per_replica, batches = _split(len(dataset), batch_size, replicas, drop_last)
        parts.append(
            _Part(
                dataset_labels(dataset),
                batch_size,
                batches,
                per_replica,
                shuffle,
                replicas,
                this_rank,
            )
        )
    return parts


def _device_part(loader: DeviceBatchLoader) -> _Part:
    return _Part(
        loader.labels.long().cpu(),
        loader.batch_size,
        len(loader),
        math.ceil(len(loader.labels) / loader.num_replicas),  # padded, always
        loader.shuffle,
        loader.num_replicas,
        loader.rank,
    )


def _torch_part(loader: DataLoader) -> _Part:
    """A ``DataLoader`` with its default batch sampler over a random,
    sequential or distributed sampler."""
    # torch types a loader's dataset without __len__; these datasets have one
    sampler, n = loader.sampler, len(cast(Sized, loader.dataset))
    if not isinstance(loader.batch_sampler, BatchSampler) or loader.batch_size is None:
        raise ValueError(
            _unknown(loader, f"batch sampler {type(loader.batch_sampler)}")
        )
    if isinstance(sampler, DistributedSampler):
        return _Part(
            dataset_labels(loader.dataset),
            loader.batch_size,
            len(loader),
            sampler.num_samples,
            sampler.shuffle,
            sampler.num_replicas,
            sampler.rank,
        )
    plain = isinstance(sampler, SequentialSampler) or (
        isinstance(sampler, RandomSampler)
        and not sampler.replacement
        and sampler.num_samples == n
    )
    if not plain:
        raise ValueError(_unknown(loader, f"sampler {type(sampler).__name__}"))
    return _Part(
        dataset_labels(loader.dataset),
        loader.batch_size,
        len(loader),
        n,
        isinstance(sampler, RandomSampler),
    )


def _unknown(loader: Any, what: str) -> str:
    return (
        f"BDRPlugin cannot tell how often the training loss sees each class from a "
        f"{type(loader).__name__} with {what}: it reads a DataLoader with a random, "
        "sequential or distributed sampler, Avalanche's multi-dataset loaders "
        "(ReplayDataLoader) and this package's device loaders"
    )


def _parts(loader: Any) -> tuple[list[_Part], int, bool]:
    """``(parts, termination, oversample)`` of a training loader: its
    datasets, the index of the one whose pass is the epoch, and whether
    the others start a new pass when they run out."""
    if isinstance(loader, MultiDatasetDataLoader):
        return (
            _avalanche_parts(loader),
            loader.termination_dataset,
            loader.oversample_small_datasets,
        )
    if isinstance(loader, DeviceMultiLoader):
        parts = [_device_part(part) for part in loader.loaders]
        return parts, loader.termination, loader.oversample
    if isinstance(loader, DeviceBatchLoader):
        return [_device_part(loader)], 0, False
    if isinstance(loader, DataLoader):
        return [_torch_part(loader)], 0, False
    raise ValueError(_unknown(loader, "its own batching"))


def epoch_label_counts(loader: Any, num_classes: int) -> tuple[Tensor, int]:
    """Expected class counts of the samples of one epoch of ``loader`` on
    this process, and the number of datasets the loader draws from.

    An epoch is ``len(loader)`` steps. Each step takes the next batch of
    every dataset: the terminating one makes one pass; another starts a
    new pass when it runs out if the loader oversamples, else it stops
    contributing. A whole pass counts each sample once (a padded
    distributed pass, the padding too); the batches of an unfinished pass
    count the samples they hold when the order is sequential, and the
    expectation over the permutation (each sample equally) when it is
    shuffled.

    :return: float64 ``(num_classes,)`` counts and the number of datasets.
    """
    parts, termination, oversample = _parts(loader)
    steps = len(loader)
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for i, part in enumerate(parts):
        batches = steps if i == termination or oversample else part.batches_per_pass
        counts += part.label_counts(min(steps, batches), num_classes)
    return counts, len(parts)


def drawn_label_counts(
    labels: Tensor | Sequence[int], batches: int, batch_size: int, num_classes: int
) -> Tensor:
    """Expected class counts of ``batches`` full batches drawn without
    replacement from shuffled passes over a dataset with ``labels`` (a
    ``drop_last`` loader cycled over, as DER's and ER-ACE's buffer loader):
    each batch holds ``batch_size * n_k / n`` samples of class ``k`` on
    average, wherever it falls in a pass.

    :return: float64 ``(num_classes,)`` counts.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    part = _Part(
        labels,
        batch_size,
        len(labels) // batch_size,
        len(labels),
        shuffle=True,
    )
    return part.label_counts(batches, num_classes)
