"""BDR, LUCIR and CwD for class-incremental learning with Avalanche.

Plugins (:class:`LUCIRPlugin`, :class:`CwDPlugin`, :class:`BDRPlugin`,
:class:`ConcatReplayPlugin`), the :class:`HerdingBuffer` storage policy and
the :class:`LUCIR` strategy. The math is in :mod:`bdr_avalanche.functional`.
"""

from . import functional, models
from .plugins import BDRPlugin, ConcatReplayPlugin, CwDPlugin, LUCIRPlugin
from .storage import HerdingBuffer
from .strategy import LUCIR

__all__ = [
    "BDRPlugin",
    "ConcatReplayPlugin",
    "CwDPlugin",
    "HerdingBuffer",
    "LUCIR",
    "LUCIRPlugin",
    "functional",
    "models",
]

__version__ = "0.1.0"
