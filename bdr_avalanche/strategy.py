"""The LUCIR training protocol as an Avalanche strategy, with CwD and BDR."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from avalanche.benchmarks.utils.classification_dataset import (
    _taskaware_classification_subset,
)
from avalanche.benchmarks.utils.data_loader import (
    SingleDatasetDataLoader,
    collate_from_data_or_kwargs,
)
from avalanche.core import BasePlugin
from avalanche.models.dynamic_modules import avalanche_model_adaptation
from avalanche.training.plugins import LRSchedulerPlugin
from avalanche.training.plugins.evaluation import EvaluationPlugin, default_evaluator
from avalanche.training.templates import SupervisedTemplate
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import SGD, Optimizer
from torch.optim.lr_scheduler import MultiStepLR
from torch.utils.data import DataLoader, DistributedSampler

from . import distributed
from .hparam_tables import LUCIR_HPARAMS, STRATEGY_PLUGINS
from .hparams import HParam, document_hparams
from .models import CosineIncrementalNet, remove_last_relu
from .models.cosine import experience_classes
from .plugins import (
    BDRPlugin,
    ConcatReplayPlugin,
    CwDPlugin,
    FiniteLossGuard,
    LUCIRPlugin,
)
from .storage import HerdingBuffer
from .training.speed import SpeedMixin

__all__ = ["LUCIR", "RelabelledExperience", "RelabelledStream"]

OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]
"""Builds an optimizer over the given parameters, e.g.
``functools.partial(torch.optim.Adam, lr=1e-3)``."""


def _plugin_args(plugin: type, given: Mapping[str, Any]) -> dict[str, Any]:
    """``plugin``'s hyper-parameters, by its names, from the strategy's."""
    names = STRATEGY_PLUGINS[plugin.__name__].names
    return {own: given[ours] for ours, own in names.items()}


class RelabelledExperience:
    """An experience whose class ids are those a strategy's model uses.

    ``classes_in_this_experience``, ``dataset`` (relabelled when first
    read) and ``origin_stream`` (a :class:`RelabelledStream`) carry the new
    ids; every other attribute (``current_experience``, ``task_labels``,
    ...) is the original experience's, so Avalanche's metrics name it as
    they name the original. With a mapping that changes no id it only adds
    ``classes_in_this_experience`` to an experience that lists none (one of
    ``benchmark_from_datasets``); its dataset is then the original one.

    :param experience: the original experience (also :attr:`original`).
    :param mapping: original class id -> new id, for every class of the
        experience.
    :param relabel: gives an experience of the same stream with the new
        ids (for :attr:`origin_stream`).
    """

    def __init__(
        self,
        experience,
        mapping: Mapping[int, int],
        relabel: Callable[[Any], Any],
    ) -> None:
        self.original = experience
        self.mapping = dict(mapping)
        self.classes_in_this_experience = sorted(
            self.mapping[c] for c in experience_classes(experience)
        )
        self._relabel = relabel
        self._dataset = None

    @property
    def dataset(self):
        if all(old == new for old, new in self.mapping.items()):
            return self.original.dataset
        if self._dataset is None:
            table = [-1] * (max(self.mapping) + 1)
            for old, new in self.mapping.items():
                table[old] = new
            self._dataset = _taskaware_classification_subset(
                self.original.dataset, class_mapping=table
            )
        return self._dataset

    @property
    def origin_stream(self) -> RelabelledStream:
        return RelabelledStream(self.original.origin_stream, self._relabel)

    def __getattr__(self, name: str) -> Any:
        if name == "original":  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.original, name)


class RelabelledStream:
    """A stream whose experiences are relabelled by ``relabel``; its other
    attributes (``name``, ...) are the original stream's."""

    def __init__(self, stream, relabel: Callable[[Any], Any]) -> None:
        self.original = stream
        self._relabel = relabel

    def __len__(self) -> int:
        return len(self.original)

    def __iter__(self):
        return (self._relabel(experience) for experience in self.original)

    def __getitem__(self, index):
        item = self.original[index]
        if isinstance(index, slice):
            return RelabelledStream(item, self._relabel)
        return self._relabel(item)

    def __getattr__(self, name: str) -> Any:
        if name == "original":
            raise AttributeError(name)
        return getattr(self.original, name)


def _layout_hint(experience) -> str:
    """What to change in the benchmark when its experiences reuse ids."""
    try:
        benchmark = experience.benchmark
    except Exception:  # not an NCExperience, or no benchmark set
        return ""
    if getattr(benchmark, "class_ids_from_zero_in_each_exp", False):
        return (
            " The benchmark was built with class_ids_from_zero_in_each_exp=True, "
            "which gives every experience the ids 0..n-1: build it with "
            "class_ids_from_zero_from_first_exp=True instead, or with neither "
            "option (LUCIR relabels class ids in order of arrival)."
        )
    return ""


