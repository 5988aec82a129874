"""The LUCIR training protocol as an Avalanche strategy, with CwD and BDR."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from avalanche.benchmarks.scenarios import CLExperience
from avalanche.core import BasePlugin
from avalanche.models.dynamic_modules import avalanche_model_adaptation
from avalanche.training.plugins.evaluation import EvaluationPlugin, default_evaluator
from avalanche.training.templates import SupervisedTemplate
from torch import Tensor, nn
from torch.optim import Optimizer

from .models import CosineIncrementalNet, remove_last_relu
from .models.cosine import experience_classes
from .params import BDRParams, CwDParams, LUCIRParams, TrainingParams
from .plugins import (
    BDRPlugin,
    ConcatReplayPlugin,
    CwDPlugin,
    FiniteLossGuard,
    LUCIRPlugin,
)
from .plugins._adapters import Family
from .storage import HerdingBuffer
from .training.distributed_mixin import DistributedMixin
from .training.fresh_optimizer_mixin import FreshOptimizerMixin, OptimizerFactory
from .training.relabel import ClassRelabelling, RelabelledExperience, RelabelledStream
from .training.speed import Speed, SpeedMixin

__all__ = ["LUCIR", "OptimizerFactory", "RelabelledExperience", "RelabelledStream"]

AVALANCHE_PRIVATE = (
    "avalanche.training.templates.SupervisedTemplate._before_training_exp",
    "avalanche.training.templates.SupervisedTemplate._before_eval_exp",
)
"""The template hooks LUCIR extends (protected Avalanche names, checked by
``tests/test_avalanche_private.py``)."""


class LUCIR(FreshOptimizerMixin, DistributedMixin, SpeedMixin, SupervisedTemplate):
    """Class-incremental training as in LUCIR and the BDR paper.

    - The ``backbone`` loses its last ReLU
      (:func:`~bdr_avalanche.models.remove_last_relu`; a warning says when
      it cannot tell where that is) and gets a
      :class:`~bdr_avalanche.models.CosineIncrementalClassifier`: one block
      of rows per experience, a shared learnable scale, old rows frozen.
      torchvision's and Avalanche's ResNets lose their classifier; the
      feature dimension is ``feature_dim``, else the backbone's
      ``out_dim``, else that classifier's input size.
    - A :class:`~bdr_avalanche.HerdingBuffer` of ``training.mem_per_class``
      exemplars per class is concatenated to each experience's data and
      shuffled with it (:class:`~bdr_avalanche.ConcatReplayPlugin`).
    - Each experience starts with a fresh optimizer and ``MultiStepLR``
      schedule (:class:`~bdr_avalanche.training.FreshOptimizerMixin`: SGD
      by default, ``optimizer`` replaces it, an ``LRSchedulerPlugin``
      replaces the schedule). The first experience may use its own learning
      rate and batch size (``training.first_lr``, ``first_batch_size``).
    - :class:`~bdr_avalanche.LUCIRPlugin` (``lucir``) adds the less-forget
      and margin ranking losses; ``cwd`` adds
      :class:`~bdr_avalanche.CwDPlugin` and ``bdr`` adds
      :class:`~bdr_avalanche.BDRPlugin` (``True``: default
      hyper-parameters). The plugin instances are attributes (``lucir``,
      ``cwd``, ``bdr``, ``storage_policy``); extra ``plugins`` run after.
    - A :class:`~bdr_avalanche.plugins.FiniteLossGuard` stops training with
      an error when a loss term becomes NaN or infinite, or when the
      head's learnable scale falls to zero or below (checked every
      ``finite_check_every`` iterations and at the end of every epoch).
    - :meth:`state_dict` and :meth:`load_state_dict` save and restore
      everything that carries over from one experience to the next.
    - In a process group the model trains wrapped in
      ``DistributedDataParallel``, ``training.batch_size`` being the global
      batch
      (:class:`~bdr_avalanche.training.DistributedMixin`).
    - ``speed`` (:class:`~bdr_avalanche.training.Speed`): on-device batch
      augmentation, autocast, channels-last, ``torch.compile`` of the
      backbone (:class:`~bdr_avalanche.training.SpeedMixin`).

    Avalanche's conventions hold: ``strategy.eval(test_stream)`` works at
    any time, with accuracy 0 on the classes not learned yet (their logits
    are masked, as Avalanche's ``IncrementalClassifier`` does), so
    ``EvaluationPlugin``'s accuracy and forgetting are the standard ones,
    and periodic evaluation (``eval_every``, ``peval_mode``,
    ``train(..., eval_streams=...)``) and ``EarlyStoppingPlugin`` work.

    Class ids: LUCIR numbers classes in order of arrival, ``0..K-1``. A
    benchmark built that way (``class_ids_from_zero_from_first_exp=True``,
    or those of :mod:`bdr_avalanche.benchmarks`) is used as it is; any
    other is relabelled on the fly (:meth:`relabelled`,
    :mod:`bdr_avalanche.training.relabel`): ``mb_y``, the logits and
    class-wise metrics then use the ids in order of arrival,
    :attr:`class_order` maps them back, and accuracy and forgetting are
    unchanged. Every training experience must bring classes not learned
    before; a stream that reuses ids is refused before training. An
    experience's classes are its ``classes_in_this_experience``, else the
    distinct labels of its dataset's targets; one with neither is refused.

    :param backbone: the feature extractor (see above).
    :param feature_dim: the features' dimension (default: found from the
        backbone, see above).
    :param training: epochs, batch sizes, learning rates, schedule and
        memory size (default: ``TrainingParams()``, the paper's CIFAR-100
        values); kept as :attr:`training`.
    :param lucir: :class:`~bdr_avalanche.LUCIRPlugin`'s hyper-parameters.
    :param cwd: CwD's hyper-parameters, ``True`` for the defaults, or
        ``False`` (no CwD).
    :param bdr: BDR's hyper-parameters, ``True`` for the defaults, or
        ``False`` (no BDR).
    :param optimizer: the optimizer to use instead of the default SGD, or a
        factory of it.
    :param criterion: the classification loss (default: cross-entropy).
    :param peval_mode: ``"epoch"`` or ``"iteration"``: the unit of
        ``eval_every``, as in Avalanche's strategies.
    :param speed: the speed switches (default: all off).
    """

    PLUGIN_FAMILY: ClassVar[Family] = Family.LUCIR
    """How the plugins see this strategy
    (:func:`~bdr_avalanche.plugins._adapters.identify`)."""

    model: CosineIncrementalNet  # the template's attributes, as LUCIR sets them
    experience: CLExperience

    def __init__(
        self,
        *,
        backbone: nn.Module,
        feature_dim: int | None = None,
        training: TrainingParams | None = None,
        lucir: LUCIRParams | None = None,
        cwd: CwDParams | bool = False,
        bdr: BDRParams | bool = False,
        optimizer: Optimizer | OptimizerFactory | None = None,
        criterion: Callable[[Tensor, Tensor], Tensor] | None = None,
        device: str | torch.device | None = None,
        plugins: Sequence[BasePlugin] | None = None,
        evaluator: EvaluationPlugin | None = None,
        eval_every: int = -1,
        peval_mode: str = "epoch",
        finite_check_every: int = 20,
        speed: Speed | None = None,
    ) -> None:
        training = TrainingParams() if training is None else training
        speed = Speed() if speed is None else speed
        self.storage_policy = HerdingBuffer(training.mem_per_class)
        self.lucir = LUCIRPlugin(lucir)
        self.cwd = None if cwd is False else CwDPlugin(None if cwd is True else cwd)
        self.bdr = None if bdr is False else BDRPlugin(None if bdr is True else bdr)
        model = _cosine_model(backbone, feature_dim)
        self._classes = ClassRelabelling(self.relabelled)
        self._eval_width = 0
        self._classification_loss: Tensor | None = None
        speed.compile_backbone(backbone)
        own: list[BasePlugin] = [ConcatReplayPlugin(self.storage_policy), self.lucir]
        own += [p for p in (self.cwd, self.bdr) if p is not None]
        own.append(FiniteLossGuard(finite_check_every))
        super().__init__(
            model=model,
            optimizer=optimizer,
            training=training,
            criterion=nn.CrossEntropyLoss() if criterion is None else criterion,
            train_mb_size=training.batch_size,
            train_epochs=training.epochs,
            eval_mb_size=training.eval_batch_size,
            device=("cuda" if torch.cuda.is_available() else "cpu")
            if device is None
            else device,
            plugins=own + list(plugins or []),
            evaluator=evaluator if evaluator is not None else default_evaluator(),
            eval_every=eval_every,
            peval_mode=peval_mode,
            **speed.strategy_args(),
        )

    @property
    def class_order(self) -> list[int]:
        """The original class id of each class LUCIR has learned, in order
        of arrival: LUCIR's class ``i`` (its logit ``i``) is the
        benchmark's ``class_order[i]``."""
        return self._classes.class_order

    def relabelled(self, experience):
        """``experience`` with the class ids LUCIR uses: ``i`` for
        ``class_order[i]`` (:meth:`ClassRelabelling.relabelled
        <bdr_avalanche.training.relabel.ClassRelabelling.relabelled>`).
        A class not learned yet gets the id it will have if the training
        stream is learned in order; its logit is masked."""
        return self._classes.relabelled(experience)

    def state_dict(self) -> dict[str, Any]:
        """What training needs to go on after the last finished experience:
        the model (with its grown head), the herding memory, LUCIR's frozen
        previous model, BDR's statistics and the strategy's clock.

        The optimizer and its schedule are not included: every experience
        builds fresh ones, so at an experience boundary they carry nothing.
        Take the state between experiences (e.g. after ``train``/``eval``);
        the result holds only tensors and plain Python values, so
        ``torch.load(..., weights_only=True)`` reads it back.
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
        self._classes.relearn(train_stream[:seen])
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

    def _before_training_exp(self, **kwargs):
        self._classes.learn(self.experience)
        self.experience = self.relabelled(self.experience)
        first = self.training.first_batch_size
        if self.clock.train_exp_counter > 0 or first is None:
            first = self.training.batch_size
        self.train_mb_size = first
        super()._before_training_exp(**kwargs)

    def _before_eval_exp(self, **kwargs):
        self.experience = self.relabelled(self.experience)
        ids = experience_classes(self.experience)
        self._eval_width = ids[-1] + 1 if ids else 0
        super()._before_eval_exp(**kwargs)

    def forward(self):
        """The model's logits in float32. In evaluation the classes of the
        experience that the model has not learned yet get the head's
        ``mask_value`` (so they are never predicted), as with Avalanche's
        ``IncrementalClassifier``."""
        head = self.model.head
        if not self.is_training and head.num_classes == 0:
            # nothing learned yet (e.g. the evaluation before training)
            shape = (len(self.mb_x), self._eval_width)
            return torch.full(shape, head.mask_value, device=self.device)
        output = super().forward()
        missing = self._eval_width - output.shape[1]
        if not self.is_training and missing > 0:
            output = nn.functional.pad(output, (0, missing), value=head.mask_value)
        return output

    def criterion(self):
        loss = super().criterion()
        if self.is_training:
            self._classification_loss = loss.detach()
        return loss

    def loss_terms(self) -> dict[str, Tensor]:
        """The strategy's own loss term of the current step, for
        :class:`~bdr_avalanche.plugins.FiniteLossGuard`: the classification
        loss (with BDR's prior when active); the plugins report theirs."""
        if self._classification_loss is None:
            return {}
        return {"classification": self._classification_loss}


def _cosine_model(backbone: nn.Module, feature_dim: int | None) -> nn.Module:
    """``backbone`` without its last ReLU, under a cosine head."""
    model = CosineIncrementalNet(backbone, feature_dim, mask_unseen=False)
    if not remove_last_relu(backbone):
        warnings.warn(
            f"LUCIR removes the backbone's last ReLU, but does not know where "
            f"{type(backbone).__name__} has one: any final ReLU was kept, so "
            "its features may be non-negative. Give it a `last_relu` "
            "attribute (see bdr_avalanche.models) or end it without a ReLU.",
            stacklevel=3,
        )
    return model
