"""One factory per baseline, with its hyper-parameters, in a registry.

Each factory builds one of Avalanche's strategies from a checked
:class:`Setup` (the backbone, the memory size, LUCIR's SGD schedule and the
strategy's arguments, shared by all baselines) and, for a baseline with
hyper-parameters of its own, their record in :mod:`bdr_avalanche.params`
(``LwFParams``, ``BiCParams``, ``DERParams``, ``ERACEParams``,
``AGEMParams``, ``ICaRLParams``): their defaults, ranges and help texts
are written once, there; :func:`register` adds the record's ``:param``
lines to the factory's docstring and :meth:`Baseline.check_hparams`
builds the record.
The experiment config nests the records of the baselines that it can set
(``--der.alpha 0.2``); iCaRL's is a callable, given in code only.
:func:`~bdr_avalanche.baselines.make_baseline` builds the :class:`Setup`
and calls the factory with the record.

A factory builds its strategy with :meth:`Setup.build`, which composes the
Avalanche class with the speed mixins
(:class:`~bdr_avalanche.training.SpeedMixin`: fast input path, autocast,
channels-last) when a speed switch is on, so the baselines are fed as
``LUCIR`` is. Naive, Replay, LwF and GDumb take every switch; iCaRL, BiC,
DER, ER-ACE and A-GEM not the fast input path, because part of their
training runs through a loop of their own, and BiC not autocast either,
because of its bias layer (:attr:`Baseline.unsupported` says which part,
from :data:`~bdr_avalanche.training.support.UNSUPPORTED`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from avalanche.core import BasePlugin
from avalanche.models import IncrementalClassifier
from avalanche.training.plugins import GDumbPlugin, LRSchedulerPlugin, ReplayPlugin
from avalanche.training.supervised import DER, ER_ACE, GDumb, ICaRL, LwF, Naive
from avalanche.training.templates import SupervisedTemplate
from torch import Tensor, nn
from torch.optim import SGD
from torch.optim.lr_scheduler import MultiStepLR

from ..models.cosine import CosineIncrementalClassifier
from ..params import (
    AGEMParams,
    BiCParams,
    DERParams,
    ERACEParams,
    HParam,
    ICaRLParams,
    LwFParams,
    Params,
    TrainingParams,
    document_hparams,
    hparams_of,
)
from ..training.speed import Speed
from ..training.support import UNSUPPORTED
from .fixes import (
    _BiCPlugin,
    _ClassBalancedBuffer,
    _EvalMaskedClassifier,
    _find_plugin,
    _icarl_teacher,
    _lwf_teacher,
    _ResetOptimizerState,
    _SeenClassesNCM,
    _TeacherInEvalMode,
    _UnmaskedLogitsBuffer,
)
from .memory import GrowingMemoryBudget, _BudgetFirstBuffer, _ClassBalancedAGEMPlugin
from .templates import with_speed

__all__ = [
    "COSINE_HEAD",
    "REGISTRY",
    "Baseline",
    "Schedule",
    "Setup",
    "agem",
    "bic",
    "der",
    "er_ace",
    "gdumb",
    "icarl",
    "lwf",
    "naive",
    "register",
    "replay",
]

Factory = Callable[..., SupervisedTemplate]
"""``factory(setup)``, or ``factory(setup, params)`` for a baseline with a
record of hyper-parameters: a baseline's strategy."""


@dataclass(frozen=True)
class Schedule:
    """LUCIR's optimiser: ``SGD(lr, momentum, weight_decay)`` with a
    ``MultiStepLR(milestones, lr_decay)`` stepped per epoch, both reset at
    every experience (the learning rate and schedule by
    ``LRSchedulerPlugin``, the momentum by
    :class:`~bdr_avalanche.baselines.fixes._ResetOptimizerState`, which
    :meth:`Setup.plugins` adds)."""

    lr: float
    momentum: float
    weight_decay: float
    milestones: Sequence[int]
    lr_decay: float

    @classmethod
    def of(cls, training: TrainingParams) -> Schedule:
        """The schedule of ``training``'s SGD keys."""
        return cls(
            lr=training.lr,
            momentum=training.momentum,
            weight_decay=training.weight_decay,
            milestones=list(training.milestones),
            lr_decay=training.lr_decay,
        )

    def sgd(self, parameters: Iterable[nn.Parameter]) -> tuple[SGD, LRSchedulerPlugin]:
        """The optimiser of ``parameters`` and the plugin that steps and
        resets its schedule."""
        optimizer = SGD(
            parameters,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
        )
        scheduler = MultiStepLR(optimizer, self.milestones, self.lr_decay)
        schedule = LRSchedulerPlugin(
            scheduler,
            reset_scheduler=True,
            reset_lr=True,
            step_granularity="epoch",
        )
        return optimizer, schedule