@document_hparams
class LUCIR(SpeedMixin, SupervisedTemplate):
    """Class-incremental training as in LUCIR and the BDR paper.

    - The ``backbone`` has its last ReLU removed (see
      :func:`~bdr_avalanche.models.remove_last_relu`: a ``last_relu``
      attribute, torchvision's ResNets, Avalanche's ``SlimResNet18``, an
      ``nn.Sequential``; for any other architecture a warning says that a
      final ReLU, if any, was kept) and gets a
      :class:`~bdr_avalanche.models.CosineIncrementalClassifier`: one block
      of rows per experience, a shared learnable scale, old rows frozen.
      torchvision's and Avalanche's ResNets lose their classifier (``fc``,
      ``linear``); the feature dimension is ``feature_dim``, else the
      backbone's ``out_dim``, else that classifier's input size.
    - A :class:`~bdr_avalanche.HerdingBuffer` of ``mem_per_class`` exemplars
      per class is concatenated to each experience's data and shuffled with
      it (:class:`~bdr_avalanche.ConcatReplayPlugin`).
    - Each experience starts with a fresh optimizer: ``strategy.optimizer``
      (one object for the strategy's life, SGD by default) is reset at the
      start of every experience (state cleared, parameters = the model's
      trainable ones, learning rate back to its initial value), followed by
      a ``MultiStepLR`` schedule (``milestones``, ``lr_decay``) that
      restarts with every experience. ``optimizer`` replaces the SGD: an
      optimizer (as for other Avalanche strategies; its parameters are
      replaced) or a factory called with the model's parameters, e.g.
      ``functools.partial(Adam, lr=1e-3)``; then ``lr``, ``momentum`` and
      ``weight_decay`` must be left out. An Avalanche ``LRSchedulerPlugin``
      among the plugins replaces the ``MultiStepLR``; its scheduler must be
      built on ``strategy.optimizer`` (or on the ``optimizer`` passed).
      The first experience may use its own learning rate (``first_lr``)
      and batch size (``first_train_mb_size``).
    - :class:`~bdr_avalanche.LUCIRPlugin` adds the less-forget and margin
      ranking losses; ``cwd=True`` adds :class:`~bdr_avalanche.CwDPlugin`
      and ``bdr=True`` adds :class:`~bdr_avalanche.BDRPlugin`. The plugin
      instances are attributes (``lucir``, ``cwd``, ``bdr``,
      ``storage_policy``); extra ``plugins`` run after them.
    - A :class:`~bdr_avalanche.plugins.FiniteLossGuard` stops training with
      an error naming the term and the experience when a loss term becomes
      NaN or infinite, or naming the value and the experience when the
      head's learnable scale (left free, as in the paper's code) falls to
      zero or below, where accuracy drops to chance or under (checked
      every ``finite_check_every`` iterations and at the end of every
      epoch).
    - :meth:`state_dict` and :meth:`load_state_dict` save and restore
      everything that carries over from one experience to the next.
    - In a process group (``torchrun``, see :mod:`bdr_avalanche.distributed`)
      the model trains wrapped in ``DistributedDataParallel``, rebuilt
      after the head grows; ``train_mb_size`` is the global batch, each
      process loading its shard; evaluation covers the whole stream in
      every process.
    - Speed switches (:class:`~bdr_avalanche.training.SpeedMixin`, which
      Avalanche's baselines take too): ``batch_augment`` (a
      :class:`~bdr_avalanche.training.augment.BatchAugment`) keeps each experience's
      images on the device and augments whole batches there
      (:class:`~bdr_avalanche.training.FastInputMixin`) instead of
      using the dataset's transforms in a ``DataLoader``; ``amp_dtype``
      (e.g. ``torch.bfloat16``) runs the forward passes, the frozen
      previous model's included, under autocast
      (:class:`~bdr_avalanche.training.AutocastMixin`); ``channels_last``
      stores the model and the batches in that memory format;
      ``compile_backbone`` compiles the backbone with ``torch.compile``.

    Avalanche's conventions hold: ``strategy.eval(test_stream)`` works at
    any time, with accuracy 0 on the classes not learned yet (their logits
    are masked, as Avalanche's ``IncrementalClassifier`` does), so
    ``EvaluationPlugin``'s accuracy and forgetting are the standard ones,
    and periodic evaluation (``eval_every``, ``peval_mode``,
    ``train(..., eval_streams=...)``) and ``EarlyStoppingPlugin`` work.

    Class ids: LUCIR (its model, memory and plugins) numbers classes in
    order of arrival, ``0..K-1``. A benchmark built that way
    (``class_ids_from_zero_from_first_exp=True``, or the benchmarks of
    :mod:`bdr_avalanche.benchmarks`) is used as it is. With any other ids
    (Avalanche's defaults, ``class_incremental_benchmark``), each
    experience is relabelled on the fly (:meth:`relabelled`): ``mb_y``, the
    model's logits and class-wise metrics then use the ids in order of
    arrival, :attr:`class_order` maps them back, and accuracy and
    forgetting are unchanged. Every training experience must bring classes
    not learned before; a stream that reuses ids (e.g.
    ``class_ids_from_zero_in_each_exp=True``) is refused before training.
    An experience's classes are its ``classes_in_this_experience``, else,
    for experiences that list none (``benchmark_from_datasets``), the
    distinct labels of its dataset's targets; the new classes of an
    experience arrive in increasing order of their ids either way. An
    experience with neither is refused before training (Avalanche's
    ``with_classes_timeline`` adds the lists to a benchmark).

    Defaults are the paper's CIFAR-100 hyper-parameters; the plugins'
    hyper-parameters are checked even when their method is off.

    :param backbone: the feature extractor (see above).
    :param feature_dim: the features' dimension (default: found from the
        backbone, see above).
    :param optimizer: the optimizer to use instead of the default SGD, or a
        factory of it (see above).
    :param criterion: the classification loss (default: cross-entropy).
    :param peval_mode: ``"epoch"`` or ``"iteration"``: the unit of
        ``eval_every``, as in Avalanche's strategies.
    """

    HPARAMS: ClassVar[Mapping[str, HParam]] = LUCIR_HPARAMS
    """The hyper-parameters: default, help text and range; those of the
    plugins under the strategy's argument names (``cwd_coef`` is
    :class:`~bdr_avalanche.CwDPlugin`'s ``coef``, ``bdr_momentum`` is
    :class:`~bdr_avalanche.BDRPlugin`'s ``momentum``)."""

    def __init__(
        self,
        *,
        backbone: nn.Module,
        feature_dim: int | None = None,
        optimizer: Optimizer | OptimizerFactory | None = None,
        criterion: Callable[[Tensor, Tensor], Tensor] | None = None,
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
        peval_mode: str = "epoch",
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
        if optimizer is not None:
            changed = [
                name
                for name, value in (
                    ("lr", lr),
                    ("momentum", momentum),
                    ("weight_decay", weight_decay),
                )
                if value != hp[name].default
            ]
            if changed:
                raise ValueError(
                    f"{', '.join(changed)} set the default SGD, which optimizer= "
                    "replaces: set them on the optimizer (or its factory) instead"
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

        model = CosineIncrementalNet(backbone, feature_dim, mask_unseen=False)
        if not remove_last_relu(backbone):
            warnings.warn(
                f"LUCIR removes the backbone's last ReLU, but does not know where "
                f"{type(backbone).__name__} has one: any final ReLU was kept, so "
                "its features may be non-negative. Give it a `last_relu` "
                "attribute (see bdr_avalanche.models) or end it without a ReLU.",
                stacklevel=2,
            )
        self.class_order: list[int] = []
        """The original class id of each class LUCIR has learned, in order
        of arrival: LUCIR's class ``i`` (its logit ``i``) is the
        benchmark's ``class_order[i]``."""
        self._class_index: dict[int, int] = {}
        self._planned_order: list[int] = []
        self._eval_width = 0
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
        opt = self._build_optimizer(optimizer, model)
        group = opt.param_groups[0]
        self._param_group = {
            k: v for k, v in group.items() if k not in ("params", "initial_lr")
        }
        if optimizer is not None:
            self.lr = float(group.get("initial_lr", group["lr"]))
            self.first_lr = self.lr if first_lr is None else first_lr

        super().__init__(
            model=model,
            optimizer=opt,
            criterion=nn.CrossEntropyLoss() if criterion is None else criterion,
            train_mb_size=self.base_train_mb_size,
            train_epochs=train_epochs,
            eval_mb_size=eval_mb_size,
            device=device,
            plugins=own + list(plugins or []),
            evaluator=evaluator if evaluator is not None else default_evaluator(),
            eval_every=eval_every,
            peval_mode=peval_mode,
            batch_augment=batch_augment,
            amp_dtype=amp_dtype,
            channels_last=channels_last,
        )
        self._check_lr_schedulers()

    def _build_optimizer(
        self, optimizer: Optimizer | OptimizerFactory | None, model: nn.Module
    ) -> Optimizer:
        if optimizer is None:
            opt = SGD(
                model.parameters(),
                lr=self.lr,
                momentum=self.sgd_momentum,
                weight_decay=self.weight_decay,
            )
        elif isinstance(optimizer, Optimizer):
            opt = optimizer
        elif callable(optimizer):
            opt = optimizer(model.parameters())
            if not isinstance(opt, Optimizer):
                raise TypeError(
                    "optimizer must build a torch.optim.Optimizer when called with "
                    f"the model's parameters; it returned {type(opt).__name__}"
                )
        else:
            raise TypeError(
                "optimizer must be a torch.optim.Optimizer or a callable that builds "
                f"one from parameters, got {type(optimizer).__name__}"
            )
        if len(opt.param_groups) != 1:
            raise ValueError(
                f"LUCIR resets the optimizer over the model's trainable parameters "
                f"at every experience and needs one parameter group; "
                f"{type(opt).__name__} has {len(opt.param_groups)}"
            )
        return opt

    def _check_lr_schedulers(self) -> list[LRSchedulerPlugin]:
        """The plugins that are ``LRSchedulerPlugin`` instances, checked."""
        found = [p for p in self.plugins if isinstance(p, LRSchedulerPlugin)]
        for plugin in found:
            if plugin.scheduler.optimizer is not self.optimizer:
                raise ValueError(
                    "the LRSchedulerPlugin's scheduler is built on an optimizer "
                    "LUCIR does not use: build it on strategy.optimizer (LUCIR keeps "
                    "that optimizer and resets it at every experience), or pass "
                    "your optimizer as LUCIR(optimizer=...)"
                )
        default = self.HPARAMS
        if found and (
            self.milestones != list(default["milestones"].default)
            or self.lr_decay != default["lr_decay"].default
        ):
            raise ValueError(
                "milestones and lr_decay set LUCIR's own MultiStepLR schedule, "
                "which the LRSchedulerPlugin replaces: leave them out"
            )
        return found

    def relabelled(self, experience):
        """``experience`` with the class ids LUCIR uses: ``i`` for
        ``class_order[i]``.

        The experience itself when these are its ids already and it lists
        them (``classes_in_this_experience``); else a
        :class:`RelabelledExperience`. A class not learned yet gets the id
        it will have if the training stream is learned in order (else an id
        no learned or planned class has); its logit is masked.
        """
        ids = experience_classes(experience)
        if not ids:
            return experience
        learned = len(self.class_order)
        future = [c for c in self._planned_order if c not in self._class_index]
        planned = {c: learned + i for i, c in enumerate(future)}
        base = learned + len(future)
        free = max(base, ids[-1] + 1)
        mapping = {}
        for c in ids:
            if c in self._class_index:
                mapping[c] = self._class_index[c]
            elif c in planned:
                mapping[c] = planned[c]
            elif c >= base:  # above every learned and planned id
                mapping[c] = c
            else:
                mapping[c], free = free, free + 1
        if all(mapping[c] == c for c in ids) and hasattr(
            experience, "classes_in_this_experience"
        ):
            return experience
        return RelabelledExperience(experience, mapping, self.relabelled)

    def _learn_classes(self, experience) -> None:
        """Give the experience's new classes their ids, in order of arrival;
        refuse an experience (or, at the first one, a stream) that brings
        no new class."""
        if not self._class_index:
            self._planned_order = self._plan(experience)
        known = set(self._class_index)
        new = [c for c in experience_classes(experience) if c not in known]
        if not new:
            raise ValueError(self._no_new_class(experience))
        for c in new:
            self._class_index[c] = len(self.class_order)
            self.class_order.append(c)

    def _plan(self, experience) -> list[int]:
        """The classes of ``experience``'s stream in order of arrival (new
        classes of each experience sorted); refuses a stream in which an
        experience brings no new class. Empty when the stream does not
        tell."""
        try:
            stream = list(experience.origin_stream)
        except Exception:  # no stream, or one that cannot be listed
            return []
        order: list[int] = []
        seen: set[int] = set()
        for other in stream:
            try:
                ids = experience_classes(other)
            except ValueError:  # neither listed nor in targets
                return []
            new = sorted(set(ids) - seen)
            if not new:
                raise ValueError(self._no_new_class(other))
            order += new
            seen.update(new)
        return order

    @staticmethod
    def _no_new_class(experience) -> str:
        where = f"experience {getattr(experience, 'current_experience', '?')}"
        stream = getattr(getattr(experience, "origin_stream", None), "name", None)
        if stream is not None:
            where += f" of the {stream!r} stream"
        return (
            "LUCIR is class-incremental: every training experience must bring "
            f"classes it has not learned yet, but {where} has only classes "
            f"{experience_classes(experience)}, which come before it."
            f"{_layout_hint(experience)}"
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
            "class_order": list(self.class_order),
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
        self.class_order, self._class_index, self._planned_order = [], {}, []
        for experience in train_stream[:seen]:
            self._learn_classes(experience)
        if "class_order" in state and list(state["class_order"]) != self.class_order:
            raise ValueError(
                f"the state was taken with classes {list(state['class_order'])} in "
                f"order of arrival; the stream's first {seen} experiences have "
                f"{self.class_order}"
            )
        learned = [self.relabelled(e) for e in train_stream[:seen]]
        self.model.train()
        for experience in learned:
            avalanche_model_adaptation(self.model, experience)
        self.model.to(self.device)
        self.model.load_state_dict(state["model"])
        for key, value in state["clock"].items():
            setattr(self.clock, key, value)
        self.storage_policy.load_state_dict(state["memory"], learned)
        self.lucir.load_state_dict(state["lucir"], self.model)
        if self.bdr is not None and state["bdr"] is not None:
            self.bdr.load_state_dict(state["bdr"], self.device)

    @property
    def _first_experience(self) -> bool:
        return self.clock.train_exp_counter == 0

    def _before_training_exp(self, **kwargs):
        self._learn_classes(self.experience)
        self.experience = self.relabelled(self.experience)
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

    def _before_eval_exp(self, **kwargs):
        self.experience = self.relabelled(self.experience)
        ids = experience_classes(self.experience)
        self._eval_width = ids[-1] + 1 if ids else 0
        super()._before_eval_exp(**kwargs)

    def check_model_and_optimizer(self, **kwargs):
        """Grow the model, then reset the optimizer (:meth:`make_optimizer`)."""
        self.model = self.model_adaptation()
        self.make_optimizer(**kwargs)

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
        """One shuffled loader over new data and memory together: the
        device loader of :class:`~bdr_avalanche.training.FastInputMixin`
        when the strategy has a ``batch_augment``, else a ``DataLoader``.

        Distributed, ``train_mb_size`` is the global batch: each process
        loads its shard in batches of ``train_mb_size / world_size``
        (:meth:`input_shard`).
        """
        batch_size, world, rank = self.input_shard()
        if self.batch_augment is not None:
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

    def input_shard(self) -> tuple[int, int, int]:
        """``(train_mb_size / world_size, world_size, rank)``: this
        process's share of the global batch."""
        batch_size = distributed.shard_size(self.train_mb_size)
        return batch_size, distributed.world_size(), distributed.rank()

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

    def forward(self):
        """The model's logits, computed under :meth:`autocast` and returned
        in float32 (the losses are computed in float32;
        :class:`~bdr_avalanche.training.AutocastMixin`).

        In evaluation the classes of the experience that the model has not
        learned yet get the head's ``mask_value`` (so they are never
        predicted), as with Avalanche's ``IncrementalClassifier``."""
        head = self.model.head
        if not self.is_training and head.num_classes == 0:
            # nothing learned yet (e.g. the evaluation before training)
            shape = (len(self.mb_x), self._eval_width)
            return torch.full(shape, head.mask_value, device=self.device)
        if self._ddp is not None and self.is_training:
            with self.autocast():
                output = self._ddp(self.mb_x).float()
        else:
            output = super().forward()
        missing = self._eval_width - output.shape[1]
        if not self.is_training and missing > 0:
            output = nn.functional.pad(output, (0, missing), value=head.mask_value)
        return output

    def make_optimizer(self, **kwargs):
        """Reset ``self.optimizer`` as a fresh one: no state, one parameter
        group over the trainable parameters, with the optimizer's initial
        hyper-parameters and this experience's learning rate; then a fresh
        ``MultiStepLR`` schedule, unless an ``LRSchedulerPlugin`` schedules
        the learning rate."""
        schedulers = self._check_lr_schedulers()
        lr = self.first_lr if self._first_experience else self.lr
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = self.optimizer
        optimizer.state.clear()
        optimizer.param_groups.clear()
        optimizer.add_param_group({**self._param_group, "params": params, "lr": lr})
        self.scheduler = None
        if not schedulers:
            self.scheduler = MultiStepLR(optimizer, self.milestones, self.lr_decay)

    def criterion(self):
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
