"""The LUCIR training protocol as an Avalanche strategy, with CwD and BDR."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

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
from .fast_input import DeviceBatchLoader
from .hparams import HParam, document_hparams, renamed
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

_PLUGIN_HPARAMS: dict[type, tuple[str, dict[str, str]]] = {
    LUCIRPlugin: (
        "LUCIR: ",
        {n: n for n in ("lambda_base", "margin", "k", "mr_weight")},
    ),
    CwDPlugin: ("CwD: ", {"cwd_coef": "coef", "reject_threshold": "reject_threshold"}),
    BDRPlugin: (
        "BDR: ",
        {"m1": "m1", "m2": "m2", "bdr_momentum": "momentum", "tau": "tau"},
    ),
}
"""Per plugin: the prefix of its help texts and its hyper-parameters under
the strategy's argument names (strategy's name -> plugin's name)."""

_HPARAMS: dict[str, HParam] = {
    "lr": HParam(
        0.1,
        "SGD learning rate at the start of each experience (in the first one, "
        "first_lr replaces it when set)",
        "positive",
    ),
    "momentum": HParam(0.9, "SGD momentum", "fraction"),
    "weight_decay": HParam(5e-4, "SGD weight decay", "non_negative"),
    "milestones": HParam(
        (80, 120),
        "epochs at which the learning rate is multiplied by lr_decay (the "
        "schedule restarts with every experience)",
        "milestones",
    ),
    "lr_decay": HParam(
        0.1, "factor of the learning rate at each milestone", "positive"
    ),
    "first_lr": HParam(
        None, "learning rate of the first experience (default: lr)", "positive"
    ),
    "first_train_mb_size": HParam(
        None,
        "training mini-batch size of the first experience (default: the one "
        "of the other experiences)",
        "positive_int",
    ),
    "mem_per_class": HParam(
        20, "exemplars kept for every seen class, chosen by herding", "positive_int"
    ),
    "train_mb_size": HParam(
        128,
        "training mini-batch size (distributed: of all processes together)",
        "positive_int",
    ),
    "train_epochs": HParam(160, "training epochs per experience", "positive_int"),
    "eval_mb_size": HParam(256, "evaluation mini-batch size", "positive_int"),
}
for _plugin, (_prefix, _names) in _PLUGIN_HPARAMS.items():
    _HPARAMS.update(renamed(_plugin.HPARAMS, _names, _prefix))


def _plugin_args(plugin: type, given: Mapping[str, Any]) -> dict[str, Any]:
    """``plugin``'s hyper-parameters, by its names, from the strategy's."""
    return {own: given[ours] for ours, own in _PLUGIN_HPARAMS[plugin][1].items()}


@document_hparams
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
    Defaults are the paper's CIFAR-100 hyper-parameters; the plugins'
    hyper-parameters are checked even when their method is off.
    """

    HPARAMS: ClassVar[Mapping[str, HParam]] = _HPARAMS
    """The hyper-parameters: default, help text and range; those of the
    plugins under the strategy's argument names (``cwd_coef`` is
    :class:`~bdr_avalanche.CwDPlugin`'s ``coef``, ``bdr_momentum`` is
    :class:`~bdr_avalanche.BDRPlugin`'s ``momentum``)."""

    def __init__(
        self,
        *,
        backbone: nn.Module,
        lr: float = HPARAMS["lr"].default,
        momentum: float = HPARAMS["momentum"].default,
        weight_decay: float = HPARAMS["weight_decay"].default,
        milestones: Sequence[int] = HPARAMS["milestones"].default,
        lr_decay: float = HPARAMS["lr_decay"].default,
        first_lr: float | None = HPARAMS["first_lr"].default,
        first_train_mb_size: int | None = HPARAMS["first_train_mb_size"].default,
        mem_per_class: int = HPARAMS["mem_per_class"].default,
        lambda_base: float = HPARAMS["lambda_base"].default,
        margin: float = HPARAMS["margin"].default,
        k: int = HPARAMS["k"].default,
        mr_weight: float = HPARAMS["mr_weight"].default,
        cwd: bool = False,
        cwd_coef: float = HPARAMS["cwd_coef"].default,
        reject_threshold: int = HPARAMS["reject_threshold"].default,
        bdr: bool = False,
        m1: float = HPARAMS["m1"].default,
        m2: float = HPARAMS["m2"].default,
        bdr_momentum: float = HPARAMS["bdr_momentum"].default,
        tau: float = HPARAMS["tau"].default,
        train_mb_size: int = HPARAMS["train_mb_size"].default,
        train_epochs: int = HPARAMS["train_epochs"].default,
        eval_mb_size: int = HPARAMS["eval_mb_size"].default,
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
        hp = self.HPARAMS
        self.lr = hp["lr"].check("lr", lr)
        first_lr = hp["first_lr"].check("first_lr", first_lr)
        self.first_lr = self.lr if first_lr is None else first_lr
        self.sgd_momentum = hp["momentum"].check("momentum", momentum)
        self.weight_decay = hp["weight_decay"].check("weight_decay", weight_decay)
        self.milestones = hp["milestones"].check("milestones", milestones)
        self.lr_decay = hp["lr_decay"].check("lr_decay", lr_decay)
        self.base_train_mb_size = hp["train_mb_size"].check(
            "train_mb_size", train_mb_size
        )
        first_train_mb_size = hp["first_train_mb_size"].check(
            "first_train_mb_size", first_train_mb_size
        )
        self.first_train_mb_size = (
            self.base_train_mb_size
            if first_train_mb_size is None
            else first_train_mb_size
        )
        train_epochs = hp["train_epochs"].check("train_epochs", train_epochs)
        eval_mb_size = hp["eval_mb_size"].check("eval_mb_size", eval_mb_size)
        mem_per_class = hp["mem_per_class"].check("mem_per_class", mem_per_class)
        if not hasattr(backbone, "last_relu"):
            raise ValueError(
                "LUCIR removes the backbone's last ReLU: the backbone must have a "
                "`last_relu` attribute (see bdr_avalanche.models)"
            )
        # Checked here under the strategy's names, not only by the plugins,
        # so that a bad value is reported even when its method is off.
        given = {
            "lambda_base": lambda_base,
            "margin": margin,
            "k": k,
            "mr_weight": mr_weight,
            "cwd_coef": cwd_coef,
            "reject_threshold": reject_threshold,
            "m1": m1,
            "m2": m2,
            "bdr_momentum": bdr_momentum,
            "tau": tau,
        }
        for name, value in given.items():
            hp[name].check(name, value)
        self.storage_policy = HerdingBuffer(mem_per_class)
        self.lucir = LUCIRPlugin(**_plugin_args(LUCIRPlugin, given))
        self.cwd = CwDPlugin(**_plugin_args(CwDPlugin, given)) if cwd else None
        self.bdr = BDRPlugin(**_plugin_args(BDRPlugin, given)) if bdr else None

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
            train_epochs=train_epochs,
            eval_mb_size=eval_mb_size,
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
