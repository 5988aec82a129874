"""What a ``torchrun`` job can run, checked from its environment alone.

Under ``torchrun`` every process parses the command line; a job that
cannot run is refused here, before torch and Avalanche are imported, so
that each process exits at once with the reason instead of after loading
them. This module imports neither.
"""

from __future__ import annotations

import os

from ..methods import parse_method
from .config import ConfigError, ExperimentConfig

__all__ = ["check_launch", "torchrun_world_size"]


def torchrun_world_size() -> int:
    """The job's number of processes from ``torchrun``'s ``WORLD_SIZE``
    (1 outside ``torchrun``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_launch(cfg: ExperimentConfig, command: str = "run") -> None:
    """Raise :class:`ConfigError` when ``command`` with ``cfg`` cannot run
    under ``torchrun``: a comparison, a method whose base is not ``lucir``
    (Avalanche's strategies do not train with DDP), or a batch size that
    does not split over the processes. Nothing outside ``torchrun``."""
    world = torchrun_world_size()
    if world <= 1:
        return
    if command == "compare":
        raise ConfigError(
            "compare cannot run under torchrun (Avalanche's strategies do not "
            "train with DDP); start each of our methods with `run`"
        )
    if not parse_method(cfg.method).ours:
        raise ConfigError(
            f"method={cfg.method!r} cannot run under torchrun; distributed "
            "training supports the lucir base (lucir, lucir+cwd, lucir+cwd+bdr)"
        )
    for key in ("batch_size", "first_batch_size"):
        size = getattr(cfg, key)
        if size is not None and size % world:
            raise ConfigError(
                f"the global {key} {size} does not split over {world} processes; "
                f"use a multiple of {world}"
            )
