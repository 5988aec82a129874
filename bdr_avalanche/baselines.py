"""Avalanche's built-in class-incremental strategies as baselines for LUCIR.

:func:`make_baseline` builds Naive, Replay, iCaRL, LwF, BiC, GDumb or DER
(Avalanche 0.6) on one of our backbones so that it can be compared with
:class:`~bdr_avalanche.LUCIR` on the same stream: same backbone, epochs,
SGD schedule (reset at every experience) and, wherever the strategy keeps
one, the paper's memory of ``mem_per_class`` exemplars for *every* seen
class (a budget that grows with the classes; :data:`MEMORY_MATCHING` says
how for each strategy). Evaluation is task-agnostic over the classes seen
so far: every model's argmax at eval time ranges over seen classes only.

Reading Avalanche 0.6's code turned up a few problems; the builders work
around them, and the tests check the workarounds:

- **Optimiser.** Avalanche keeps one optimiser for the whole stream and only
  swaps the parameters of a grown head in place, so momentum buffers carry
  over from one experience to the next. A plugin clears the optimiser state
  at the start of every experience, and ``LRSchedulerPlugin`` (reset
  per experience) resets the learning rate and the ``MultiStepLR`` schedule:
  like LUCIR's fresh ``SGD`` + ``MultiStepLR`` per experience.
- **iCaRL.** (a) The loss plugin's old model is a copy of the model *in
  training mode*, so the distillation targets use batch statistics and the
  old model's BatchNorm statistics drift; its feature extractor is put in
  eval mode. (b) The NCM classifier gets a zero mean for every class not
  seen yet, at distance 1 from any normalised feature, so it can predict
  unseen classes; those are masked. (c) The old model is reloaded with
  ``load_state_dict``, which fails once an ``IncrementalClassifier`` has
  grown: the training classifier is a ``Linear`` over all ``num_classes``
  (as in the original iCaRL's sigmoid outputs; NCM is used at eval).
- **LwF.** The teacher is a copy of the model in training mode (same
  BatchNorm problem as iCaRL); it is put in eval mode.
- **BiC.** (0) Stage 2 (fitting the bias layer) passes ``verbose`` to
  ``MultiStepLR``, which torch 2.14 rejects: it is reimplemented, unchanged
  otherwise. (a) The distillation softmax is taken over the *batch*
  (``dim=0``) with a hard-coded temperature of 2; it is taken over classes
  with ``T``. (b) The bias layer is applied in ``after_eval_forward``, so
  calling the model directly (as :func:`bdr_avalanche.protocol.train_and_evaluate`
  does for its old/new-class breakdown) bypassed it; it is applied by a
  forward hook of the model in eval mode instead. (c) The validation
  buffer's size is a fraction of one fixed ``mem_size``; it is a fixed
  number of exemplars per class here (see :data:`MEMORY_MATCHING`).
- **DER.** The stored logits must keep one size, so DER cannot use a growing
  ``IncrementalClassifier`` (the MSE term and the buffer's collation fail).
  The head has ``num_classes`` outputs from the start and is trained
  unmasked, as in the DER paper; at eval the classes not seen yet are
  masked, except while DER stores logits in its buffer.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from avalanche.benchmarks.utils.utils import concat_datasets
from avalanche.core import BasePlugin, SupervisedPlugin
from avalanche.models import IncrementalClassifier, NCMClassifier
from avalanche.models.bic_model import BiasLayer
from avalanche.training.losses import ICaRLLossPlugin
from avalanche.training.plugins import (
    BiCPlugin,
    EvaluationPlugin,
    GDumbPlugin,
    LRSchedulerPlugin,
    LwFPlugin,
    ReplayPlugin,
)
from avalanche.training.plugins.evaluation import default_evaluator
from avalanche.training.storage_policy import (
    BalancedExemplarsBuffer,
    ClassBalancedBuffer,
    ExemplarsBuffer,
)
from avalanche.training.supervised import DER, GDumb, ICaRL, LwF, Naive
from avalanche.training.supervised.der import ClassBalancedBufferWithLogits
from avalanche.training.supervised.icarl import _ICaRLPlugin
from avalanche.training.templates import SupervisedTemplate
from torch import Tensor, nn
from torch.optim import SGD
from torch.optim.lr_scheduler import MultiStepLR
from torch.utils.data import DataLoader

from ._utils import (
    check_fraction,
    check_non_negative,
    check_positive,
    check_positive_int,
)
from .strategy import LUCIR

__all__ = [
    "BASELINES",
    "DEFAULT_HPARAMS",
    "MEMORY_MATCHING",
    "GrowingMemoryBudget",
    "exemplars_per_class",
    "make_baseline",
]

logger = logging.getLogger(__name__)

BASELINES: tuple[str, ...] = ("naive", "replay", "icarl", "lwf", "bic", "gdumb", "der")
"""Names accepted by :func:`make_baseline`."""

DEFAULT_HPARAMS: dict[str, dict[str, Any]] = {
    "naive": {},
    "replay": {},
    "icarl": {"buffer_transform": None},
    "lwf": {"alpha": 1.0, "temperature": 2.0},
    "bic": {
        "val_percentage": 0.1,
        "T": 2.0,
        "stage_2_epochs": 100,
        "stage_2_lr": 0.1,
    },
    "gdumb": {},
    "der": {"alpha": 0.1, "beta": 0.5, "batch_size_mem": None},
}
"""Strategy-specific hyper-parameters and their defaults; override them
with :func:`make_baseline`'s ``hparams``."""

