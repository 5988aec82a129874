"""Speed for any Avalanche ``SupervisedTemplate``: template mixins in the
style of Avalanche's ``training/templates``.

- :class:`FastInputMixin` (:mod:`.input_mixin`): training batches from
  images kept on the device and augmented there.
- :class:`AutocastMixin` (:mod:`.autocast_mixin`): the forward pass under
  ``torch.autocast``.
- :class:`ChannelsLastMixin` (:mod:`.channels_last_mixin`): channels-last
  model and device batches.
- :class:`SpeedMixin` and the :class:`Speed` settings (:mod:`.speed`): the
  three together, and ``torch.compile`` of the backbone.
- :class:`SpeedStrategyProtocol` (:mod:`.mixin_protocol`): what the mixins
  need from the template.
- :mod:`.support`: which methods take which switch, and why not.

``LUCIR`` is built from them, and so are the baselines of
:func:`~bdr_avalanche.baselines.make_baseline` (``speed=``), so that a
comparison feeds every method through the same input path::

    class FastNaive(SpeedMixin, Naive):
        pass

    strategy = FastNaive(model=..., optimizer=..., batch_augment=BatchAugment.cifar(),
                         amp_dtype=torch.bfloat16, channels_last=True)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:
    from .autocast_mixin import AutocastMixin
    from .channels_last_mixin import ChannelsLastMixin
    from .input_mixin import FastInputMixin
    from .mixin_protocol import SpeedStrategyProtocol
    from .speed import Speed, SpeedMixin

__all__ = [
    "AutocastMixin",
    "ChannelsLastMixin",
    "FastInputMixin",
    "Speed",
    "SpeedMixin",
    "SpeedStrategyProtocol",
]

# Imported on first use (PEP 562): the config reads .support without
# importing torch and Avalanche.
_LAZY = {
    "AutocastMixin": ".autocast_mixin",
    "ChannelsLastMixin": ".channels_last_mixin",
    "FastInputMixin": ".input_mixin",
    "Speed": ".speed",
    "SpeedMixin": ".speed",
    "SpeedStrategyProtocol": ".mixin_protocol",
}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
