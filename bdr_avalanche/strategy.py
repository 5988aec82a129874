"""The LUCIR training protocol as an Avalanche strategy, with CwD and BDR."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from avalanche.benchmarks.utils.data_loader import (
    SingleDatasetDataLoader,
    collate_from_data_or_kwargs,
)
from avalanche.core import BasePlugin
from avalanche.models.dynamic_modules import avalanche_model_adaptation
from avalanche.training.plugins.evaluation import EvaluationPlugin, default_evaluator
from avalanche.training.templates import SupervisedTemplate
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import SGD
from torch.optim.lr_scheduler import MultiStepLR
from torch.utils.data import DataLoader, DistributedSampler

from . import distributed
from ._utils import (
    check_fraction,
    check_non_negative,
    check_positive,
    check_positive_int,
)
from .fast_input import DeviceBatchLoader
from .models import CosineIncrementalNet
from .plugins import (
    BDRPlugin,
    ConcatReplayPlugin,
    CwDPlugin,
    FiniteLossGuard,
    LUCIRPlugin,
)
from .storage import HerdingBuffer

__all__ = ["LUCIR"]


class LUCIR(SupervisedTemplate):
    """Class-incremental training as in LUCIR and the BDR paper.

    - The ``backbone`` (which must expose ``out_dim`` and ``last_relu``) has
      its last ReLU removed and gets a
      :class:`~bdr_avalanche.models.CosineIncrementalClassifier`: one block
      of rows per experience, a shared learnable scale, old rows frozen.
    - A :class:`~bdr_avalanche.HerdingBuffer` of ``mem_per_class`` exemplars
      per class is concatenated to each experience's data and shuffled with
      it (:class:`~bdr_avalanche.ConcatReplayPlugin`).
    - Each experience gets a fresh SGD optimizer and a ``MultiStepLR``
      schedule; the first experience may use its own learning rate
      (``first_lr``) and batch size (``first_train_mb_size``).
    - :class:`~bdr_avalanche.LUCIRPlugin` adds the less-forget and margin
      ranking losses; ``cwd=True`` adds :class:`~bdr_avalanche.CwDPlugin`
      and ``bdr=True`` adds :class:`~bdr_avalanche.BDRPlugin`. The plugin
      instances are attributes (``lucir``, ``cwd``, ``bdr``,
      ``storage_policy``); extra ``plugins`` run after them.
    - A :class:`~bdr_avalanche.plugins.FiniteLossGuard` stops training with
      an error naming the term and the experience when a loss term becomes
      NaN or infinite (checked every ``finite_check_every`` iterations).
    - :meth:`state_dict` and :meth:`load_state_dict` save and restore
      everything that carries over from one experience to the next.
    - In a process group (``torchrun``, see :mod:`bdr_avalanche.distributed`)
      the model trains wrapped in ``DistributedDataParallel``, rebuilt
      after the head grows; ``train_mb_size`` is the global batch, each
      process loading its shard; evaluation covers the whole stream in
      every process.
    - Speed switches: ``batch_augment`` (a
      :class:`~bdr_avalanche.augment.BatchAugment`) keeps each experience's
      images on the device and augments whole batches there
      (:class:`~bdr_avalanche.fast_input.DeviceBatchLoader`) instead of
      using the dataset's transforms in a ``DataLoader``; ``amp_dtype``
      (e.g. ``torch.bfloat16``) runs the forward passes, the frozen
      previous model's included, under autocast; ``channels_last`` stores
      the model and the batches in that memory format;
      ``compile_backbone`` compiles the backbone with ``torch.compile``.

    The benchmark's class ids must be contiguous in order of arrival
    (``class_ids_from_zero_from_first_exp=True`` in Avalanche's generators).
    Defaults are the paper's CIFAR-100 hyper-parameters.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        milestones: Sequence[int] = (80, 120),
        lr_decay: float = 0.1,
        first_lr: float | None = None,
        first_train_mb_size: int | None = None,
        mem_per_class: int = 20,
        lambda_base: float = 5.0,
        margin: float = 0.5,
        k: int = 2,
        mr_weight: float = 1.0,
        cwd: bool = False,
        cwd_coef: float = 0.5,
        reject_threshold: int = 1,
        bdr: bool = False,
        m1: float = 0.8,
        m2: float = 0.8,
        bdr_momentum: float = 0.99,
        tau: float = 1.0,
        train_mb_size: int = 128,
        train_epochs: int = 160,
        eval_mb_size: int = 256,
        device: str | torch.device | None = None,
        plugins: Sequence[BasePlugin] | None = None,
        evaluator: EvaluationPlugin | None = None,
        eval_every: int = -1,
        finite_check_every: int = 20,
        batch_augment: nn.Module | None = None,
        amp_dtype: torch.dtype | None = None,
        channels_last: bool = False,
        compile_backbone: bool = False,
    ) -> None:
        self.lr = check_positive("lr", lr)
        self.first_lr = (
            self.lr if first_lr is None else check_positive("first_lr", first_lr)
        )
        self.sgd_momentum = check_fraction("momentum", momentum)
        self.weight_decay = check_non_negative("weight_decay", weight_decay)
        self.milestones = [check_positive_int("milestones", int(m)) for m in milestones]
        self.lr_decay = check_positive("lr_decay", lr_decay)
        self.base_train_mb_size = check_positive_int("train_mb_size", train_mb_size)
        self.first_train_mb_size = (
            self.base_train_mb_size
            if first_train_mb_size is None
            else check_positive_int("first_train_mb_size", first_train_mb_size)
        )
        if not hasattr(backbone, "last_relu"):
            raise ValueError(
                "LUCIR removes the backbone's last ReLU: the backbone must have a "
                "`last_relu` attribute (see bdr_avalanche.models)"
            )
        # Checked here, not only by the plugins, so that a bad value is
        # reported even when its method is switched off.
        check_non_negative("cwd_coef", cwd_coef)
        check_positive_int("reject_threshold", reject_threshold)
        for name, value in (("m1", m1), ("m2", m2), ("bdr_momentum", bdr_momentum)):
            check_fraction(name, value)
        check_positive("tau", tau)
        self.storage_policy = HerdingBuffer(mem_per_class)
        self.lucir = LUCIRPlugin(lambda_base, margin, k, mr_weight)
        self.cwd = CwDPlugin(cwd_coef, reject_threshold) if cwd else None
        self.bdr = BDRPlugin(m1, m2, bdr_momentum, tau) if bdr else None

        backbone.last_relu = False
        model = CosineIncrementalNet(backbone)
        self.batch_augment = batch_augment
        if amp_dtype is not None and not amp_dtype.is_floating_point:
            raise ValueError(
                f"amp_dtype must be a floating-point dtype, got {amp_dtype}"
            )
        self.amp_dtype = amp_dtype
        self.memory_format = (
            torch.channels_last if channels_last else torch.contiguous_format
        )
        model.to(memory_format=self.memory_format)
        if compile_backbone:
            backbone.compile()
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        own: list[BasePlugin] = [ConcatReplayPlugin(self.storage_policy), self.lucir]
        own += [p for p in (self.cwd, self.bdr) if p is not None]
        own.append(FiniteLossGuard(finite_check_every))
        self.scheduler: MultiStepLR | None = None
        self._ddp: DistributedDataParallel | None = None
        self._classification_loss: Tensor | None = None

        super().__init__(
            model=model,
            optimizer=SGD(model.parameters(), lr=self.lr),
            criterion=nn.CrossEntropyLoss(),
            train_mb_size=self.base_train_mb_size,
            train_epochs=check_positive_int("train_epochs", train_epochs),
            eval_mb_size=check_positive_int("eval_mb_size", eval_mb_size),
            device=device,
            plugins=own + list(plugins or []),
            evaluator=evaluator if evaluator is not None else default_evaluator(),
            eval_every=eval_every,
        )

    def state_dict(self) -> dict[str, Any]:
        """What training needs to go on after the last finished experience:
        the model (with its grown head), the herding memory, LUCIR's frozen
        previous model, BDR's statistics and the strategy's clock.

        The optimizer and its schedule are not included: every experience
        builds fresh ones (:meth:`make_optimizer`), so at an experience
        boundary they carry nothing. Take the state between experiences
        (e.g. after ``train``/``eval``); the result holds only tensors and
        plain Python values, so ``torch.load(..., weights_only=True)`` reads
        it back.
        """
        return {
            "model": self.model.state_dict(),
            "clock": {k: v for k, v in vars(self.clock).items() if type(v) is int},
            "memory": self.storage_policy.state_dict(),
            "lucir": self.lucir.state_dict(),
            "bdr": None if self.bdr is None else self.bdr.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], train_stream: Sequence) -> None:
        """Restore a :meth:`state_dict` taken after experience
        ``clock.train_exp_counter - 1`` of ``train_stream``.

        The model is first grown by adapting it to the experiences already
        seen (which restores the head's blocks and which of them are
        frozen), then receives the saved weights; the memory's exemplars are
        taken again from ``train_stream``.
        """
        seen = int(state["clock"]["train_exp_counter"])
        if not 0 < seen <= len(train_stream):
            raise ValueError(
                f"the state was taken after {seen} experiences; the stream has "
                f"{len(train_stream)}"
            )
        self.model.train()
        for experience in train_stream[:seen]:
            avalanche_model_adaptation(self.model, experience)
        self.model.to(self.device)
        self.model.load_state_dict(state["model"])
        for key, value in state["clock"].items():
            setattr(self.clock, key, value)
        self.storage_policy.load_state_dict(state["memory"], train_stream)
        self.lucir.load_state_dict(state["lucir"], self.model)
        if self.bdr is not None and state["bdr"] is not None:
            self.bdr.load_state_dict(state["bdr"], self.device)

    @property
    def _first_experience(self) -> bool:
        return self.clock.train_exp_counter == 0

    def _before_training_exp(self, **kwargs):
        self.train_mb_size = (
            self.first_train_mb_size
            if self._first_experience
            else self.base_train_mb_size
        )
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
        # take rank 0's everywhere before the memory is selected and the
        # previous model copied.
        self._ddp = None
        distributed.broadcast_module(self.model)
        super()._after_training_exp(**kwargs)

    def make_train_dataloader(
        self,
        num_workers: int = 0,
        shuffle: bool = True,
        pin_memory: bool | None = None,
        persistent_workers: bool = False,
        drop_last: bool = False,
        **kwargs,
    ):
        """One shuffled loader over new data and memory together: a
        :class:`~bdr_avalanche.fast_input.DeviceBatchLoader` when the
        strategy has a ``batch_augment``, else a ``DataLoader``.

        Distributed, ``train_mb_size`` is the global batch: each process
        loads its shard in batches of ``train_mb_size / world_size``.
        """
        world, rank = distributed.world_size(), distributed.rank()
        batch_size = distributed.shard_size(self.train_mb_size)
        if self.batch_augment is not None:
            self.dataloader = DeviceBatchLoader.from_dataset(
                self.adapted_dataset,
                batch_size,
                self.batch_augment,
                self.device,
                shuffle=shuffle,
                drop_last=drop_last,
                memory_format=self.memory_format,
                num_replicas=world,
                rank=rank,
            )
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

    def autocast(self) -> torch.autocast:
        """The mixed-precision context of the forward passes (disabled
        without ``amp_dtype``)."""
        return torch.autocast(
            self.device.type,
            dtype=self.amp_dtype or torch.bfloat16,
            enabled=self.amp_dtype is not None,
        )

    def forward(self):
        """The model's logits, computed under :meth:`autocast` and returned
        in float32 (the losses are computed in float32)."""
        with self.autocast():
            if self._ddp is not None and self.is_training:
                output = self._ddp(self.mb_x)
            else:
                output = super().forward()
        return output.float()

    def make_optimizer(self, **kwargs):
        """A fresh SGD over the trainable parameters, and its schedule."""
        lr = self.first_lr if self._first_experience else self.lr
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = SGD(
            params, lr=lr, momentum=self.sgd_momentum, weight_decay=self.weight_decay
        )
        self.scheduler = MultiStepLR(self.optimizer, self.milestones, self.lr_decay)

    def criterion(self):
        if not self.is_training and self.mb_y.max() >= self.mb_output.shape[1]:
            raise ValueError(
                f"LUCIR has learned {self.mb_output.shape[1]} classes and cannot be "
                "evaluated on classes it has not seen yet: evaluate on the seen part "
                "of the test stream, e.g. test_stream[: t + 1] after experience t "
                "(bdr_avalanche.protocol.train_and_evaluate does this)"
            )
        loss = super().criterion()
        if self.is_training:
            self._classification_loss = loss.detach()
        return loss

    def loss_terms(self) -> dict[str, Tensor]:
        """The current step's loss terms, by name (for
        :class:`~bdr_avalanche.plugins.FiniteLossGuard`): the classification
        loss (with BDR's prior when active), the terms the LUCIR and CwD
        plugins added and BDR's prior itself."""
        terms = {}
        if self._classification_loss is not None:
            terms["classification"] = self._classification_loss
        if self.lucir.old_model is not None:
            terms.update(self.lucir.last_losses)
        if self.cwd is not None and self.cwd.active and self.cwd.last_loss is not None:
            terms["cwd"] = self.cwd.last_loss
        if self.bdr is not None and self.bdr.prior is not None:
            terms["bdr_prior"] = self.bdr.prior
        return terms

    def _after_training_epoch(self, **kwargs):
        if self.scheduler is not None:
            self.scheduler.step()
        super()._after_training_epoch(**kwargs)