MEMORY_MATCHING: dict[str, str] = {
    "naive": "No memory: plain fine-tuning on each experience's data.",
    "replay": (
        "Naive + ReplayPlugin with a ClassBalancedBuffer (random selection) "
        "whose max_size GrowingMemoryBudget sets to mem_per_class x the classes "
        "seen so far before each update, so every seen class keeps exactly "
        "mem_per_class exemplars (random instead of herding)."
    ),
    "icarl": (
        "ICaRL with fixed_memory=False and memory_size=mem_per_class: herding "
        "keeps mem_per_class exemplars of every seen class, the paper's memory."
    ),
    "lwf": "No memory: LwF distils the previous model on the new data only.",
    "bic": (
        "Every seen class keeps mem_per_class exemplars in all, as in FACIL's "
        "BiC: max(1, round(val_percentage x mem_per_class)) of them (2 of 20) "
        "held out for the bias layer and the rest in a ClassBalancedBuffer "
        "(random selection) for replay, grown by GrowingMemoryBudget."
    ),
    "gdumb": (
        "GDumbPlugin's ClassBalancedBuffer (random selection), which GDumb fills "
        "before training, with max_size set by GrowingMemoryBudget to "
        "mem_per_class x the classes seen including the current experience: the "
        "model is retrained from scratch on mem_per_class samples of every "
        "seen class."
    ),
    "der": (
        "DER's class-balanced buffer with logits (random selection) with max_size "
        "set by GrowingMemoryBudget to mem_per_class x the classes seen so far: "
        "mem_per_class exemplars and their logits for every seen class."
    ),
}
"""Per baseline, how its memory was matched to the paper's
``mem_per_class`` exemplars for every seen class (or that it uses none)."""


