"""Data-parallel training in a process group, for any Avalanche template."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

import torch
from avalanche.benchmarks.utils.data_loader import (
    SingleDatasetDataLoader,
    collate_from_data_or_kwargs,
)
from avalanche.training.templates.strategy_mixin_protocol import (
    SupervisedStrategyProtocol,
)
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from .. import distributed

__all__ = ["DistributedMixin", "DistributedStrategyProtocol"]

AVALANCHE_PRIVATE = (
    "avalanche.training.templates.SupervisedTemplate._before_training_exp",
    "avalanche.training.templates.SupervisedTemplate._before_training_epoch",
    "avalanche.training.templates.SupervisedTemplate._after_training_exp",
    "avalanche.training.templates.SupervisedTemplate._obtain_common_dataloader_parameters",
)
"""The template hooks this mixin extends or calls (protected Avalanche names, checked by
``tests/test_avalanche_private.py``)."""


class DistributedStrategyProtocol(
    SupervisedStrategyProtocol[Any, Any, Tensor], Protocol
):
    """A supervised template as :class:`DistributedMixin` sees it."""

    train_mb_size: int
    eval_mb_size: int
    adapted_dataset: Any
    clock: Any
    is_training: bool

    if TYPE_CHECKING:

        def _obtain_common_dataloader_parameters(self, **kwargs: Any) -> dict: ...

        # callables rather than methods: the mixin calls them through
        # super(), which mypy refuses for a protocol method's empty body
        _before_training_exp: Callable[..., None]
        _before_training_epoch: Callable[..., None]
        _after_training_exp: Callable[..., None]


class DistributedMixin(DistributedStrategyProtocol):
    """In a process group (``torchrun``, see :mod:`bdr_avalanche.distributed`)
    the model trains wrapped in ``DistributedDataParallel``, rebuilt at
    every experience after the head has grown; ``train_mb_size`` is the
    global batch, each process loading its shard (one permutation drawn
    from rank 0's seed); at the end of an experience rank 0's weights and
    BatchNorm statistics go to every process; evaluation covers the whole
    stream in every process. In one process it changes nothing but the
    training loader: a shuffled ``DataLoader`` over the adapted dataset.

    Mix it in before the template (and before
    :class:`~bdr_avalanche.training.FastInputMixin`, whose device loader
    it shards through :meth:`input_shard`).
    """

    dataloader: Iterable[Any]
    """The template's loader of the current experience."""

    def __init__(self, **kwargs) -> None:
        self._ddp: DistributedDataParallel | None = None
        super().__init__(**kwargs)

    def _before_training_exp(self, **kwargs):
        super()._before_training_exp(**kwargs)
        # after the head has grown: DDP registers the current parameters
        self._ddp = None
        if distributed.is_distributed():
            self._ddp = DistributedDataParallel(
                self.model,
                device_ids=[self.device] if self.device.type == "cuda" else None,
                broadcast_buffers=False,
            )

    def _before_training_epoch(self, **kwargs):
        sampler = getattr(self.dataloader, "sampler", None)
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(self.clock.train_exp_epochs)
        super()._before_training_epoch(**kwargs)

    def _after_training_exp(self, **kwargs):
        # Each process updated BatchNorm's statistics on its own shard:
        # take rank 0's everywhere before the plugins (a memory's
        # selection, a copy of the previous model) see the model.
        self._ddp = None
        distributed.broadcast_module(self.model)
        super()._after_training_exp(**kwargs)

    def forward(self):
        """The wrapped model's output while training distributed (under
        the template's ``autocast`` when it has one, in float32), else the
        template's forward."""
        if self._ddp is None or not self.is_training:
            return super().forward()
        autocast = getattr(self, "autocast", contextlib.nullcontext)
        with autocast():
            return self._ddp(self.mb_x).float()

    def input_shard(self) -> tuple[int, int, int]:
        """``(train_mb_size / world_size, world_size, rank)``: this
        process's share of the global batch."""
        batch_size = distributed.shard_size(self.train_mb_size)
        return batch_size, distributed.world_size(), distributed.rank()

    def make_train_dataloader(
        self,
        num_workers: int = 0,
        shuffle: bool = True,
        pin_memory: bool | None = None,
        persistent_workers: bool = False,
        drop_last: bool = False,
        **kwargs,
    ):
        """A shuffled loader of this process's shard in batches of
        ``train_mb_size / world_size``; the fast input path's device loader
        when the template has a ``batch_augment``."""
        batch_size, world, rank = self.input_shard()
        if getattr(self, "batch_augment", None) is not None:
            super().make_train_dataloader(shuffle=shuffle, drop_last=drop_last)
            return
        args = self._obtain_common_dataloader_parameters(
            batch_size=batch_size,
            num_workers=num_workers,
            shuffle=shuffle,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
            drop_last=drop_last,
        )
        if world > 1:
            # rank 0's seed on every process: one permutation, disjoint
            # shards (and no number drawn from the global generators)
            seed = torch.initial_seed() + self.clock.train_exp_counter
            seed = distributed.broadcast_object(seed % 2**63)
            args["sampler"] = DistributedSampler(
                self.adapted_dataset,
                world,
                rank,
                shuffle=args.pop("shuffle"),
                seed=seed,
            )
        collate_from_data_or_kwargs(self.adapted_dataset, args)
        self.dataloader = DataLoader(self.adapted_dataset, **args)

    def make_eval_dataloader(
        self,
        num_workers: int = 0,
        shuffle: bool = False,
        pin_memory: bool | None = None,
        persistent_workers: bool = False,
        **kwargs,
    ):
        """Avalanche's evaluation loader, over the *whole* dataset in every
        process: Avalanche would give each process a shard, and its metrics
        would then describe rank 0's shard only."""
        args = self._obtain_common_dataloader_parameters(
            batch_size=self.eval_mb_size,
            num_workers=num_workers,
            shuffle=shuffle,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
        )
        collate_from_data_or_kwargs(self.adapted_dataset, args)
        self.dataloader = SingleDatasetDataLoader(
            self.adapted_dataset, distributed_sampling=False, **args
        )
