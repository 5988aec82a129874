"""What the speed mixins need from the template they are mixed into.

In the style of Avalanche's ``training/templates/strategy_mixin_protocol.py``:
each mixin subclasses :class:`SpeedStrategyProtocol`, so a type checker
knows which attributes and methods of the template it may use. Avalanche's
``SupervisedTemplate`` provides all of them; the three attributes the mixins
set themselves (``batch_augment``, ``amp_dtype``, ``memory_format``) are
declared here so that each mixin can read the others'.

The methods are declared for type checkers only: a mixin comes before the
template in the method resolution order, and so would this protocol, whose
empty method bodies would then hide the template's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import torch
from avalanche.training.templates.strategy_mixin_protocol import (
    SupervisedStrategyProtocol,
)
from torch import Tensor, nn

__all__ = ["SpeedStrategyProtocol"]


class SpeedStrategyProtocol(SupervisedStrategyProtocol[Any, Any, Tensor], Protocol):
    """A supervised template as the speed mixins see it."""

    train_mb_size: int
    eval_mb_size: int
    adapted_dataset: Any
    """The current experience's dataset, as the template adapted it."""

    batch_augment: nn.Module | None
    """:class:`~bdr_avalanche.training.FastInputMixin`'s on-device training
    augmentation; ``None``: the template's own data loader."""
    amp_dtype: torch.dtype | None
    """:class:`~bdr_avalanche.training.AutocastMixin`'s autocast dtype;
    ``None``: full precision."""
    memory_format: torch.memory_format
    """:class:`~bdr_avalanche.training.ChannelsLastMixin`'s memory format of
    the model and of the device batches."""

    if TYPE_CHECKING:
        # callables rather than methods: the mixins call them through
        # super(), which mypy refuses for a protocol method's empty body
        make_train_dataloader: Callable[..., None]
        _before_training_exp: Callable[..., None]