@dataclass(frozen=True)
class Setup:
    """What every baseline shares, checked by
    :func:`~bdr_avalanche.baselines.make_baseline`."""

    backbone: nn.Module
    """Maps images to ``(N, out_dim)`` features."""
    num_classes: int
    """Classes in the whole benchmark."""
    mem_per_class: int
    """Exemplars kept per seen class (by the baselines with a memory)."""
    schedule: Schedule
    strategy_args: Mapping[str, Any]
    """``train_mb_size``, ``train_epochs``, ``eval_mb_size``, ``device``
    and ``evaluator`` of the Avalanche strategy."""
    extra_plugins: Sequence[BasePlugin] = ()
    """The caller's plugins, run after the baseline's own."""
    speed: Speed = Speed()
    """The speed switches (checked against the baseline's support)."""
    cosine_head: bool = False
    """A growing cosine classifier
    (:class:`~bdr_avalanche.models.CosineIncrementalClassifier`) instead of
    the linear ``IncrementalClassifier``, for LUCIR's plugin (the baselines
    built with a growing head only: :data:`COSINE_HEAD`)."""

    @property
    def out_dim(self) -> int:
        """The size of the backbone's features."""
        # an attribute of the backbone, which torch types as Tensor | Module
        return int(cast(int, self.backbone.out_dim))

    def plugins(
        self, schedule: LRSchedulerPlugin, *own: BasePlugin
    ) -> list[BasePlugin]:
        """The strategy's plugins, in order: the optimiser-state reset, the
        baseline's ``own``, the learning-rate ``schedule``, the caller's."""
        return [_ResetOptimizerState(), *own, schedule, *self.extra_plugins]

    def build(
        self, template: type[SupervisedTemplate], **kwargs: Any
    ) -> SupervisedTemplate:
        """``template(**kwargs, **strategy_args)``; when a speed switch is
        on, ``template`` with the speed mixins and :attr:`speed`'s
        arguments (:func:`~bdr_avalanche.baselines.templates.with_speed`)."""
        if not self.speed.switches:
            return template(**kwargs, **self.strategy_args)
        fast = with_speed(template)
        return fast(**kwargs, **self.strategy_args, **self.speed.strategy_args())


@dataclass(frozen=True)
class Baseline:
    """A registered baseline: its factory and its record of
    hyper-parameters (``None``: it has none of its own)."""

    name: str
    factory: Factory
    record: type[Params] | None = None

    @property
    def hparams(self) -> Mapping[str, HParam]:
        """The record's fields: defaults, ranges and help texts."""
        return {} if self.record is None else hparams_of(self.record)

    @property
    def unsupported(self) -> Mapping[str, str]:
        """Speed switch -> why this baseline cannot take it
        (:data:`~bdr_avalanche.training.support.UNSUPPORTED`)."""
        return UNSUPPORTED.get(self.name, {})

    def check_speed(self, speed: Speed) -> Speed:
        """``speed``, or ``ValueError`` naming the first switch that is on
        and that this baseline cannot take, and why."""
        for switch in speed.switches:
            if switch in self.unsupported:
                raise ValueError(
                    f"baseline {self.name!r} cannot take {switch}: "
                    f"{self.unsupported[switch]}"
                )
        return speed

    def check_hparams(self, hparams: Params | Mapping[str, Any] | None) -> Any:
        """The record of ``hparams`` (the record itself, or a mapping of
        its fields over the defaults; ``None`` for a baseline without one);
        raise ``ValueError`` naming a key that is not a field, or one whose
        value is out of range."""
        if self.record is not None and isinstance(hparams, self.record):
            return hparams
        if isinstance(hparams, Params):
            raise ValueError(
                f"baseline {self.name!r} takes "
                f"{self.record.__name__ if self.record else 'no hyper-parameters'}"
                f", not a {type(hparams).__name__}"
            )
        given = dict(hparams or {})
        unknown = sorted(set(given) - set(self.hparams))
        if unknown:
            raise ValueError(
                f"unknown hyper-parameters {unknown} for baseline {self.name!r}; "
                f"it accepts {sorted(self.hparams) or 'none'}"
            )
        return None if self.record is None else self.record(**given)

    def build(self, setup: Setup, own: Params | None) -> SupervisedTemplate:
        """The factory's strategy on ``setup``, with ``own`` record."""
        if self.record is None:
            return self.factory(setup)
        return self.factory(setup, own)


