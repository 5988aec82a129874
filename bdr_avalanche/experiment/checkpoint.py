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
metrics (:func:`evaluator_state`), the results so far, the time each
experience took, the loggers' identifiers and, under ``base_model``, what
the run did with the base-model cache (:mod:`.base_cache`), so that a
resumed run still reports it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from avalanche.evaluation.metrics.forgetting_bwt import Forgetting
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EvaluationPlugin

from .. import distributed
from ..metrics import DiagnosticMetrics
from ..protocol import IncrementalResults
from ..strategy import LUCIR
from ._atomic import atomic_write
from .config import ConfigError, ExperimentConfig
from .run_folder import RunExistsError

__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_FORMAT",
    "previous_checkpoint",
    "restore_diagnostics",
    "restore_rng",
    "wrap_seed",
    "run_state",
    "CheckpointError",
    "evaluator_state",
    "load_checkpoint",
    "load_evaluator_state",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
"""The checkpoint's name in the run folder."""
CHECKPOINT_FORMAT = 1
"""The layout of the checkpoint's dict; a run refuses other formats."""


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not fit the run."""


def rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's global generators (and
    CUDA's when available), as tensors and plain values."""
    legacy = np.random.get_state(legacy=True)  # noqa: NPY002
    assert isinstance(legacy, tuple)  # the global generator is a MT19937
    kind, keys, pos, has_gauss, cached = legacy
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
    """Restore :func:`evaluator_state` into an evaluator with the same
    forgetting metrics, in the same order. Metrics without state (which
    start afresh at every evaluation) may have been added or removed since
    the state was taken."""
    saved = [entry for entry in state if entry is not None]
    forgetting = [
        metric.forgetting
        for metric in evaluator.metrics
        if isinstance(getattr(metric, "forgetting", None), Forgetting)
    ]
    if len(saved) != len(forgetting):
        raise CheckpointError(
            f"the checkpoint has the state of {len(saved)} forgetting metrics, "
            f"the evaluator has {len(forgetting)}"
        )
    for metric, entry in zip(forgetting, saved, strict=True):
        metric.initial = dict(entry["initial"])
        metric.last = dict(entry["last"])


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


def load_checkpoint(
    path: Path,
    remedy: str = "delete it or pass --overwrite to start the run again",
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on the
    CPU) with ``weights_only=True``.

    :param remedy: what the message of a damaged file advises (the
        base-model cache, which ``--overwrite`` does not clear, says its own).
    :raises CheckpointError: the file cannot be read, or does not hold a
        dict.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise CheckpointError(
            f"{path}: cannot read the checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); {remedy}"
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path}: not a checkpoint (it holds a {type(state).__name__}, not a "
            f"dict); {remedy}"
        )
    return state


def previous_checkpoint(
    run_dir: Path, cfg: ExperimentConfig, overwrite: bool
) -> dict[str, Any] | None:
    """What ``run_dir`` already holds: raises if it is a finished run (and
    not ``overwrite``) or a checkpoint of another configuration; returns the
    checkpoint to resume from, if any."""
    if overwrite:
        return None
    if (run_dir / "results.json").exists():
        raise RunExistsError(
            f"{run_dir} already holds a finished run; pass --overwrite to start it "
            "again, or choose another name/output_dir"
        )
    path = run_dir / CHECKPOINT_FILE
    if not path.exists():
        return None
    checkpoint = load_checkpoint(path)
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {checkpoint.get('format')!r}; this version "
            f"reads format {CHECKPOINT_FORMAT}: pass --overwrite to start again"
        )
    try:
        saved = ExperimentConfig(**checkpoint["config"])
    except (TypeError, ConfigError) as err:
        raise CheckpointError(
            f"{path}: its configuration is not valid ({err})"
        ) from None
    changed = cfg.diff(saved, runtime=False)
    if changed:
        details = "; ".join(
            f"{key}: {old!r} in the checkpoint, {new!r} now"
            for key, (new, old) in sorted(changed.items())
        )
        raise CheckpointError(
            f"{run_dir} holds a checkpoint of a run with another configuration "
            f"({details}); resume with the same configuration, or pass --overwrite "
            "to start again"
        )
    return checkpoint


def wrap_seed(value: int) -> int:
    """``value`` in NumPy's seed range [0, 2**32 - 1] (a seed near the top
    of the range plus a rank or an offset wraps around)."""
    return value % 2**32


def restore_rng(checkpoint: dict[str, Any], fallback_seed: int) -> None:
    """Each process's random state at the checkpoint. A run resumed on
    another number of processes than it was saved from cannot restore the
    streams: it draws fresh ones (the results are then equivalent, not
    identical)."""
    states = checkpoint["rank_rng"]
    if len(states) == distributed.world_size():
        set_rng_state(states[distributed.rank()])
        return
    log.warning(
        "the checkpoint was written by %d process(es), this run has %d: the "
        "random streams are seeded again",
        len(states),
        distributed.world_size(),
    )
    RNGManager.set_random_seeds(wrap_seed(fallback_seed + distributed.rank()))


def restore_diagnostics(
    diagnostics: DiagnosticMetrics,
    evaluator,
    checkpoint: dict[str, Any],
    done_experiences: Sequence,
) -> None:
    """Restore the evaluator's metrics and the diagnostics from a
    checkpoint. A checkpoint written before the diagnostics existed has
    no state for them (they come last in the evaluator): they start with
    the classes of the finished experiences (``done_experiences``, with the
    class ids of the model) and no history."""
    if "diagnostics" in checkpoint:
        diagnostics.load_state_dict(checkpoint["diagnostics"])
    else:
        diagnostics.set_seen_experiences(
            [
                (exp.current_experience, exp.classes_in_this_experience)
                for exp in done_experiences
            ]
        )
    load_evaluator_state(evaluator, list(checkpoint["evaluator"]))


def run_state(
    cfg: ExperimentConfig,
    strategy: LUCIR,
    evaluator: EvaluationPlugin,
    diagnostics: DiagnosticMetrics,
    results: IncrementalResults,
    times: Sequence[float],
    wandb_id: str | None,
) -> dict[str, Any] | None:
    """The checkpoint of a run between two experiences: every process takes
    part (their random states are gathered), rank 0 gets the state, the
    others ``None``."""
    rank_rng = distributed.gather_objects(rng_state())
    if not distributed.is_main_process():
        return None
    return {
        "format": CHECKPOINT_FORMAT,
        "config": cfg.to_dict(),
        "strategy": strategy.state_dict(),
        "evaluator": evaluator_state(evaluator),
        "diagnostics": diagnostics.state_dict(),
        "results": results.state_dict(),
        "times": list(times),
        "wandb_id": wandb_id,
        "rank_rng": rank_rng,
    }
