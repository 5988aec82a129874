"""A fresh optimizer and learning-rate schedule at every experience, for
any Avalanche template."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from avalanche.training.plugins import LRSchedulerPlugin
from avalanche.training.templates.strategy_mixin_protocol import (
    SupervisedStrategyProtocol,
)
from torch import Tensor, nn
from torch.optim import SGD, Optimizer
from torch.optim.lr_scheduler import MultiStepLR

from ..params import TrainingParams, hparams_of

__all__ = ["FreshOptimizerMixin", "FreshOptimizerProtocol", "OptimizerFactory"]

AVALANCHE_PRIVATE = (
    "avalanche.training.templates.SupervisedTemplate._after_training_epoch",
)
"""The template hook this mixin extends (a protected Avalanche name, checked by
``tests/test_avalanche_private.py``)."""

OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]
"""Builds an optimizer over the given parameters, e.g.
``functools.partial(torch.optim.Adam, lr=1e-3)``."""

_SGD_FIELDS = ("lr", "momentum", "weight_decay")


class FreshOptimizerProtocol(SupervisedStrategyProtocol[Any, Any, Tensor], Protocol):
    """A supervised template as :class:`FreshOptimizerMixin` sees it."""

    plugins: list[Any]
    clock: Any

    if TYPE_CHECKING:

        def model_adaptation(self, model: nn.Module | None = None) -> nn.Module: ...

        # a callable rather than a method: the mixin calls it through
        # super(), which mypy refuses for a protocol method's empty body
        _after_training_epoch: Callable[..., None]


class FreshOptimizerMixin(FreshOptimizerProtocol):
    """Resets ``self.optimizer`` at the start of every experience, after the
    model has grown: state cleared, one parameter group over the model's
    trainable parameters, the optimizer's initial hyper-parameters and the
    experience's learning rate (``training.first_lr`` in the first
    experience when set, else ``training.lr``); then a fresh ``MultiStepLR``
    (``training.milestones``, ``training.lr_decay``) stepped at the end of
    every epoch. ``self.optimizer`` stays one object for the strategy's life.

    ``optimizer`` replaces the default SGD (``training.lr``, ``momentum``,
    ``weight_decay``): an optimizer (its parameters are replaced; its
    initial learning rate is that of the later experiences) or a factory
    called with the model's parameters, e.g. ``functools.partial(Adam,
    lr=1e-3)``; the SGD fields of ``training`` must then be left at their
    defaults. An ``LRSchedulerPlugin`` among the plugins replaces the
    ``MultiStepLR``; its scheduler must be built on ``self.optimizer`` and
    ``milestones``/``lr_decay`` left at their defaults.

    Mix it in before the template: ``class Fresh(FreshOptimizerMixin,
    Naive)``, built with ``model=`` and without ``optimizer`` positional.

    :param training: the learning rates and schedule (default:
        ``TrainingParams()``); kept as ``self.training``.
    :param optimizer: the optimizer, or its factory (default: SGD).
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        optimizer: Optimizer | OptimizerFactory | None = None,
        training: TrainingParams | None = None,
        **kwargs,
    ) -> None:
        self.training = TrainingParams() if training is None else training
        opt = self._built_optimizer(optimizer, model)
        group = opt.param_groups[0]
        self._param_group = {
            k: v for k, v in group.items() if k not in ("params", "initial_lr")
        }
        # the learning rate each experience starts from: the optimizer's
        # own (before any schedule built on it), training.lr for the SGD
        self._lr = float(group.get("initial_lr", group["lr"]))
        self.scheduler: MultiStepLR | None = None
        super().__init__(model=model, optimizer=opt, **kwargs)
        self._check_lr_schedulers()

    def _built_optimizer(
        self, optimizer: Optimizer | OptimizerFactory | None, model: nn.Module
    ) -> Optimizer:
        """The optimizer ``optimizer`` stands for, with one parameter group."""
        training = self.training
        if optimizer is None:
            return SGD(
                model.parameters(),
                lr=training.lr,
                momentum=training.momentum,
                weight_decay=training.weight_decay,
            )
        defaults = hparams_of(TrainingParams)
        changed = [
            n for n in _SGD_FIELDS if getattr(training, n) != defaults[n].default
        ]
        if changed:
            raise ValueError(
                f"{', '.join(changed)} set the default SGD, which optimizer= "
                "replaces: set them on the optimizer (or its factory) instead"
            )
        if isinstance(optimizer, Optimizer):
            opt = optimizer
        else:
            if not callable(optimizer):
                raise TypeError(
                    "optimizer must be a torch.optim.Optimizer or a callable that "
                    f"builds one from parameters, got {type(optimizer).__name__}"
                )
            opt = optimizer(model.parameters())
            if not isinstance(opt, Optimizer):
                raise TypeError(
                    "optimizer must build a torch.optim.Optimizer when called with "
                    f"the model's parameters; it returned {type(opt).__name__}"
                )
        if len(opt.param_groups) != 1:
            raise ValueError(
                f"{type(self).__name__} resets the optimizer over the model's "
                "trainable parameters at every experience and needs one parameter "
                f"group; {type(opt).__name__} has {len(opt.param_groups)}"
            )
        return opt

    def _check_lr_schedulers(self) -> list[LRSchedulerPlugin]:
        """The plugins that are ``LRSchedulerPlugin`` instances, checked."""
        name = type(self).__name__
        found = [p for p in self.plugins if isinstance(p, LRSchedulerPlugin)]
        for plugin in found:
            if plugin.scheduler.optimizer is not self.optimizer:
                raise ValueError(
                    "the LRSchedulerPlugin's scheduler is built on an optimizer "
                    f"{name} does not use: build it on strategy.optimizer ({name} "
                    "keeps that optimizer and resets it at every experience), or "
                    f"pass your optimizer as {name}(optimizer=...)"
                )
        defaults = hparams_of(TrainingParams)
        if found and (
            self.training.milestones != list(defaults["milestones"].default)
            or self.training.lr_decay != defaults["lr_decay"].default
        ):
            raise ValueError(
                f"milestones and lr_decay set {name}'s own MultiStepLR schedule, "
                "which the LRSchedulerPlugin replaces: leave them out"
            )
        return found

    def check_model_and_optimizer(self, **kwargs):
        """Grow the model, then reset the optimizer (:meth:`make_optimizer`)."""
        self.model = self.model_adaptation()
        self.make_optimizer(**kwargs)

    def make_optimizer(self, **kwargs):
        """Reset ``self.optimizer`` as a fresh one for this experience, then
        a fresh ``MultiStepLR`` unless an ``LRSchedulerPlugin`` schedules
        the learning rate."""
        schedulers = self._check_lr_schedulers()
        lr = self._lr
        if self.clock.train_exp_counter == 0 and self.training.first_lr is not None:
            lr = self.training.first_lr
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = self.optimizer
        optimizer.state.clear()
        optimizer.param_groups.clear()
        optimizer.add_param_group({**self._param_group, "params": params, "lr": lr})
        self.scheduler = None
        if not schedulers:
            self.scheduler = MultiStepLR(
                optimizer, self.training.milestones, self.training.lr_decay
            )

    def _after_training_epoch(self, **kwargs):
        if self.scheduler is not None:
            self.scheduler.step()
        super()._after_training_epoch(**kwargs)
