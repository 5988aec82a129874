"""The fast input path for any Avalanche template: training batches from
images kept on the device, augmented there."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from avalanche.benchmarks.utils.data_loader import MultiDatasetDataLoader
from torch import nn

from .fast_input import DeviceBatchLoader, DeviceMultiLoader
from .mixin_protocol import SpeedStrategyProtocol

__all__ = ["FastInputMixin"]

AVALANCHE_PRIVATE = (
    "avalanche.training.templates.SupervisedTemplate._before_training_exp",
)
"""The template hooks this mixin extends (protected Avalanche names, checked by
``tests/test_avalanche_private.py``)."""


class FastInputMixin(SpeedStrategyProtocol):
    """Training batches from a
    :class:`~bdr_avalanche.training.fast_input.DeviceBatchLoader`.

    With a ``batch_augment`` (e.g.
    :meth:`~bdr_avalanche.training.augment.BatchAugment.from_recipe`),
    each experience's adapted dataset (whatever the template and its
    plugins put in it: new data, a concatenated memory, GDumb's buffer) is
    stacked once, without its transforms, on the device; every epoch is one
    permutation drawn there and every batch is augmented there, in
    :attr:`memory_format`. Without it, the template's own loader is used.

    A plugin that swaps in an Avalanche multi-dataset loader in
    ``before_training_exp`` (``ReplayPlugin``'s and BiC's
    ``ReplayDataLoader``: ``train_mb_size`` new samples and
    ``batch_size_mem`` memory samples per step) gets the same loader on the
    device (:class:`~bdr_avalanche.training.fast_input.DeviceMultiLoader`: same
    datasets, batch sizes, epoch length and cycling of the memory), so the
    memory is augmented on the device too. A plugin that swaps in any other
    loader is refused (``TypeError``): its batches would bypass the fast
    path.

    Evaluation keeps the template's loader: evaluation is deterministic
    (the same batches on either path, up to rounding) and a small part of
    a run, and Avalanche rebuilds the evaluated datasets at every call, so
    stacking them on the device would cost a pass over them every time.

    The mixin reads ``train_mb_size`` and draws one shuffled loader over
    the adapted dataset, as a ``DataLoader`` would; Avalanche's default
    loader balances task labels, which class-incremental streams (one task)
    do not have. Mix it in before the template:
    ``class Fast(FastInputMixin, AutocastMixin, ChannelsLastMixin, Naive)``
    (see :class:`~bdr_avalanche.training.SpeedMixin`).

    :param batch_augment: the training transform of a uint8 (or [0, 1]
        float) batch, run on the device; ``None``: the template's loader.
    """

    dataloader: Iterable[Any]
    """The training loader of the current experience (the template's
    attribute): a device loader, or the template's own."""

    def __init__(self, *, batch_augment: nn.Module | None = None, **kwargs) -> None:
        self.batch_augment = batch_augment
        super().__init__(**kwargs)

    @property
    def _memory_format(self) -> torch.memory_format:
        return getattr(self, "memory_format", torch.contiguous_format)

    def input_shard(self) -> tuple[int, int, int]:
        """``(batch_size, num_replicas, rank)`` of this process's device
        loader: here the whole ``train_mb_size`` in one process; a
        distributed strategy gives its per-process share."""
        return self.train_mb_size, 1, 0

    def device_loader(
        self,
        dataset,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> DeviceBatchLoader:
        """``dataset``'s untransformed images on the device, in batches of
        ``batch_size`` augmented by ``batch_augment``."""
        assert self.batch_augment is not None
        return DeviceBatchLoader.from_dataset(
            dataset,
            batch_size,
            self.batch_augment,
            self.device,
            shuffle=shuffle,
            drop_last=drop_last,
            memory_format=self._memory_format,
            num_replicas=num_replicas,
            rank=rank,
        )

    def make_train_dataloader(
        self, *, shuffle: bool = True, drop_last: bool = False, **kwargs
    ) -> None:
        """A :class:`~bdr_avalanche.training.fast_input.DeviceBatchLoader` over the
        adapted dataset with ``batch_augment``, else the template's loader
        (``kwargs``, e.g. ``num_workers``, go to that one only)."""
        if self.batch_augment is None:
            super().make_train_dataloader(
                shuffle=shuffle, drop_last=drop_last, **kwargs
            )
            return
        batch_size, replicas, rank = self.input_shard()
        self.dataloader = self.device_loader(
            self.adapted_dataset,
            batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_replicas=replicas,
            rank=rank,
        )

    def _before_training_exp(self, **kwargs) -> None:
        super()._before_training_exp(**kwargs)
        if self.batch_augment is not None:
            # after the plugins: ReplayPlugin swaps in its loader there
            self.dataloader = self._on_device(self.dataloader)

    def _on_device(self, loader):
        """``loader``, or the device loader that replaces a multi-dataset
        loader a plugin swapped in."""
        if isinstance(loader, (DeviceBatchLoader, DeviceMultiLoader)):
            return loader
        if isinstance(loader, MultiDatasetDataLoader) and not loader.never_ending:
            args = loader.loader_kwargs
            _, replicas, rank = self.input_shard()
            loaders = [
                self.device_loader(
                    dataset,
                    size,  # Avalanche's batch sizes are per process already
                    shuffle=args.get("shuffle", False),
                    drop_last=args.get("drop_last", False),
                    num_replicas=replicas,
                    rank=rank,
                )
                for dataset, size in zip(
                    loader.datasets, loader.batch_sizes, strict=True
                )
            ]
            return DeviceMultiLoader(
                loaders, loader.termination_dataset, loader.oversample_small_datasets
            )
        raise TypeError(
            f"{type(self).__name__} has a batch_augment (the fast input path), but a "
            f"plugin replaced its training loader with a {type(loader).__name__}, "
            "whose batches would bypass it; build the strategy without "
            "batch_augment"
        )
