"""Channels-last memory format for any Avalanche template."""

from __future__ import annotations

import torch

from .mixin_protocol import SpeedStrategyProtocol

__all__ = ["ChannelsLastMixin"]


class ChannelsLastMixin(SpeedStrategyProtocol):
    """Stores the model's 4-d parameters channels-last (once, when the
    strategy is built: the layers a model grows later are linear) and
    gives :class:`~bdr_avalanche.training.FastInputMixin`'s device batches
    that format. Batches of the template's own data loader are left as
    they come (the first convolution converts them).

    :param channels_last: use ``torch.channels_last``; ``False`` changes
        nothing.
    """

    def __init__(self, *, channels_last: bool = False, **kwargs) -> None:
        self.memory_format = (
            torch.channels_last if channels_last else torch.contiguous_format
        )
        super().__init__(**kwargs)
        if channels_last:
            self.model.to(memory_format=self.memory_format)