REGISTRY: dict[str, Baseline] = {}
"""The baselines by name, in the order they are registered."""


def register(
    name: str, record: type[Params] | None = None
) -> Callable[[Factory], Factory]:
    """Decorator: register a factory under ``name`` with its record of
    hyper-parameters, and add the record's ``:param`` lines to its
    docstring."""

    def add(factory: Factory) -> Factory:
        if name in REGISTRY:
            raise ValueError(f"baseline {name!r} is already registered")
        REGISTRY[name] = Baseline(name, factory, record)
        if record is None:
            return factory
        # a function takes attributes, which mypy does not model
        documented: Any = factory
        documented.PARAMS = record  # what document_hparams reads, as on a class
        return document_hparams(documented)

    return add


class _Net(nn.Module):
    """A backbone followed by a classifier on its features."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.backbone(x))


COSINE_HEAD = frozenset({"naive", "replay", "lwf", "bic", "gdumb", "er_ace", "agem"})
"""The baselines whose head is the growing classifier of :func:`_growing_net`,
which :attr:`Setup.cosine_head` can make a cosine one."""


def _growing_net(setup: Setup) -> _Net:
    """The backbone with an ``IncrementalClassifier`` (or, with
    :attr:`Setup.cosine_head`, a ``CosineIncrementalClassifier``): one
    output per class seen so far, so that the argmax ranges over those
    only."""
    if setup.cosine_head:
        return _Net(setup.backbone, CosineIncrementalClassifier(setup.out_dim))
    return _Net(setup.backbone, IncrementalClassifier(setup.out_dim))


@register("naive")
def naive(setup: Setup) -> SupervisedTemplate:
    """Avalanche's ``Naive``: fine-tuning a growing ``IncrementalClassifier``
    on each experience's data, without memory."""
    model = _growing_net(setup)
    optimizer, schedule = setup.schedule.sgd(model.parameters())
    return setup.build(
        Naive,
        model=model,
        optimizer=optimizer,
        criterion=nn.CrossEntropyLoss(),
        plugins=setup.plugins(schedule),
    )


@register("replay")
def replay(setup: Setup) -> SupervisedTemplate:
    """``Naive`` + ``ReplayPlugin`` with a class-balanced random buffer of
    ``mem_per_class`` exemplars per seen class
    (:class:`~bdr_avalanche.baselines.GrowingMemoryBudget`). Every step draws
    ``train_mb_size`` new samples *and* ``train_mb_size`` memory samples
    (Avalanche's replay loader), unlike LUCIR's single shuffled loader over
    data and memory."""
    model = _growing_net(setup)
    optimizer, schedule = setup.schedule.sgd(model.parameters())
    buffer = _ClassBalancedBuffer(max_size=0, adaptive_size=True)
    plugin = ReplayPlugin(mem_size=0, storage_policy=buffer)
    budget = GrowingMemoryBudget(setup.mem_per_class, buffer)
    return setup.build(
        Naive,
        model=model,
        optimizer=optimizer,
        criterion=nn.CrossEntropyLoss(),
        plugins=setup.plugins(schedule, budget, plugin),
    )