class GrowingMemoryBudget(SupervisedPlugin):
    """Gives a class-balanced buffer ``mem_per_class`` exemplars for every
    class seen so far, like the paper's memory, which grows with the classes.

    Avalanche's class-balanced buffers split one total ``max_size`` equally
    among the classes they hold. Before each training experience's data are
    adapted (that is, before any Avalanche plugin or strategy updates its
    buffer, GDumb's included), this plugin sets that ``max_size`` to
    ``mem_per_class`` times the number of classes seen so far, the current
    experience's included. List it before the plugin that owns the buffer.

    :param mem_per_class: exemplars kept per class.
    :param buffer: the buffer to size; an adaptive
        :class:`~avalanche.training.storage_policy.BalancedExemplarsBuffer`
        (e.g. ``ClassBalancedBuffer``). It may be set later, through the
        ``buffer`` attribute, when the strategy creates its own.
    """

    def __init__(self, mem_per_class: int, buffer: ExemplarsBuffer | None = None):
        super().__init__()
        self.mem_per_class = check_positive_int("mem_per_class", mem_per_class)
        self.buffer = buffer
        self.seen_classes: set[int] = set()

    @property
    def max_size(self) -> int:
        """Capacity for the classes seen so far."""
        return self.mem_per_class * len(self.seen_classes)

    def before_train_dataset_adaptation(self, strategy: SupervisedTemplate, **kwargs):
        buffer = self.buffer
        if buffer is None:
            raise ValueError("GrowingMemoryBudget has no buffer to size: set `buffer`")
        if isinstance(buffer, BalancedExemplarsBuffer) and not buffer.adaptive_size:
            raise ValueError(
                "GrowingMemoryBudget needs a buffer with adaptive_size=True, which "
                "splits its max_size among the classes it holds"
            )
        classes = strategy.experience.classes_in_this_experience
        self.seen_classes.update(int(c) for c in classes)
        buffer.max_size = self.max_size
        logger.debug(
            "memory budget: %d exemplars for %d classes",
            buffer.max_size,
            len(self.seen_classes),
        )


class _ClassBalancedBuffer(ClassBalancedBuffer):
    """Avalanche's class-balanced random buffer, whose ``update`` (called by
    the replay, BiC and GDumb plugins) skips the deprecated base method: its
    warning also resets the process's warning filters."""

    def update(self, strategy: SupervisedTemplate, **kwargs):
        self.post_adapt(strategy, strategy.experience)


class _ResetOptimizerState(SupervisedPlugin):
    """Clears the optimiser's state (momentum buffers) at the start of every
    experience, after Avalanche has updated its parameters: with the
    learning-rate reset of ``LRSchedulerPlugin``, each experience starts as
    with a fresh SGD, as in LUCIR."""

    def before_training_exp(self, strategy: SupervisedTemplate, **kwargs):
        strategy.optimizer.state.clear()


class _TeacherInEvalMode(SupervisedPlugin):
    """Puts a strategy's frozen previous model in eval mode (BatchNorm with
    running statistics) before each experience: Avalanche's LwF and iCaRL
    copy the model while it is in training mode and never switch the copy.

    :param get_teacher: returns the module to switch, or ``None``.
    """

    def __init__(self, get_teacher: Callable[[SupervisedTemplate], nn.Module | None]):
        super().__init__()
        self.get_teacher = get_teacher

    def before_training_exp(self, strategy: SupervisedTemplate, **kwargs):
        teacher = self.get_teacher(strategy)
        if teacher is not None:
            teacher.eval()


def _find_plugin(strategy: SupervisedTemplate, kind: type) -> Any:
    for plugin in strategy.plugins:
        if isinstance(plugin, kind):
            return plugin
    raise ValueError(f"the strategy has no {kind.__name__}")


def _lwf_teacher(strategy: SupervisedTemplate) -> nn.Module | None:
    return _find_plugin(strategy, LwFPlugin).lwf.prev_model


def _icarl_teacher(strategy: SupervisedTemplate) -> nn.Module | None:
    # Only the feature extractor: the old TrainEvalModel must stay in
    # training mode, or it would answer with the NCM classifier.
    old = _find_plugin(strategy, ICaRLLossPlugin).old_model
    return None if old is None else old.feature_extractor


