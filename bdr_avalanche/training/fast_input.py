"""In-memory training batches, augmented on the training device.

For a dataset that fits in memory (CIFAR-100, Tiny-ImageNet decoded with
``in_memory``, the digits), :class:`DeviceBatchLoader` keeps the
experience's images (new data and memory together) as one tensor on the
training device, shuffles them there and runs a
:class:`~bdr_avalanche.training.augment.BatchAugment` on each mini-batch: no
per-image PIL transform, no DataLoader worker, no host-to-device copy per
step. It yields ``[x, y, t]`` mini-batches as Avalanche's data loaders do,
so the strategy's training loop does not change. :class:`DeviceMultiLoader`
concatenates the batches of several of them, as Avalanche's
``ReplayDataLoader`` concatenates new data and memory.
"""

from __future__ import annotations

import math

import torch
from avalanche.benchmarks.utils import AvalancheDataset
from PIL.Image import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision.transforms.functional import pil_to_tensor

from .._utils import check_positive_int
from ..distributed import broadcast_tensor

__all__ = ["DeviceBatchLoader", "DeviceMultiLoader", "stack_untransformed"]


def _as_tensor(image: Image | Tensor) -> Tensor:
    """A sample's image before any transform: uint8 for a PIL image, else
    the tensor as it is. (Module level, so DataLoader workers can pickle it.)"""
    return pil_to_tensor(image) if isinstance(image, Image) else image


def stack_untransformed(
    dataset: AvalancheDataset, batch_size: int = 1024
) -> tuple[Tensor, Tensor, Tensor]:
    """Images, class labels and task labels of ``dataset`` without its
    transforms, as ``(N, C, H, W)``, ``(N,)`` and ``(N,)`` CPU tensors.

    PIL images become uint8 tensors; tensor images (uint8 or already
    floating point) are kept as they are. All images must have one size.
    No random number is drawn from the global generators.
    """
    raw = dataset.replace_current_transform_group(_as_tensor)
    images, labels, tasks = [], [], []
    # its own generator: reading the data leaves the global one untouched
    loader = DataLoader(
        raw, batch_size=batch_size, shuffle=False, generator=torch.Generator()
    )
    for batch in loader:
        images.append(batch[0])
        labels.append(batch[1])
        tasks.append(batch[-1])
    return torch.cat(images), torch.cat(labels), torch.cat(tasks)


class DeviceBatchLoader:
    """Shuffled, augmented mini-batches of in-memory images on ``device``.

    Each epoch draws one permutation on the device (``torch.randperm``), so
    every sample is seen once per epoch, as with a shuffling DataLoader;
    the last batch is smaller unless ``drop_last``. The augmentation draws
    its random numbers on the device too, so iterating never waits for the
    host.

    :param images: ``(N, C, H, W)`` uint8 (or float) images.
    :param labels: ``(N,)`` class labels.
    :param task_labels: ``(N,)`` task labels.
    :param augment: the training transform of a batch, e.g.
        :meth:`~bdr_avalanche.training.augment.BatchAugment.cifar`.
    :param num_replicas: processes sharing the data (distributed training);
        ``batch_size`` is then the per-process batch. Rank 0's permutation
        is broadcast, the epoch is padded with its first samples to a
        multiple of ``num_replicas``, and process ``rank`` takes every
        ``num_replicas``-th sample from its rank (as ``DistributedSampler``
        does): step ``i``'s batches of all processes together are batch
        ``i`` of one process with ``num_replicas`` times the batch size.
    :param rank: this process's rank.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        task_labels: Tensor,
        batch_size: int,
        augment: nn.Module,
        device: torch.device | str,
        shuffle: bool = True,
        drop_last: bool = False,
        memory_format: torch.memory_format = torch.contiguous_format,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, num_replicas={num_replicas})")
        if not (len(images) == len(labels) == len(task_labels)):
            raise ValueError(
                f"images, labels and task labels differ in length: {len(images)}, "
                f"{len(labels)}, {len(task_labels)}"
            )
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.task_labels = task_labels.to(self.device)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.augment = augment.to(self.device)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.memory_format = memory_format
        self.num_replicas = num_replicas
        self.rank = rank

    @classmethod
    def from_dataset(
        cls,
        dataset: AvalancheDataset,
        batch_size: int,
        augment: nn.Module,
        device,
        **kwargs,
    ) -> DeviceBatchLoader:
        """Load ``dataset``'s untransformed images (see
        :func:`stack_untransformed`) into a loader."""
        return cls(*stack_untransformed(dataset), batch_size, augment, device, **kwargs)

    def __len__(self) -> int:
        n = self._samples_per_replica()
        return (
            n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
        )

    def _samples_per_replica(self) -> int:
        return math.ceil(len(self.images) / self.num_replicas)

    def __iter__(self):
        n = len(self.images)
        order = (
            torch.randperm(n, device=self.device)
            if self.shuffle
            else torch.arange(n, device=self.device)
        )
        if self.num_replicas > 1:
            if self.shuffle:
                broadcast_tensor(order, 0)
            padded = self._samples_per_replica() * self.num_replicas
            order = order[torch.arange(padded, device=self.device) % n]
            order = order[self.rank :: self.num_replicas]
        for i in range(len(self)):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self.augment(self.images[index])
            yield [
                x.contiguous(memory_format=self.memory_format),
                self.labels[index],
                self.task_labels[index],
            ]


class DeviceMultiLoader:
    """Each step, the next batch of every loader, concatenated: Avalanche's
    ``MultiDatasetDataLoader`` (e.g. ``ReplayPlugin``'s ``ReplayDataLoader``:
    a batch of new data and a batch of memory) on the device.

    The epoch has as many steps as the ``termination`` loader has batches.
    A loader that runs out before it starts a new epoch of its own (a new
    permutation) when ``oversample``, else it stops contributing; an empty
    loader never contributes. The parts keep the loaders' order.

    :param loaders: the loaders, e.g. new data then memory.
    :param termination: index of the loader whose epoch is the epoch.
    :param oversample: cycle the loaders that run out first.
    """

    def __init__(
        self,
        loaders: list[DeviceBatchLoader],
        termination: int = 0,
        oversample: bool = True,
    ) -> None:
        if not 0 <= termination < len(loaders):
            raise ValueError(
                f"termination {termination} is not the index of one of the "
                f"{len(loaders)} loaders"
            )
        self.loaders = list(loaders)
        self.termination = termination
        self.oversample = oversample

    def __len__(self) -> int:
        return len(self.loaders[self.termination])

    def __iter__(self):
        iterators = [iter(loader) for loader in self.loaders]
        for _ in range(len(self)):
            parts = []
            for i, loader in enumerate(self.loaders):
                if iterators[i] is None:
                    continue
                batch = next(iterators[i], None)
                if batch is None and self.oversample and len(loader) > 0:
                    iterators[i] = iter(loader)
                    batch = next(iterators[i], None)
                if batch is None:
                    iterators[i] = None
                    continue
                parts.append(batch)
            yield [torch.cat(field) for field in zip(*parts, strict=True)]