@register("icarl", ICaRLParams)
def icarl(setup: Setup, params: ICaRLParams) -> SupervisedTemplate:
    """Avalanche's ``ICaRL``: herding memory of ``mem_per_class`` exemplars
    per seen class, sigmoid/BCE distillation, NCM classifier at eval
    (:class:`~bdr_avalanche.baselines.fixes._SeenClassesNCM`).

    The training head is a ``Linear`` over all ``num_classes``, as the
    original iCaRL's sigmoid outputs: ``ICaRLLossPlugin`` reloads its old
    model with ``load_state_dict``, which fails once an
    ``IncrementalClassifier`` has grown (see :mod:`.fixes`).
    """
    classifier = nn.Linear(setup.out_dim, setup.num_classes)
    optimizer, schedule = setup.schedule.sgd(
        [*setup.backbone.parameters(), *classifier.parameters()]
    )
    strategy = setup.build(
        ICaRL,
        feature_extractor=setup.backbone,
        classifier=classifier,
        optimizer=optimizer,
        memory_size=setup.mem_per_class,
        buffer_transform=params.buffer_transform,
        fixed_memory=False,
        plugins=setup.plugins(schedule, _TeacherInEvalMode(_icarl_teacher)),
    )
    strategy.model.eval_classifier = _SeenClassesNCM(normalize=True)
    return strategy


@register("lwf", LwFParams)
def lwf(setup: Setup, params: LwFParams) -> SupervisedTemplate:
    """Avalanche's ``LwF`` with a growing ``IncrementalClassifier``: the
    previous model (in eval mode,
    :class:`~bdr_avalanche.baselines.fixes._TeacherInEvalMode`) is distilled
    on the new data; no memory."""
    model = _growing_net(setup)
    optimizer, schedule = setup.schedule.sgd(model.parameters())
    return setup.build(
        LwF,
        model=model,
        optimizer=optimizer,
        criterion=nn.CrossEntropyLoss(),
        alpha=params.alpha,
        temperature=params.temperature,
        plugins=setup.plugins(schedule, _TeacherInEvalMode(_lwf_teacher)),
    )


@register("bic", BiCParams)
def bic(setup: Setup, params: BiCParams) -> SupervisedTemplate:
    """``Naive`` + BiC's plugin (what Avalanche's ``BiC`` is; it does not
    accept a storage policy) with a growing ``IncrementalClassifier``.

    Each seen class keeps ``mem_per_class`` exemplars: some held out to fit
    the bias layer, the rest in a class-balanced random buffer for replay.
    Distillation at temperature ``T`` with BiC's adaptive weight
    n_old / n_seen; the bias layer (two parameters fitted on a few hundred
    images) is trained after every experience but the first. The plugin is
    :class:`~bdr_avalanche.baselines.fixes._BiCPlugin`; its bias layer
    corrects the outputs in Avalanche's eval loop (``after_eval_forward``).
    Needs ``mem_per_class >= 2`` (``ValueError`` otherwise).
    """
    if setup.mem_per_class < 2:
        raise ValueError(
            "BiC splits each class's memory into replay and validation "
            f"exemplars: mem_per_class must be >= 2, got {setup.mem_per_class}"
        )
    model = _growing_net(setup)
    optimizer, schedule = setup.schedule.sgd(model.parameters())
    val_per_class = max(1, round(params.val_percentage * setup.mem_per_class))
    val_per_class = min(val_per_class, setup.mem_per_class - 1)
    buffer = _ClassBalancedBuffer(max_size=0, adaptive_size=True)
    plugin = _BiCPlugin(
        val_per_class=val_per_class,
        mem_size=0,
        storage_policy=buffer,
        val_percentage=params.val_percentage,
        T=params.T,
        stage_2_epochs=params.stage_2_epochs,
        lr=params.stage_2_lr,
    )
    budget = GrowingMemoryBudget(setup.mem_per_class - val_per_class, buffer)
    return setup.build(
        Naive,
        model=model,
        optimizer=optimizer,
        criterion=nn.CrossEntropyLoss(),
        plugins=setup.plugins(schedule, budget, plugin),
    )


