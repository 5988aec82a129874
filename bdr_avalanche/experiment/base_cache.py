"""First-experience models shared across runs.

In the paper's protocol the first experience (50 classes, 160 epochs) is
about half of a run's compute, and it is the same for several runs:
CwD acts only in the first experience and BDR only after it, so
LUCIR+CwD and LUCIR+CwD+BDR train identical first experiences, and so
do runs that differ only in how the later classes are split (5, 10 or 25
phases) or in hyper-parameters used only later (LUCIR's distillation and
margin-ranking terms, BDR's).

After its first experience a run of our methods stores what a resume
needs at that point (the checkpoint's content, see :mod:`.checkpoint`)
under ``<base_cache>/<key>.pt``. The key is a hash of exactly the settings
that decide that experience (:func:`base_settings`); a later run with the
same key starts from the stored state instead of training, which is
resuming after experience 0, so it ends with the accuracy matrix and
weights of a run that trained it (a test checks this).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from .. import __version__, distributed
from .checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint
from .config import OUR_METHODS, ExperimentConfig

__all__ = ["BaseCache", "base_settings"]

log = logging.getLogger(__name__)

BASE_CACHE_DIR = "base_models"
"""The cache's folder in ``output_dir`` when ``base_cache`` is not set."""


def base_settings(
    cfg: ExperimentConfig,
    first_classes: list[int],
    train_size: int,
    device: torch.device,
    fast_input: bool,
    amp: torch.dtype | None,
) -> dict[str, Any]:
    """Everything that decides a run's first experience, as plain values.

    :param first_classes: the first experience's classes in order of
        arrival (this covers ``class_order_seed``, ``n_base`` and, when
        ``n_base=0``, ``n_phases``).
    :param train_size: its training samples.
    :param device: the run's device (only its type enters).
    :param fast_input: whether the fast input path is on.
    :param amp: the autocast dtype, if any.
    """
    import avalanche

    root = cfg.dataset_root
    return {
        "format": CHECKPOINT_FORMAT,
        "versions": [
            str(__version__),
            str(torch.__version__),
            str(avalanche.__version__),
        ],
        "dataset": cfg.dataset,
        # the data itself: where it is read from (moving it misses the cache)
        "dataset_root": None if root is None else os.path.realpath(root),
        "resolution": cfg.resolution,
        "in_memory": cfg.in_memory,
        "class_order_seed": cfg.class_order_seed,  # digits: also its split
        "first_classes": list(first_classes),
        "train_size": train_size,
        "backbone": cfg.backbone,
        "width": cfg.width if cfg.backbone == "small_cnn" else None,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "batch_size": cfg.first_batch_size or cfg.batch_size,
        "lr": cfg.lr if cfg.first_lr is None else cfg.first_lr,
        "momentum": cfg.momentum,
        "weight_decay": cfg.weight_decay,
        "milestones": list(cfg.milestones),
        "lr_decay": cfg.lr_decay,
        "eval_batch_size": cfg.eval_batch_size,
        "mem_per_class": cfg.mem_per_class,  # the memory is built at its end
        # CwD acts in the first experience only; LUCIR's losses and BDR after it
        "cwd_coef": cfg.cwd_coef if OUR_METHODS[cfg.method].get("cwd") else None,
        "device": device.type,
        "world_size": distributed.world_size(),
        "fast_input": fast_input,
        "amp": None if amp is None else str(amp),
        "channels_last": cfg.channels_last,
        "compile": cfg.compile,
    }


class BaseCache:
    """The stored first-experience state of one set of :func:`base_settings`.

    :param folder: the cache folder (created when a state is stored).
    :param settings: the run's :func:`base_settings`.
    """

    def __init__(self, folder: str | os.PathLike, settings: dict[str, Any]) -> None:
        text = json.dumps(settings, sort_keys=True)
        self.key = hashlib.sha256(text.encode()).hexdigest()[:20]
        self.settings = settings
        self.path = Path(folder) / f"{self.key}.pt"

    @staticmethod
    def folder(cfg: ExperimentConfig) -> Path:
        """``base_cache``, or ``<output_dir>/base_models``."""
        return Path(cfg.base_cache or Path(cfg.output_dir) / BASE_CACHE_DIR)

    def load(self, num_experiences: int) -> dict[str, Any] | None:
        """The stored state, in the checkpoint's layout, with its results
        sized for a stream of ``num_experiences`` (``None`` when there is
        none, or it cannot be used: then the run trains its first
        experience and stores it again)."""
        if not self.path.is_file():
            return None
        try:
            state = load_checkpoint(self.path)
        except CheckpointError as err:
            log.warning("ignoring the cached first experience: %s", err)
            return None
        if state.get("base_settings") != self.settings or len(state["times"]) != 1:
            log.warning("ignoring %s: it was stored for other settings", self.path)
            return None
        # the run that stored it may have split its later classes otherwise
        stored = state["results"]["accuracy_matrix"]
        matrix = torch.full((num_experiences,) * 2, float("nan"), dtype=stored.dtype)
        matrix[0, 0] = stored[0, 0]
        state["results"]["accuracy_matrix"] = matrix
        return state

    def store(self, state: dict[str, Any]) -> None:
        """Store a checkpoint's ``state`` taken after the first experience
        (atomically; a failure is logged and the run goes on)."""
        from .checkpoint import save_checkpoint

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            log.warning("cannot create the base-model cache %s: %s", self.path, err)
            return
        stored = {**state, "base_settings": self.settings, "wandb_id": None}
        if save_checkpoint(self.path, stored):
            log.info("first experience stored for reuse in %s", self.path)
