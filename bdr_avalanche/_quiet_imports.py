"""Silence the warnings that importing Avalanche raises in packages we never use.

Avalanche imports ``qpsolvers`` for its GEM plugin, and ``qpsolvers`` warns
on import when no QP solver is installed, or imports ``jaxopt``, which warns
that it is unmaintained. Neither concerns a user of this package. A global
filter would also hide them from the user's own code, so instead
:func:`install` puts a finder in front of :data:`sys.meta_path` that runs
*only the import of* ``qpsolvers`` under :func:`warnings.catch_warnings`
with these filters; the finder removes itself at that import. If the user
imported ``qpsolvers`` before this package, nothing is changed.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

__all__ = ["IMPORT_WARNINGS", "install"]

IMPORT_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    # qpsolvers imports jaxopt for one of its solvers; jaxopt warns on import
    ("JAXopt is no longer maintained", DeprecationWarning, "jaxopt"),
    # qpsolvers without any solver installed (only Avalanche's GEM needs one)
    ("no QP solver found", UserWarning, "qpsolvers"),
)
"""(message, category, module) of each warning silenced during the import."""

_MODULE = "qpsolvers"


class _QuietLoader(importlib.abc.Loader):
    """Runs another loader's ``exec_module`` with :data:`IMPORT_WARNINGS`
    ignored."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with warnings.catch_warnings():
            for message, category, source in IMPORT_WARNINGS:
                warnings.filterwarnings("ignore", message, category, source)
            self._loader.exec_module(module)

    def __getattr__(self, name: str) -> object:
        # get_source, get_resource_reader, ...: those of the wrapped loader
        return getattr(self._loader, name)


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds ``qpsolvers`` with the other finders and wraps its loader."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install() -> None:
    """Quiet the first import of ``qpsolvers``, unless it is already done."""
    if _MODULE in sys.modules:
        return
    if not any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietFinder())