@register("gdumb")
def gdumb(setup: Setup) -> SupervisedTemplate:
    """Avalanche's ``GDumb`` with a growing ``IncrementalClassifier``: at
    every experience the model is reset to its initial weights and trained
    only on the class-balanced random memory of ``mem_per_class``
    exemplars per seen class."""
    model = _growing_net(setup)
    optimizer, schedule = setup.schedule.sgd(model.parameters())
    budget = GrowingMemoryBudget(setup.mem_per_class)
    strategy = setup.build(
        GDumb,
        model=model,
        optimizer=optimizer,
        criterion=nn.CrossEntropyLoss(),
        mem_size=0,
        plugins=setup.plugins(schedule, budget),
    )
    plugin = _find_plugin(strategy, GDumbPlugin)
    plugin.storage_policy = budget.buffer = _ClassBalancedBuffer(0)
    return strategy


@register("der", DERParams)
def der(setup: Setup, params: DERParams) -> SupervisedTemplate:
    """Avalanche's ``DER`` (DER++, Buzzega et al.) with a class-balanced
    random buffer of ``mem_per_class`` exemplars and their logits per seen
    class.

    The head has ``num_classes`` outputs from the start and is trained
    unmasked, as in the DER paper; at eval the classes not seen yet are
    masked, except while DER stores logits in its buffer
    (:class:`~bdr_avalanche.baselines.fixes._EvalMaskedClassifier`).
    """
    head = _EvalMaskedClassifier(setup.out_dim, initial_out_features=setup.num_classes)
    model = _Net(setup.backbone, head)
    optimizer, schedule = setup.schedule.sgd(model.parameters())
    budget = GrowingMemoryBudget(setup.mem_per_class)
    strategy = setup.build(
        DER,
        model=model,
        optimizer=optimizer,
        criterion=nn.CrossEntropyLoss(),
        mem_size=0,
        batch_size_mem=params.batch_size_mem,
        alpha=params.alpha,
        beta=params.beta,
        plugins=setup.plugins(schedule, budget),
    )
    strategy.storage_policy = budget.buffer = _UnmaskedLogitsBuffer(head)
    return strategy


@register("er_ace", ERACEParams)
def er_ace(setup: Setup, params: ERACEParams) -> SupervisedTemplate:
    """Avalanche's ``ER_ACE`` (Caccia et al.) with a growing
    ``IncrementalClassifier`` and a class-balanced random buffer of
    ``mem_per_class`` exemplars per seen class
    (:class:`~bdr_avalanche.baselines.memory._BudgetFirstBuffer`).

    ER-ACE adds the experience's data to its buffer at the experience's
    start; from the second experience on, once the buffer holds
    ``batch_size_mem`` samples, every step draws that many from it and
    averages the cross-entropy of the memory batch (over all outputs) and
    that of the new batch over the classes present in it (the asymmetric
    cross-entropy).
    """
    model = _growing_net(setup)
    optimizer, schedule = setup.schedule.sgd(model.parameters())
    strategy = setup.build(
        ER_ACE,
        model=model,
        optimizer=optimizer,
        criterion=nn.CrossEntropyLoss(),
        mem_size=0,
        batch_size_mem=params.batch_size_mem or setup.strategy_args["train_mb_size"],
        plugins=setup.plugins(schedule),
    )
    strategy.storage_policy = _BudgetFirstBuffer(setup.mem_per_class)
    return strategy


@register("agem", AGEMParams)
def agem(setup: Setup, params: AGEMParams) -> SupervisedTemplate:
    """``Naive`` + A-GEM's plugin (what Avalanche's ``AGEM`` is) with a
    growing ``IncrementalClassifier`` and an episodic memory of
    ``mem_per_class`` random exemplars per seen class
    (:class:`~bdr_avalanche.baselines.memory._ClassBalancedAGEMPlugin`).

    From the second experience on, every step computes a reference
    gradient on ``sample_size`` memory samples and, where the step's
    gradient points against it (negative dot product), projects the step's
    gradient onto the plane orthogonal to it. The memory is not trained on.
    """
    model = _growing_net(setup)
    optimizer, schedule = setup.schedule.sgd(model.parameters())
    sample_size = params.sample_size or setup.strategy_args["train_mb_size"]
    plugin = _ClassBalancedAGEMPlugin(setup.mem_per_class, sample_size)
    return setup.build(
        Naive,
        model=model,
        optimizer=optimizer,
        criterion=nn.CrossEntropyLoss(),
        plugins=setup.plugins(schedule, plugin),
    )
