"""LUCIR's less-forget and margin-ranking losses (Hou et al., CVPR 2019)."""

from __future__ import annotations

import contextlib
import math
import weakref
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

import torch
from avalanche.benchmarks.scenarios.online import OnlineCLExperience
from avalanche.training.plugins import SupervisedPlugin
from torch import Tensor, nn

from .._utils import FeatureRecorder, frozen_copy, get_submodule
from ..distributed import is_distributed, sum_over_ranks, world_size
from ..functional import less_forget_loss, margin_ranking_loss
from ..models.cosine import experience_classes
from ..params import LUCIRParams, document_hparams
from ._adapters import StepRecorder, StrategyAdapter
from .compat import check_model, check_strategy

if TYPE_CHECKING:
    from avalanche.benchmarks.scenarios import CLExperience
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["LUCIRPlugin"]


class _CosineHead(Protocol):
    """What LUCIR reads of the model's cosine head."""

    @property
    def sigma(self) -> Tensor: ...

    @property
    def num_classes(self) -> int: ...


# Avalanche is untyped: mypy checks the keyword against object.__init_subclass__
@document_hparams
class LUCIRPlugin(SupervisedPlugin, supports_distributed=True):  # type: ignore[call-arg]
    r"""Adds LUCIR's two distillation terms to the loss of every experience
    after the first:

    .. math::
        L = L_{task}
          + \lambda\,\frac{1}{N}\sum_i\big(1 - \cos(f(x_i), f_{old}(x_i))\big)
          + w_{mr}\,L_{mr}, \qquad
        \lambda = \lambda_{base}\sqrt{K_{old} / K_{new}}

    where :math:`f_{old}` is a frozen copy of the model taken at the end of
    the previous experience, and :math:`L_{mr}` is the margin ranking loss
    of :func:`~bdr_avalanche.functional.margin_ranking_loss` on the cosine
    scores (logits divided by the head's scale ``sigma``).

    The model must have a cosine head (``head_layer``) with ``sigma`` and
    ``num_classes``, such as :class:`~bdr_avalanche.models.CosineIncrementalClassifier`
    (:class:`~bdr_avalanche.models.CosineIncrementalNet` is such a model),
    and class ids in order of arrival. The rest of LUCIR (the cosine head,
    frozen old rows, no last ReLU, replay) is the model's and the
    strategy's job: see :class:`~bdr_avalanche.LUCIR`. Both terms act on
    every sample a step trains on (ER-ACE's buffer batch included);
    :mod:`~bdr_avalanche.plugins.compat` lists the strategies where LUCIR
    applies.

    Configuration errors are raised before the first training step: a
    strategy the plugin does not apply to
    (:class:`~bdr_avalanche.plugins.compat.IncompatibleStrategyError`), a
    missing ``feature_layer`` or ``head_layer`` (``ValueError``), a head
    without ``sigma`` (``TypeError``) and, as far as the experience's
    stream tells, class ids out of arrival order or a ``k`` larger than
    the new classes of a later experience (``ValueError``). An
    experience's classes are its ``classes_in_this_experience``, else its
    dataset's targets (:func:`~bdr_avalanche.models.cosine.experience_classes`).

    The plugin's state (the previous model and its number of classes)
    belongs to the strategy that trained it. Added to another strategy whose
    model has learned no class yet (a new run), the plugin starts afresh;
    added to one whose model has, it refuses, as that strategy would distil
    from the other's model (``ValueError``): give each strategy its own
    plugin.
    A state restored by :meth:`load_state_dict` goes to the next strategy
    that trains.

    The hyper-parameters are a :class:`~bdr_avalanche.params.LUCIRParams`
    (``params``), or its fields as keyword arguments
    (``LUCIRPlugin(lambda_base=10)``); the plugin keeps them as
    :attr:`params`.

    :param params: the hyper-parameters as one record.
    :param feature_layer: submodule whose output is the feature vector.
    :param head_layer: submodule that is the cosine classifier.
    """

    PARAMS: ClassVar[type[LUCIRParams]] = LUCIRParams
    """The record of the hyper-parameters (default, help text and range)."""

    def __init__(
        self,
        params: LUCIRParams | None = None,
        /,
        *,
        feature_layer: str = "backbone",
        head_layer: str = "head",
        **hparams: float,
    ) -> None:
        super().__init__()
        self.params = LUCIRParams.build(params, **hparams)
        """The hyper-parameters."""
        self.head_layer = head_layer
        self.old_model: nn.Module | None = None
        self.num_old_classes = 0
        self.lambda_: float = 0.0
        """Adaptive less-forget weight of the current experience."""
        self.last_losses: dict[str, Tensor] = {}
        """The last step's ``less_forget`` and ``margin_ranking`` terms."""
        self._features = StepRecorder(feature_layer)
        self._old_features = FeatureRecorder(feature_layer)
        self._head: _CosineHead | None = None
        self._adapter = StrategyAdapter()
        self._owner: weakref.ref | None = None  # the strategy the state is of

    def before_training(self, strategy: SupervisedTemplate, **kwargs):
        """Refuse a strategy or model LUCIR cannot work with, before any
        training step; start afresh in a new strategy."""
        self._adapter = check_strategy("LUCIRPlugin", strategy)
        check_model("LUCIRPlugin", strategy.model, self._features.layer_name)
        head = self._find_head(strategy.model)
        self._bind(strategy, head)

    def _bind(self, strategy: SupervisedTemplate, head: _CosineHead) -> None:
        """Make ``strategy`` the owner of the state: forget the state of
        another strategy when ``strategy``'s model has learned no class yet
        (a new run), refuse otherwise."""
        owner = None if self._owner is None else self._owner()
        if self._owner is not None and owner is not strategy:
            if self.old_model is not None and head.num_classes > 0:
                raise ValueError(
                    "this LUCIRPlugin holds the previous model of another "
                    f"strategy's training ({self.num_old_classes} classes), and this "
                    f"strategy's model has learned {head.num_classes} classes "
                    "already: it would distil from the other's model. Give each "
                    "strategy its own LUCIRPlugin (or move a state with "
                    "state_dict()/load_state_dict())"
                )
            self._reset()
        self._owner = weakref.ref(strategy)

    def _reset(self) -> None:
        """Forget the previous model: the state of a plugin never trained."""
        self._features.detach()
        self._old_features.detach()
        self.old_model = None
        self.num_old_classes = 0
        self.lambda_ = 0.0
        self.last_losses = {}
        self._head = None

    def __getstate__(self) -> dict[str, Any]:
        # a weak reference does not pickle: an unpickled plugin's state goes
        # to the next strategy that trains, as after load_state_dict
        state = self.__dict__.copy()
        state["_owner"] = None
        return state

    def before_training_exp(self, strategy: SupervisedTemplate, **kwargs):
        if self._adapter.family is None:  # not started by strategy.train
            self.before_training(strategy)
        if isinstance(strategy.experience, OnlineCLExperience):
            raise ValueError(
                "LUCIRPlugin does not train on online streams: it takes the "
                "previous model at the end of each experience, and an online "
                "stream cuts experiences into mini-experiences; train it on the "
                "stream before split_online_stream"
            )
        self._check_stream(strategy.experience)
        if self.old_model is None:
            return
        head = self._head = self._find_head(strategy.model)
        num_new = head.num_classes - self.num_old_classes
        self._check_new_classes(num_new, "this experience")
        share = math.sqrt(self.num_old_classes / num_new)
        self.lambda_ = self.params.lambda_base * share
        self._features.attach(strategy.model)
        self._old_features.attach(self.old_model.to(strategy.device))

    def _check_new_classes(self, num_new: int, where: str) -> None:
        if num_new < 1:
            raise ValueError(f"LUCIR: {where} brings no new class")
        if self.params.k > num_new:
            raise ValueError(
                f"k must be in [1, {num_new}] (the number of new classes of "
                f"{where}), got {self.params.k}"
            )

    def _check_stream(self, experience: CLExperience) -> None:
        """Class ids in order of arrival and ``k`` at most the new classes,
        for this experience and the later ones of its stream, when the
        stream says which classes they hold."""
        try:
            stream = list(experience.origin_stream)
            current = experience.current_experience
            classes = [
                (e.current_experience, set(experience_classes(e))) for e in stream
            ]
        except (AttributeError, ValueError, TypeError):
            return  # the stream does not tell
        seen = self.num_old_classes
        for index, in_exp in classes:
            if index < current:
                continue
            new = sorted(c for c in in_exp if c >= seen)
            if new != list(range(seen, seen + len(new))):
                raise ValueError(
                    "LUCIRPlugin needs class ids in order of arrival (experience t "
                    f"brings ids [K_old, K)): experience {index} of the stream "
                    f"brings {new} after {seen} classes. Build the benchmark with "
                    "class_ids_from_zero_from_first_exp=True"
                )
            if self.old_model is not None or index > current:
                self._check_new_classes(len(new), f"experience {index}")
            seen += len(new)

    def before_forward(self, strategy: SupervisedTemplate, **kwargs):
        self._features.start_step()

    def before_backward(self, strategy: SupervisedTemplate, **kwargs):
        if self.old_model is None:
            return
        step = self._adapter.step(strategy, self._features)
        labels = step.all_labels
        autocast = getattr(strategy, "autocast", contextlib.nullcontext)
        with torch.no_grad(), autocast():
            self.old_model(step.all_inputs)
        features = step.all_features
        assert self._head is not None  # set with a previous model, before the epochs
        lf = self.lambda_ * less_forget_loss(features, self._old_features.get())
        scores = step.all_outputs / self._head.sigma
        p = self.params
        mr = p.mr_weight * margin_ranking_loss(
            scores, labels, self.num_old_classes, p.margin, p.k
        )
        if is_distributed():
            # average over the old samples of the global batch: DDP's mean of
            # world * S_r / (k * C) over ranks is sum_r S_r / (k * C)
            old = (labels < self.num_old_classes).float().sum()
            mr = mr * world_size() * old / sum_over_ranks(old).clamp_min(1.0)
        self.last_losses = {"less_forget": lf.detach(), "margin_ranking": mr.detach()}
        strategy.loss += lf + mr

    def loss_terms(self) -> dict[str, Tensor]:
        """The last step's ``less_forget`` and ``margin_ranking`` terms
        once there is a previous model, for
        :class:`~bdr_avalanche.plugins.FiniteLossGuard`."""
        return {} if self.old_model is None else dict(self.last_losses)

    def after_training_exp(self, strategy: SupervisedTemplate, **kwargs):
        self._features.detach()
        self._old_features.detach()
        self.old_model = frozen_copy(strategy.model)
        self.num_old_classes = self._find_head(strategy.model).num_classes

    def state_dict(self) -> dict[str, Any]:
        """The frozen previous model's weights and its number of classes."""
        old = None if self.old_model is None else self.old_model.state_dict()
        return {"num_old_classes": self.num_old_classes, "old_model": old}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        """Restore a :meth:`state_dict`; ``model`` is the current model,
        already grown to the previous model's classes (its copy receives
        the saved weights). The state goes to the next strategy that
        trains (see the class's description)."""
        self._reset()
        self._owner = None
        self.num_old_classes = int(state["num_old_classes"])
        self.old_model = None
        if state["old_model"] is not None:
            self.old_model = frozen_copy(model)
            self.old_model.load_state_dict(state["old_model"])

    def _find_head(self, model: nn.Module) -> _CosineHead:
        head = get_submodule(model, self.head_layer, "head_layer")
        if not hasattr(head, "sigma") or not hasattr(head, "num_classes"):
            raise TypeError(
                f"LUCIRPlugin needs a cosine head with `sigma` and `num_classes` at "
                f"{self.head_layer!r}, got {type(head).__name__}"
            )
        return cast(_CosineHead, head)  # has both, checked above
