"""The speed switches together: :class:`SpeedMixin` for a template,
:class:`Speed` for the settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .autocast_mixin import AutocastMixin
from .channels_last_mixin import ChannelsLastMixin
from .input_mixin import FastInputMixin

__all__ = ["Speed", "SpeedMixin"]


class SpeedMixin(FastInputMixin, AutocastMixin, ChannelsLastMixin):
    """:class:`FastInputMixin`, :class:`AutocastMixin` and
    :class:`ChannelsLastMixin` in one: ``class FastNaive(SpeedMixin, Naive)``
    takes ``batch_augment``, ``amp_dtype`` and ``channels_last`` besides
    ``Naive``'s arguments (all off by default)."""


@dataclass(frozen=True)
class Speed:
    """The speed switches of a strategy; all off by default.

    :param batch_augment: the fast input path's on-device augmentation
        (:class:`FastInputMixin`); ``None``: the template's data loader.
    :param amp_dtype: the autocast dtype (:class:`AutocastMixin`).
    :param channels_last: channels-last model and device batches
        (:class:`ChannelsLastMixin`).
    :param compile: ``torch.compile`` the backbone (in place, with
        ``nn.Module.compile``; see :meth:`compile_backbone`).
    """

    batch_augment: nn.Module | None = None
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    compile: bool = False

    @property
    def switches(self) -> tuple[str, ...]:
        """The switches that are on, by their config keys (those of
        :data:`~bdr_avalanche.training.support.SWITCHES`)."""
        on = {
            "fast_input": self.batch_augment is not None,
            "amp": self.amp_dtype is not None,
            "channels_last": self.channels_last,
            "compile": self.compile,
        }
        return tuple(name for name, value in on.items() if value)

    def strategy_args(self) -> dict[str, Any]:
        """The keyword arguments of a template with :class:`SpeedMixin`."""
        return {
            "batch_augment": self.batch_augment,
            "amp_dtype": self.amp_dtype,
            "channels_last": self.channels_last,
        }

    def compile_backbone(self, backbone: nn.Module) -> None:
        """Compile ``backbone`` in place when :attr:`compile` is on (a deep
        copy, e.g. a teacher, runs eagerly)."""
        if self.compile:
            backbone.compile()
