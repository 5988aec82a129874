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

Which configuration keys decide the first experience is declared once, for
every key of :class:`~.config.ExperimentConfig`: :data:`FIRST_EXPERIENCE_KEYS`
enter the key (some through what they resolve to), :data:`LATER_KEYS` do
not, each with its reason. A test changes every key in turn and checks
that the key of the cache changes exactly for the first ones, so a new
configuration key cannot be forgotten. The data enter through their path
and a fingerprint of the files read
(:func:`~bdr_avalanche.benchmarks.fingerprint.data_fingerprint`), so data
changed in place are not taken for the stored ones.

A run that reuses an entry reports, as the time of its first experience,
the time it took to read it; the training time stored with the entry is
reported apart (``base_model.stored_time_s`` in ``results.json``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from .. import __version__, distributed
from ..benchmarks.fingerprint import data_fingerprint
from ..benchmarks.specs import DATASETS
from ..methods import parse_method
from ._atomic import atomic_write, remove_stale_temporaries
from .checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint
from .config import GROUPS, ConfigError, ExperimentConfig
from .factories import amp_dtype, build_batch_augment, num_workers
from .run_folder import MARKER

__all__ = [
    "BASE_CACHE_DIR",
    "FIRST_EXPERIENCE_KEYS",
    "LATER_KEYS",
    "BaseCache",
    "base_settings",
    "check_cache_folder",
    "first_experience_settings",
]

log = logging.getLogger(__name__)

BASE_CACHE_DIR = "base_models"
"""The cache's folder in ``output_dir`` when ``base_cache`` is not set."""

_BASELINE = "the baseline's hyper-parameters (all of them), when it is the base"
FIRST_EXPERIENCE_KEYS: dict[str, str] = {
    "method": "the base strategy, and whether CwD is on (it acts in the first "
    "experience only; BDR acts after it)",
    "seed": "the initial weights and every random draw",
    "dataset": "the images and their augmentation",
    "dataset_root": "the data: their real path and a fingerprint of the files read",
    "n_base": "the classes of the first experience (as first_classes)",
    "n_phases": "with n_base=0, the first experience's classes (first_classes)",
    "class_order_seed": "the class order; digits: also its train/test split",
    "resolution": "the image size, where the dataset is resized",
    "in_memory": "images decoded once and kept shrunk, or decoded per epoch",
    "num_workers": "the DataLoader workers' random streams (the resolved count)",
    "backbone": "the network",
    "width": "small_cnn's channels",
    "epochs": "the schedule",
    "batch_size": "the first experience's batch size, unless first_batch_size",
    "first_batch_size": "the first experience's batch size",
    "lr": "the first experience's learning rate, unless first_lr",
    "first_lr": "the first experience's learning rate",
    "momentum": "the optimiser",
    "weight_decay": "the optimiser",
    "milestones": "the schedule",
    "lr_decay": "the schedule",
    "eval_batch_size": "the evaluation and the herding after it",
    "mem_per_class": "the memory built at its end",
    "cwd": "CwD's hyper-parameters (all of cwd.*), when CwD is on",
    "lwf": _BASELINE,
    "bic": _BASELINE,
    "der": _BASELINE,
    "er_ace": _BASELINE,
    "agem": _BASELINE,
    "device": "its type (cpu, cuda)",
    "fast_input": "the input path (as resolved)",
    "amp": "the autocast dtype (as resolved)",
    "channels_last": "the memory format of the convolutions",
    "compile": "the compiled kernels",
}
"""The keys that decide the first experience, and how they enter the key
of the cache (:func:`base_settings`). A method's record (``cwd``) is
declared as a whole: a field added to it needs no edit here."""

_RUNTIME = "where or how the run executes and logs, not what it computes"
LATER_KEYS: dict[str, str] = {
    "name": _RUNTIME,
    "download": "fetches missing files only; the files read are fingerprinted",
    "lucir": "LUCIR's less-forget and margin-ranking terms need old classes "
    "(k is only checked against the later experiences)",
    "bdr": "BDR acts after the first experience",
    "output_dir": _RUNTIME,
    "reuse_base": "whether the cache is used at all",
    "base_cache": "where the cache is",
    "save_models": _RUNTIME,
    "interactive": _RUNTIME,
    "text_log": _RUNTIME,
    "csv_log": _RUNTIME,
    "tensorboard": _RUNTIME,
    "wandb": _RUNTIME,
    "wandb_project": _RUNTIME,
    "wandb_entity": _RUNTIME,
    "wandb_tags": _RUNTIME,
    "wandb_mode": _RUNTIME,
}
"""The keys that do not change the first experience, and why."""


def base_settings(
    cfg: ExperimentConfig, benchmark, device: torch.device
) -> dict[str, Any]:
    """Everything that decides the first experience of the (resolved)
    ``cfg`` on ``benchmark`` (its stream) and ``device``, as plain values:
    the keys of :data:`FIRST_EXPERIENCE_KEYS`, as they act, and the
    versions, the checkpoint format, the number of processes and, on a
    CPU, of threads (see :func:`first_experience_settings`)."""
    first = benchmark.train_stream[0]
    return first_experience_settings(
        cfg,
        device,
        first_classes=[int(c) for c in first.classes_in_this_experience],
        train_size=len(first.dataset),
        test_size=len(benchmark.test_stream[0].dataset),
        data=data_fingerprint(cfg.dataset, cfg.dataset_root),
    )


def first_experience_settings(
    cfg: ExperimentConfig,
    device: torch.device,
    *,
    first_classes: list[int],
    train_size: int,
    test_size: int,
    data: str,
) -> dict[str, Any]:
    """:func:`base_settings` from what the stream says of its first
    experience (so that keys can be counted without the data).

    :param first_classes: its classes, in order of arrival (they cover
        ``n_base``, ``class_order_seed`` and, when ``n_base=0``,
        ``n_phases``).
    :param train_size: its training samples.
    :param test_size: its test samples.
    :param data: the data's fingerprint
        (:func:`~bdr_avalanche.benchmarks.fingerprint.data_fingerprint`).
    """
    import avalanche

    spec = DATASETS[cfg.dataset]
    root = cfg.dataset_root
    fast_input = build_batch_augment(cfg, device) is not None
    amp = amp_dtype(cfg, device)
    return {
        "format": CHECKPOINT_FORMAT,
        "versions": [
            str(__version__),
            str(torch.__version__),
            str(avalanche.__version__),
        ],
        "dataset": cfg.dataset,
        "dataset_root": None
        if spec.builtin or root is None
        else os.path.realpath(os.path.expanduser(root)),
        "data": data,
        "resolution": None if spec.resolution is None else cfg.resolution,
        "in_memory": spec.fits_in_memory(cfg.in_memory),
        "class_order_seed": cfg.class_order_seed,
        "first_classes": list(first_classes),
        "train_size": train_size,
        "test_size": test_size,
        "num_workers": num_workers(cfg, device, fast_input),
        "backbone": cfg.backbone,
        "width": cfg.width if cfg.backbone == "small_cnn" else None,
        "seed": cfg.seed,
        **_training_settings(cfg),
        **_method_settings(cfg),
        "device": device.type,
        "world_size": distributed.world_size(),
        # on a CPU the thread count orders the floating-point sums: a run
        # repeats to the last digit only with the same count
        "cpu_threads": torch.get_num_threads() if device.type == "cpu" else None,
        "fast_input": fast_input,
        "amp": None if amp is None else str(amp),
        "channels_last": cfg.channels_last,
        "compile": cfg.compile,
    }


def _training_settings(cfg: ExperimentConfig) -> dict[str, Any]:
    """The first experience's schedule, batch sizes and memory size."""
    return {
        "epochs": cfg.epochs,
        "batch_size": cfg.first_batch_size or cfg.batch_size,
        "lr": cfg.lr if cfg.first_lr is None else cfg.first_lr,
        "momentum": cfg.momentum,
        "weight_decay": cfg.weight_decay,
        "milestones": list(cfg.milestones),
        "lr_decay": cfg.lr_decay,
        "eval_batch_size": cfg.eval_batch_size,
        "mem_per_class": cfg.mem_per_class,
    }


def _method_settings(cfg: ExperimentConfig) -> dict[str, Any]:
    """The base strategy and its record (a baseline's: all its fields; our
    ``lucir`` base's losses act later), whether CwD is on and, when it is,
    every field of its record (``None`` when off: its values then change
    nothing). BDR is not one: it acts after the first experience."""
    method = parse_method(cfg.method)
    own = method.base in GROUPS and not method.ours
    cwd = method.has("cwd")
    return {
        "base": method.base,
        "base_params": dataclasses.asdict(getattr(cfg, method.base)) if own else None,
        "cwd": cwd,
        "cwd_params": dataclasses.asdict(cfg.cwd) if cwd else None,
        # a baseline with LUCIR's plugin has a cosine head from the start
        "cosine_head": method.has("lucir"),
    }


def check_cache_folder(
    cfg: ExperimentConfig, results_folder: str | os.PathLike | None = None
) -> None:
    """Refuse, with :class:`~.config.ConfigError`, a base-model cache that
    a results folder would hold, where deleting or overwriting that folder
    would delete the entries of other runs.

    The cache of ``cfg`` may not be ``results_folder`` (default: the run's
    own, ``output_dir/name``) or inside it, whatever the method (a run named
    ``base_models`` is the default cache). When the run uses the cache, it
    may not be inside any results folder either (one with a marker).
    """
    cache = Path(os.path.realpath(BaseCache.folder(cfg)))
    if results_folder is None:
        assert cfg.name is not None  # resolved
        results_folder = Path(cfg.output_dir) / cfg.name
    own = Path(os.path.realpath(results_folder))
    if cache == own or own in cache.parents:
        raise ConfigError(
            f"the results folder {own} would hold the base-model cache {cache}, "
            "whose entries other runs share and --overwrite would delete: "
            f"choose another name, or set base_cache to a folder outside {own}"
        )
    if not cfg.reuse_base:
        return
    for folder in (cache, *cache.parents):
        if (folder / MARKER).is_file():
            raise ConfigError(
                f"base_cache={str(BaseCache.folder(cfg))!r} is inside the results "
                f"folder {folder}, whose --overwrite would delete the cache's "
                "entries: choose a folder outside results folders"
            )


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

    def load_entry(self) -> dict[str, Any] | None:
        """The stored state, if there is one stored for these settings
        (``None`` otherwise, or when it cannot be read: then the run
        trains its first experience and stores it again). Temporary files
        that writers killed while storing left in the folder are deleted
        first."""
        remove_stale_temporaries(self.path.parent)
        if not self.path.is_file():
            return None
        try:
            state = load_checkpoint(self.path, remedy=self._remedy)
        except CheckpointError as err:
            log.warning("ignoring the base-model cache entry %s", err)
            return None
        if state.get("base_settings") != self.settings:
            log.warning(
                "ignoring the base-model cache entry %s: it was stored for other "
                "settings; %s",
                self.path,
                self._remedy,
            )
            return None
        return state

    @property
    def _remedy(self) -> str:
        return (
            "the first experience is trained again and stored over it (to clear "
            f"the cache, delete that file or the folder {self.path.parent})"
        )

    def load(self, num_experiences: int) -> dict[str, Any] | None:
        """The stored checkpoint of our ``lucir`` base (:meth:`load_entry`
        holding one experience), with its results sized for a stream of
        ``num_experiences``."""
        state = self.load_entry()
        if state is None or len(state.get("times") or ()) != 1:
            return None
        # the run that stored it may have split its later classes otherwise
        stored = state["results"]["accuracy_matrix"]
        matrix = torch.full((num_experiences,) * 2, float("nan"), dtype=stored.dtype)
        matrix[0, 0] = stored[0, 0]
        state["results"]["accuracy_matrix"] = matrix
        return state

    def store(self, state: dict[str, Any]) -> bool:
        """Store a checkpoint's ``state`` taken after the first experience
        (atomically); return whether it was stored. A failure is logged and
        the run goes on."""
        stored = {**state, "base_settings": self.settings, "wandb_id": None}
        stored.pop("base_model", None)  # what the storing run did: not the entry's
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.path.parent)
            with atomic_write(self.path, "wb") as file:
                torch.save(stored, file)
        except (OSError, RuntimeError) as err:
            log.warning(
                "could not store the first experience in the base-model cache "
                "%s (%s); the run goes on without it",
                self.path,
                err,
            )
            return False
        log.info("first experience stored for reuse in %s", self.path)
        return True
