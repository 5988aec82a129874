"""Template mixins for any Avalanche ``SupervisedTemplate``, in the style
of Avalanche's ``training/templates``: speed, a fresh optimizer per
experience, data-parallel training, and class ids in order of arrival.

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
- :class:`FreshOptimizerMixin` (:mod:`.fresh_optimizer_mixin`): the
  optimizer reset and a fresh ``MultiStepLR`` at every experience.
- :class:`DistributedMixin` (:mod:`.distributed_mixin`):
  ``DistributedDataParallel`` training, sharded training loader, whole
  evaluation stream in every process.
- :class:`ClassRelabelling` (:mod:`.relabel`): class ids in order of
  arrival for any stream.

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
    from .distributed_mixin import DistributedMixin
    from .fresh_optimizer_mixin import FreshOptimizerMixin
    from .input_mixin import FastInputMixin
    from .mixin_protocol import SpeedStrategyProtocol
    from .relabel import ClassRelabelling
    from .speed import Speed, SpeedMixin

__all__ = [
    "AutocastMixin",
    "ChannelsLastMixin",
    "ClassRelabelling",
    "DistributedMixin",
    "FastInputMixin",
    "FreshOptimizerMixin",
    "Speed",
    "SpeedMixin",
    "SpeedStrategyProtocol",
]

# Imported on first use (PEP 562): the config reads .support without
# importing torch and Avalanche.
_LAZY = {
    "AutocastMixin": ".autocast_mixin",
    "ChannelsLastMixin": ".channels_last_mixin",
    "ClassRelabelling": ".relabel",
    "DistributedMixin": ".distributed_mixin",
    "FastInputMixin": ".input_mixin",
    "FreshOptimizerMixin": ".fresh_optimizer_mixin",
    "Speed": ".speed",
    "SpeedMixin": ".speed",
    "SpeedStrategyProtocol": ".mixin_protocol",
}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
