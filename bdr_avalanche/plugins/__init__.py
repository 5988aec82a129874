"""Avalanche plugins for LUCIR, CwD, BDR and concatenated replay."""

from .bdr import BDRPlugin
from .compat import IncompatibleStrategyError
from .cwd import CwDPlugin
from .guard import FiniteLossGuard, NonFiniteLossError, NonPositiveScaleError
from .lucir import LUCIRPlugin
from .replay import ConcatReplayPlugin

__all__ = [
    "BDRPlugin",
    "ConcatReplayPlugin",
    "CwDPlugin",
    "FiniteLossGuard",
    "IncompatibleStrategyError",
    "LUCIRPlugin",
    "NonFiniteLossError",
    "NonPositiveScaleError",
]
