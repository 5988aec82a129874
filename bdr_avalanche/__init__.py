"""BDR, LUCIR and CwD for class-incremental learning with Avalanche.

Plugins (:class:`LUCIRPlugin`, :class:`CwDPlugin`, :class:`BDRPlugin`,
:class:`ConcatReplayPlugin`), the :class:`HerdingBuffer` storage policy and
the :class:`LUCIR` strategy. The math is in :mod:`bdr_avalanche.functional`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import _quiet_imports

if TYPE_CHECKING:
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

_quiet_imports.install()

# The names above are imported on first use (PEP 562), so that importing a
# light submodule (the command line's parser, the config) does not import
# torch and Avalanche. Name -> module that defines it (None: a submodule).
_LAZY: dict[str, str | None] = {
    "BDRPlugin": ".plugins",
    "ConcatReplayPlugin": ".plugins",
    "CwDPlugin": ".plugins",
    "LUCIRPlugin": ".plugins",
    "HerdingBuffer": ".storage",
    "LUCIR": ".strategy",
    "functional": None,
    "models": None,
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    source = _LAZY[name]
    module = importlib.import_module(source or f".{name}", __name__)
    value = module if source is None else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