class _Net(nn.Module):
    """A backbone followed by a classifier on its features."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.backbone(x))


class _EvalMaskedClassifier(IncrementalClassifier):
    """A linear head with all ``num_classes`` outputs from the start,
    unmasked in training (DER's stored logits keep one size) and with the
    classes not trained on yet masked in eval mode."""

    def forward(self, x: Tensor, **kwargs) -> Tensor:
        out = self.classifier(x)
        if self.masking and not self.training:
            unseen = torch.logical_not(self.active_units)
            out = out.masked_fill(mask=unseen, value=self.mask_value)
        return out


class _UnmaskedLogitsBuffer(ClassBalancedBufferWithLogits):
    """DER's buffer, storing the head's unmasked logits (the targets of
    DER's MSE term on every output)."""

    def __init__(self, head: _EvalMaskedClassifier) -> None:
        super().__init__(max_size=0, adaptive_size=True)
        self.head = head

    def update(self, strategy: SupervisedTemplate, **kwargs):
        masking, self.head.masking = self.head.masking, False
        try:
            super().update(strategy, **kwargs)
        finally:
            self.head.masking = masking


class _SeenClassesNCM(NCMClassifier):
    """iCaRL's NCM classifier, which also masks the classes whose mean is
    still the zero vector iCaRL gives to classes not seen yet."""

    mask_value = -1000.0

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x)
        unseen = (self.class_means == 0).all(dim=1).to(out.device)
        return out.masked_fill(unseen, self.mask_value)


def _bias_correction_hook(plugin: _BiCPlugin) -> Callable:
    # A plain function (not a bound method), so that deep copies of the
    # model (BiC's old model) share it without copying the plugin; it only
    # acts on the strategy's own model.
    def hook(module: nn.Module, args: tuple, output: Tensor) -> Tensor | None:
        if module.training or module is not plugin.corrected_model:
            return None
        if plugin.is_first_experience or not plugin.correct_outputs:
            return None
        return plugin.bias_forward(output)

    return hook


class _BiCPlugin(BiCPlugin):
    """Avalanche's BiC with the fixes listed in the module docstring:
    distillation over classes at temperature ``T``, the bias layer applied
    by the model itself in eval mode, and ``val_per_class`` validation
    exemplars per class."""

    def __init__(self, *, val_per_class: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.val_per_class = val_per_class
        self.corrected_model: nn.Module | None = None
        self.correct_outputs = True
        self._hook_handle: torch.utils.hooks.RemovableHandle | None = None

    def get_group_lengths(self, num_groups: int) -> list[int]:
        return [self.val_per_class] * num_groups

    def cross_entropy(self, new_outputs: Tensor, old_outputs: Tensor) -> Tensor:
        soft_targets = F.softmax(old_outputs / self.T, dim=1)
        return F.cross_entropy(new_outputs / self.T, soft_targets)

    def before_training(self, strategy: SupervisedTemplate, *args, **kwargs):
        super().before_training(strategy, *args, **kwargs)
        if self.corrected_model is not strategy.model:
            if self._hook_handle is not None:
                self._hook_handle.remove()
            self.corrected_model = strategy.model
            self._hook_handle = strategy.model.register_forward_hook(
                _bias_correction_hook(self)
            )

    def after_eval_forward(self, strategy: SupervisedTemplate, **kwargs):
        """Nothing to do: the model's forward hook corrects the outputs."""

    def bias_correction_step(
        self,
        strategy: SupervisedTemplate,
        persistent_workers: bool = False,
        num_workers: int = 0,
    ) -> None:
        """BiC's stage 2, as in Avalanche 0.6 (which passes ``verbose`` to
        ``MultiStepLR``, an argument recent torch no longer accepts): a new
        bias layer on the experience's classes is fitted on the validation
        exemplars of all seen classes, with the model frozen in eval mode."""
        model = strategy.model
        model.eval()
        self.bias_layer = BiasLayer(strategy.adapted_dataset.targets.uniques)
        self.bias_layer.to(strategy.device).train()
        optimizer = SGD(self.bias_layer.parameters(), lr=self.lr, momentum=0.9)
        scheduler = MultiStepLR(optimizer, milestones=[50, 100, 150], gamma=0.1)
        val_set = concat_datasets([b.buffer for b in self.val_buffer.values()])
        loader = DataLoader(
            val_set,
            batch_size=strategy.train_mb_size,
            shuffle=True,
            num_workers=num_workers,
            persistent_workers=persistent_workers,
        )
        # The model's forward hook must not apply the layer being fitted.
        self.correct_outputs = False
        try:
            for _ in range(self.stage_2_epochs):
                for batch in loader:
                    x = batch[0].to(strategy.device)
                    y = batch[1].to(strategy.device)
                    with torch.no_grad():
                        outputs = model(x)
                    loss = F.cross_entropy(self.bias_layer(outputs), y)
                    loss = loss + 0.1 * self.bias_layer.beta.sum() ** 2 / 2
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                scheduler.step()
        finally:
            self.correct_outputs = True
        self.bias_layer.eval()
        self.bias_layer.requires_grad_(False)
        logger.debug(
            "BiC bias layer: alpha=%.4f beta=%.4f",
            self.bias_layer.alpha.item(),
            self.bias_layer.beta.item(),
        )


def _targets(dataset) -> list[int]:
    if len(dataset) == 0:
        return []
    return [int(y) for y in dataset.targets]


def exemplars_per_class(strategy: SupervisedTemplate) -> dict[int, int]:
    """Number of exemplars a baseline built by :func:`make_baseline` stores
    for each class (BiC: replay and validation exemplars together); empty
    for the strategies without memory."""
    counts: Counter[int] = Counter()
    for plugin in strategy.plugins:
        if isinstance(plugin, _ICaRLPlugin):
            for labels in plugin.y_memory:
                counts.update(int(y) for y in labels)
        elif isinstance(plugin, (ReplayPlugin, GDumbPlugin, BiCPlugin)):
            counts.update(_targets(plugin.storage_policy.buffer))
        if isinstance(plugin, BiCPlugin):
            for val_buffer in plugin.val_buffer.values():
                counts.update(_targets(val_buffer.buffer))
    if isinstance(strategy, DER):
        counts.update(_targets(strategy.storage_policy.buffer))
    return dict(sorted(counts.items()))


def _check_hparams(name: str, hparams: Mapping[str, Any] | None) -> dict[str, Any]:
    allowed = DEFAULT_HPARAMS[name]
    unknown = sorted(set(hparams or {}) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown hyper-parameters {unknown} for baseline {name!r}; "
            f"it accepts {sorted(allowed) or 'none'}"
        )
    hp = {**allowed, **(hparams or {})}
    for key in ("alpha", "beta"):
        if key in hp:
            check_non_negative(key, hp[key])
    for key in ("temperature", "T", "stage_2_lr"):
        if key in hp:
            check_positive(key, hp[key])
    if "val_percentage" in hp:
        check_fraction("val_percentage", hp["val_percentage"])
    if "stage_2_epochs" in hp:
        check_positive_int("stage_2_epochs", hp["stage_2_epochs"])
    if hp.get("batch_size_mem") is not None:
        check_positive_int("batch_size_mem", hp["batch_size_mem"])
    return hp


_SHARED = LUCIR.HPARAMS
"""The schedule and memory size are LUCIR's: same defaults and ranges."""


def make_baseline(
    name: str,
    *,
    backbone: nn.Module,
    num_classes: int,
    mem_per_class: int = _SHARED["mem_per_class"].default,
    lr: float = _SHARED["lr"].default,
    momentum: float = _SHARED["momentum"].default,
    weight_decay: float = _SHARED["weight_decay"].default,
    milestones: Sequence[int] = _SHARED["milestones"].default,
    lr_decay: float = _SHARED["lr_decay"].default,
    train_mb_size: int = _SHARED["train_mb_size"].default,
    train_epochs: int = _SHARED["train_epochs"].default,
    eval_mb_size: int = _SHARED["eval_mb_size"].default,
    device: str | torch.device | None = None,
    evaluator: EvaluationPlugin | None = None,
    plugins: Sequence[BasePlugin] = (),
    hparams: Mapping[str, Any] | None = None,
) -> SupervisedTemplate:
    """One of Avalanche's strategies, set up like :class:`~bdr_avalanche.LUCIR`.

    All baselines train ``backbone`` (its last ReLU kept: ``last_relu`` is
    set to ``True``) with ``SGD(lr, momentum, weight_decay)`` and a
    ``MultiStepLR(milestones, lr_decay)`` stepped per epoch, both reset at
    every experience, for ``train_epochs`` epochs of ``train_mb_size``.
    The classifier, memory and defaults of ``hparams`` (see
    :data:`DEFAULT_HPARAMS`) are:

    - ``naive``: Avalanche's ``Naive``, fine-tuning an ``IncrementalClassifier``
      (one output per class seen so far; the argmax is over those only).
    - ``replay``: ``Naive`` + ``ReplayPlugin`` with a class-balanced random
      buffer; every step draws ``train_mb_size`` new samples *and*
      ``train_mb_size`` memory samples (Avalanche's replay loader), unlike
      LUCIR's single shuffled loader over data and memory.
    - ``icarl``: ``ICaRL`` (herding memory, sigmoid/BCE distillation, NCM
      classifier at eval) with a ``Linear`` training head over all
      ``num_classes``. ``buffer_transform`` (default ``None``: exemplars are
      not augmented) is applied to exemplars that already went through the
      eval transform, so it must work on tensors (e.g. crop and flip, no
      ``ToTensor`` or normalisation).
    - ``lwf``: ``LwF`` with an ``IncrementalClassifier``; ``alpha=1``,
      ``temperature=2`` (Avalanche's KL distillation on the old classes'
      outputs, without a ``T**2`` factor).
    - ``bic``: ``Naive`` + ``BiCPlugin`` (what Avalanche's ``BiC`` is, which
      does not accept a storage policy) with an ``IncrementalClassifier``;
      ``val_percentage=0.1`` of each class's memory held out to fit the bias
      layer, distillation temperature ``T=2`` with BiC's adaptive weight
      n_old / n_seen; the bias layer is trained for ``stage_2_epochs=100``
      epochs with SGD at ``stage_2_lr=0.1`` (momentum 0.9, lr x0.1 at
      epochs 50, 100 and 150, fixed by Avalanche): a two-parameter fit on a
      few hundred images, FACIL uses 200 epochs.
    - ``gdumb``: ``GDumb`` with an ``IncrementalClassifier``: at every
      experience the model is reset to its initial weights and trained only
      on the class-balanced memory.
    - ``der``: ``DER`` (DER++ with ``alpha=0.1``, ``beta=0.5``, Buzzega et
      al.) with a head of ``num_classes`` outputs (see the module
      docstring); ``batch_size_mem`` defaults to ``train_mb_size``. DER
      replays only once its buffer holds ``batch_size_mem`` samples.

    :param name: one of :data:`BASELINES`.
    :param backbone: a backbone from :mod:`bdr_avalanche.models` (maps images
        to ``(N, out_dim)`` features; must have ``out_dim``).
    :param num_classes: classes in the whole benchmark (ids ``0..num_classes-1``,
        contiguous in order of arrival).
    :param mem_per_class: exemplars kept per seen class (see
        :data:`MEMORY_MATCHING`).
    :param evaluator: Avalanche's default evaluator if ``None``.
    :param plugins: extra plugins, run after the baseline's own.
    :param hparams: overrides of the strategy-specific hyper-parameters.
    :return: the strategy; train it one experience at a time and evaluate on
        the seen part of the test stream, e.g. with
        :func:`bdr_avalanche.protocol.train_and_evaluate`.
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {BASELINES}")
    if not isinstance(backbone, nn.Module) or not hasattr(backbone, "out_dim"):
        raise ValueError(
            "backbone must be an nn.Module with an `out_dim` attribute, the size "
            "of its features (see bdr_avalanche.models)"
        )
    hp = _check_hparams(name, hparams)
    num_classes = check_positive_int("num_classes", num_classes, minimum=2)
    mem_per_class = _SHARED["mem_per_class"].check("mem_per_class", mem_per_class)
    lr = _SHARED["lr"].check("lr", lr)
    momentum = _SHARED["momentum"].check("momentum", momentum)
    weight_decay = _SHARED["weight_decay"].check("weight_decay", weight_decay)
    milestones = _SHARED["milestones"].check("milestones", milestones)
    lr_decay = _SHARED["lr_decay"].check("lr_decay", lr_decay)
    common = {
        "train_mb_size": _SHARED["train_mb_size"].check("train_mb_size", train_mb_size),
        "train_epochs": _SHARED["train_epochs"].check("train_epochs", train_epochs),
        "eval_mb_size": _SHARED["eval_mb_size"].check("eval_mb_size", eval_mb_size),
        "device": device or ("cuda" if torch.cuda.is_available() else "cpu"),
        "evaluator": evaluator if evaluator is not None else default_evaluator(),
    }
    if hasattr(backbone, "last_relu"):
        backbone.last_relu = True
    out_dim = int(backbone.out_dim)

    def sgd(parameters) -> tuple[SGD, LRSchedulerPlugin]:
        optimizer = SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
        schedule = LRSchedulerPlugin(
            MultiStepLR(optimizer, milestones, lr_decay),
            reset_scheduler=True,
            reset_lr=True,
            step_granularity="epoch",
        )
        return optimizer, schedule

    extra = list(plugins)
    own: list[BasePlugin] = [_ResetOptimizerState()]
    ce = nn.CrossEntropyLoss()

    if name == "icarl":
        classifier = nn.Linear(out_dim, num_classes)
        optimizer, schedule = sgd([*backbone.parameters(), *classifier.parameters()])
        strategy: SupervisedTemplate = ICaRL(
            feature_extractor=backbone,
            classifier=classifier,
            optimizer=optimizer,
            memory_size=mem_per_class,
            buffer_transform=hp["buffer_transform"],
            fixed_memory=False,
            plugins=[*own, _TeacherInEvalMode(_icarl_teacher), schedule, *extra],
            **common,
        )
        strategy.model.eval_classifier = _SeenClassesNCM(normalize=True)
    elif name == "der":
        head = _EvalMaskedClassifier(out_dim, initial_out_features=num_classes)
        model = _Net(backbone, head)
        optimizer, schedule = sgd(model.parameters())
        budget = GrowingMemoryBudget(mem_per_class)
        strategy = DER(
            model=model,
            optimizer=optimizer,
            criterion=ce,
            mem_size=0,
            batch_size_mem=hp["batch_size_mem"],
            alpha=hp["alpha"],
            beta=hp["beta"],
            plugins=[*own, budget, schedule, *extra],
            **common,
        )
        strategy.storage_policy = budget.buffer = _UnmaskedLogitsBuffer(head)
    else:
        model = _Net(backbone, IncrementalClassifier(out_dim))
        optimizer, schedule = sgd(model.parameters())
        args = {"model": model, "optimizer": optimizer, "criterion": ce, **common}
        if name == "naive":
            strategy = Naive(plugins=[*own, schedule, *extra], **args)
        elif name == "lwf":
            strategy = LwF(
                alpha=hp["alpha"],
                temperature=hp["temperature"],
                plugins=[*own, _TeacherInEvalMode(_lwf_teacher), schedule, *extra],
                **args,
            )
        elif name == "replay":
            buffer = _ClassBalancedBuffer(max_size=0, adaptive_size=True)
            replay = ReplayPlugin(mem_size=0, storage_policy=buffer)
            budget = GrowingMemoryBudget(mem_per_class, buffer)
            strategy = Naive(plugins=[*own, budget, replay, schedule, *extra], **args)
        elif name == "gdumb":
            budget = GrowingMemoryBudget(mem_per_class)
            strategy = GDumb(
                mem_size=0, plugins=[*own, budget, schedule, *extra], **args
            )
            gdumb = _find_plugin(strategy, GDumbPlugin)
            gdumb.storage_policy = budget.buffer = _ClassBalancedBuffer(0)
        else:  # bic
            if mem_per_class < 2:
                raise ValueError(
                    "BiC splits each class's memory into replay and validation "
                    f"exemplars: mem_per_class must be >= 2, got {mem_per_class}"
                )
            val_per_class = max(1, round(hp["val_percentage"] * mem_per_class))
            val_per_class = min(val_per_class, mem_per_class - 1)
            buffer = _ClassBalancedBuffer(max_size=0, adaptive_size=True)
            bic = _BiCPlugin(
                val_per_class=val_per_class,
                mem_size=0,
                storage_policy=buffer,
                val_percentage=hp["val_percentage"],
                T=hp["T"],
                stage_2_epochs=hp["stage_2_epochs"],
                lr=hp["stage_2_lr"],
            )
            budget = GrowingMemoryBudget(mem_per_class - val_per_class, buffer)
            strategy = Naive(plugins=[*own, budget, bic, schedule, *extra], **args)
    logger.info("baseline %s: %s", name, MEMORY_MATCHING[name])
    return strategy
