"""Checkpoints between experiences, written atomically, read safely.

A run's checkpoint is one file holding only tensors and plain Python values
(numbers, strings, lists, dicts), so it is read back with
``torch.load(..., weights_only=True)``: loading it runs no pickled code, and
it works with the torch releases that make ``weights_only=True`` the
default. It is written to a temporary file in the same folder, flushed to
disk and renamed over the previous one, so a crash while writing leaves the
last good checkpoint in place.

The runner stores, after every experience: the strategy's
``state_dict()`` (see :meth:`bdr_avalanche.LUCIR.state_dict`), the random
number generators (:func:`rng_state`), the state of Avalanche's forgetting
metrics (:func:`evaluator_state`), the results so far and the loggers'
identifiers.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from avalanche.evaluation.metrics.forgetting_bwt import Forgetting
from avalanche.training.plugins import EvaluationPlugin

from ._atomic import atomic_write

__all__ = [
    "CheckpointError",
    "evaluator_state",
    "load_checkpoint",
    "load_evaluator_state",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not fit the run."""


def rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's global generators (and
    CUDA's when available), as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators saved by :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            n["kind"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def evaluator_state(evaluator: EvaluationPlugin) -> list[dict[str, Any] | None]:
    """Per metric of ``evaluator``, the first and last accuracies that
    Avalanche's forgetting metrics compare (``None`` for other metrics,
    which start afresh at every evaluation)."""
    return [
        {"initial": dict(f.initial), "last": dict(f.last)}
        if isinstance(f := getattr(metric, "forgetting", None), Forgetting)
        else None
        for metric in evaluator.metrics
    ]


def load_evaluator_state(
    evaluator: EvaluationPlugin, state: list[dict[str, Any] | None]
) -> None:
    """Restore :func:`evaluator_state` into an evaluator built with the same
    metrics."""
    if len(state) != len(evaluator.metrics):
        raise CheckpointError(
            f"the checkpoint has the state of {len(state)} metrics, the evaluator "
            f"has {len(evaluator.metrics)}"
        )
    for metric, saved in zip(evaluator.metrics, state, strict=True):
        if saved is not None:
            metric.forgetting.initial = dict(saved["initial"])
            metric.forgetting.last = dict(saved["last"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> bool:
    """Write ``state`` to ``path`` atomically.

    On failure (full disk, permissions…) the error is logged, the
    temporary file removed and the previous checkpoint kept: the run goes
    on, and a later resume starts after the last experience saved.

    :return: whether the checkpoint was written.
    """
    try:
        with atomic_write(path, "wb") as file:
            torch.save(state, file)
    except (OSError, RuntimeError) as err:
        log.error(
            "could not write the checkpoint %s (%s); keeping the last one", path, err
        )
        return False
    return True


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on the
    CPU) with ``weights_only=True``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise CheckpointError(
            f"{path}: cannot read the checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); delete it or pass "
            "--overwrite to start the run again"
        ) from err
