"""``bdr-avalanche run``: one method, one results folder.

:func:`run_experiment` builds the stream, the backbone and the strategy
(ours or one of Avalanche's built-ins, see :mod:`.factories`), trains with
the class-incremental protocol of :mod:`bdr_avalanche.protocol`, and writes
one results folder (see :mod:`.run_folder` for which folders it may use):

- ``config.yaml``: the resolved configuration;
- ``results.json``, ``accuracy_matrix.csv``, ``phases.csv``,
  ``accuracy_matrix.png`` (see :mod:`.report`);
- the diagnostics of :class:`~bdr_avalanche.metrics.DiagnosticMetrics`:
  the memory samples' share of the logit gradient per epoch (logged, in
  ``results.json`` and ``memory_gradient_share.png``), the last-layer
  analysis (``results.json``, ``last_layer.png``) and, with BDR, the
  prior trace (``bdr_prior_trace.png``, ``prior_trace.npz``);
- ``models/exp_XX.pt``: the model's ``state_dict`` after each experience;
- ``checkpoint.pt`` while the run is unfinished (see :mod:`.checkpoint`);
- the loggers' output (``log.txt``, ``csv/``, ``tensorboard/``, ``wandb/``).

Our methods share their first experience through the base-model cache
(:mod:`.base_cache`); ``results.json``'s ``base_model`` says whether the run
reused an entry (``reused``, and the training time stored with it,
``stored_time_s``) and which entry it read or wrote (``cache``: only a
file that was really read or written, else ``None``). Its
``experience_time_s`` is always the time this run spent: for a reused
first experience, the time it took to read the entry.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from avalanche.training.determinism.rng_manager import RNGManager
from torch import nn
from tqdm.auto import tqdm

from .. import __version__, distributed
from ..methods import parse_method
from ..metrics import DiagnosticMetrics
from ..protocol import IncrementalResults, make_evaluator, train_and_evaluate
from ..strategy import LUCIR
from ._atomic import atomic_write, remove_stale_temporaries, write_text
from .base_cache import BaseCache, base_settings, check_cache_folder
from .checkpoint import (
    CHECKPOINT_FILE,
    previous_checkpoint,
    restore_diagnostics,
    restore_rng,
    run_state,
    save_checkpoint,
    wrap_seed,
)
from .config import ExperimentConfig
from .factories import (
    build_backbone,
    build_benchmark,
    build_strategy,
    num_workers,
    process_device,
    validate,
)
from .first_epochs import NOT_SHARED, FirstEpochsCache
from .interrupt import Interrupted, deferred
from .loggers import RunLoggers
from .report import run_summary, write_diagnostics, write_json, write_run
from .run_folder import RunFolder

__all__ = ["run_experiment"]

log = logging.getLogger(__name__)


def _without_logging(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with every logger off (the processes other than rank 0)."""
    return dataclasses.replace(
        cfg,
        interactive=False,
        text_log=False,
        csv_log=False,
        tensorboard=False,
        wandb=False,
    )


def _start_afresh(folder: RunFolder, cfg: ExperimentConfig) -> None:
    """Empty ``folder`` (ours, locked) and write the run's configuration."""
    if not folder.is_bare():
        log.info("starting %s afresh", folder.path)
    folder.clear()
    write_text(
        folder.path / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    )


def run_experiment(cfg: ExperimentConfig, overwrite: bool = False) -> dict[str, Any]:
    """Run ``cfg`` and write its results folder; return the results record
    (also saved as ``results.json``).

    The configuration is validated (:func:`validate`, the device) before
    any data is read. The results folder is ``output_dir/name``; it is
    locked for the whole run, and only a folder that this tool created
    (see :mod:`bdr_avalanche.run_folder`) is written into, emptied or
    deleted. For our methods a checkpoint (``checkpoint.pt``) is written
    after every experience but the last; running the same configuration
    again on the same folder resumes after the last finished experience
    and gives the same results as an uninterrupted run (keys in
    :data:`~bdr_avalanche.experiment.config.RUNTIME_KEYS` may change; others raise
    :class:`CheckpointError`). ``overwrite`` empties the folder and starts
    again. A run that fails or is interrupted before its first checkpoint
    leaves no folder (an empty folder it was given stays, empty). Every
    results file is written atomically. Avalanche's baselines are not
    checkpointed: an interrupted one starts again. A run whose folder would
    hold the base-model cache is refused (:func:`~.check_cache_folder`).
    """
    cfg = cfg.resolved()
    assert cfg.name is not None  # resolved() names every run
    device = _checked(cfg)
    run_dir = Path(cfg.output_dir) / cfg.name
    folder = _open_folder(run_dir)
    # the experience in progress; resumable from the run's checkpoint, the cache
    progress = {"experience": 0, "saved": 0, "base": 0}
    checkpoint, fresh = None, False
    try:
        checkpoint = previous_checkpoint(run_dir, cfg, overwrite)
        if checkpoint is not None:
            progress["experience"] = progress["saved"] = len(checkpoint["times"])
        distributed.barrier()  # every process has read the folder before it changes
        # one seed per process: their augmentations must not repeat each other
        RNGManager.set_random_seeds(wrap_seed(cfg.seed + distributed.rank()))
        # Config and data errors surface before any file is written.
        backbone = build_backbone(cfg)
        benchmark = build_benchmark(cfg)
        base = _base_cache(cfg, benchmark, device)
        if folder is not None and checkpoint is None:
            fresh = True
            _start_afresh(folder, cfg)
        if checkpoint is None and base is not None and _ours(cfg):
            checkpoint = _reuse(base, len(benchmark.train_stream), cfg.name, progress)
        summary = _train(
            cfg, device, run_dir, backbone, benchmark, checkpoint, progress, base
        )
    except BaseException as err:
        if isinstance(err, Interrupted) and err.experience is None:
            err.experience = progress["experience"]
            err.resume_from = max(progress["saved"], progress["base"])
        if folder is not None:
            _leave_folder(folder, fresh, checkpoint is None, overwrite)
        raise
    finally:
        if folder is not None:
            folder.close()
    _log_summary(cfg.name, summary)
    return summary


def _checked(cfg: ExperimentConfig) -> torch.device:
    """The run's device, once the resolved ``cfg`` is validated and its
    folder checked against the base-model cache."""
    device = process_device(cfg)
    validate(cfg)
    check_cache_folder(cfg)
    return device


def _log_summary(name: str, summary: dict[str, Any]) -> None:
    log.info(
        "%s: average incremental accuracy %.2f%%, last %.2f%%, forgetting %.2f%%",
        name,
        100 * summary["average_incremental_accuracy"],
        100 * summary["last_accuracy"],
        100 * summary["forgetting"],
    )


def _open_folder(run_dir: Path) -> RunFolder | None:
    """The run's folder, opened and locked by the main process (``None``
    in the others), without the temporaries of a process killed while
    writing."""
    if not distributed.is_main_process():
        return None
    folder = RunFolder.open(run_dir, "run")
    for path in (run_dir, run_dir / "models"):
        remove_stale_temporaries(path)
    return folder


def _leave_folder(
    folder: RunFolder, fresh: bool, no_checkpoint: bool, overwrite: bool
) -> None:
    """After a failed or interrupted run: leave no half-written folder
    behind where there is nothing to resume."""
    # a fresh run emptied its folder: what is there now is its own
    kept = [folder.path / name for name in ("results.json", CHECKPOINT_FILE)]
    if fresh and not any(path.exists() for path in kept):
        folder.discard(delete=folder.created or overwrite)
    elif no_checkpoint and not fresh and folder.created:
        folder.discard(delete=True)  # failed before writing anything


def _train(
    cfg: ExperimentConfig,
    device: torch.device,
    run_dir: Path,
    backbone: nn.Module,
    benchmark,
    checkpoint: dict[str, Any] | None,
    progress: dict[str, int],
    base: BaseCache | None,
) -> dict[str, Any]:
    """Train and evaluate the (resolved) ``cfg`` into its prepared folder,
    from ``checkpoint`` if given (the run's, or the ``base`` cache's);
    ``progress`` follows the experience in progress and the last saved;
    the first experience is stored in ``base`` when it was trained."""
    done = 0 if checkpoint is None else len(checkpoint["times"])
    loggers = RunLoggers(
        cfg if distributed.is_main_process() else _without_logging(cfg),
        run_dir,
        resume_after=done if checkpoint else None,
        wandb_id=checkpoint.get("wandb_id") if checkpoint else None,
    )
    try:
        session = _Session(cfg, device, run_dir, backbone, benchmark, loggers)
        session.progress, session.base = progress, base
        if base is not None and not _ours(cfg):
            session.share_first_epochs(base)
        results = session.restore(checkpoint) if checkpoint is not None else None
        workers = num_workers(
            cfg, device, getattr(session.strategy, "batch_augment", None) is not None
        )
        if checkpoint is not None:  # last: nothing may draw after it
            restore_rng(checkpoint, cfg.seed + 1000 * done)
        with tqdm(
            total=len(benchmark.train_stream),
            initial=done,
            desc=cfg.name,
            unit="exp",
            disable=cfg.interactive or not distributed.is_main_process(),
        ) as bar:
            session.clock = time.perf_counter()
            results = train_and_evaluate(
                session.strategy,
                benchmark,
                progress=bar,
                on_experience_end=session.after_experience,
                num_workers=workers,
                results=results,
                persistent_workers=workers > 0,
            )
        return session.finish(results)
    finally:
        loggers.close()


class _Session:
    """One run between its folder's preparation and its results: the
    strategy, its evaluator and diagnostics, and what each experience's
    end saves."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        device: torch.device,
        run_dir: Path,
        backbone: nn.Module,
        benchmark,
        loggers: RunLoggers,
    ) -> None:
        self.cfg, self.device, self.run_dir, self.loggers = (
            cfg,
            device,
            run_dir,
            loggers,
        )
        self.main = distributed.is_main_process()
        self.stream = benchmark.train_stream
        sizes = [len(exp.classes_in_this_experience) for exp in self.stream]
        self.classes_seen = [sum(sizes[: t + 1]) for t in range(len(sizes))]
        self.diagnostics = DiagnosticMetrics()
        self.evaluator = make_evaluator(loggers.loggers, self.diagnostics.metrics)
        self.strategy = build_strategy(
            cfg, backbone, self.classes_seen[-1], device, self.evaluator
        )
        self.times: list[float] = []
        self.progress: dict[str, int] = {}
        self.base: BaseCache | None = None
        self.base_record: dict[str, Any] = {"reused": False, "cache": None}
        """``results.json``'s ``base_model`` (see the module)."""
        self.first_epochs: FirstEpochsCache | None = None
        """A baseline's shared first-experience epochs, if any."""
        self.clock = time.perf_counter()
        log.info(
            "%s: %s on %s (%d experiences, classes %s), %s, results in %s",
            cfg.name,
            cfg.method,
            cfg.dataset,
            len(sizes),
            sizes,
            device,
            run_dir,
        )

    def share_first_epochs(self, base: BaseCache) -> None:
        """A baseline: reuse or store its first experience's training epochs
        (:class:`~.first_epochs.FirstEpochsCache`, after every plugin)."""
        self.first_epochs = FirstEpochsCache(base, self.diagnostics)
        self.strategy.plugins.append(self.first_epochs)

    def restore(self, checkpoint: dict[str, Any]) -> IncrementalResults:
        """Put the strategy, the metrics and the clock at the checkpoint;
        return the results so far."""
        done = len(checkpoint["times"])
        self.strategy.load_state_dict(checkpoint["strategy"], self.stream)
        relabel = getattr(self.strategy, "relabelled", lambda experience: experience)
        restore_diagnostics(
            self.diagnostics,
            self.evaluator,
            checkpoint,
            [relabel(experience) for experience in self.stream[:done]],
        )
        self.times = list(checkpoint["times"])
        self.base_record = dict(checkpoint.get("base_model", self.base_record))
        if self.progress["base"]:  # the stored first experience is this run's
            with deferred():
                self._save_model(0)
        else:
            log.info("%s: resuming after experience %d", self.cfg.name, done - 1)
        return IncrementalResults.from_state_dict(checkpoint["results"])

    def _save_model(self, t: int) -> None:
        if self.cfg.save_models and self.main:
            models = self.run_dir / "models"
            models.mkdir(exist_ok=True)
            with atomic_write(models / f"exp_{t:02d}.pt", "wb") as file:
                torch.save(self.strategy.model.state_dict(), file)

    def after_experience(self, t: int, results: IncrementalResults) -> None:
        """Save the model, the checkpoint (and, after the first experience,
        the shared base) and flush the logs; a signal waits until the files
        are whole."""
        self.times.append(time.perf_counter() - self.clock)
        with deferred():
            self._save_model(t)
            if isinstance(self.strategy, LUCIR) and t + 1 < len(self.stream):
                self._save_checkpoint(t, results)
            self.loggers.flush()
            self.progress["experience"] = t + 1
        self.clock = time.perf_counter()  # saving is not training time

    def _save_checkpoint(self, t: int, results: IncrementalResults) -> None:
        state = run_state(
            self.cfg,
            self.strategy,
            self.evaluator,
            self.diagnostics,
            results,
            self.times,
            self.loggers.wandb_id,
        )
        if state is None:  # not rank 0
            return
        if t == 0 and self.base is not None and not self.progress["base"]:
            if self.base.store(state):
                self.base_record = {"reused": False, "cache": str(self.base.path)}
        state["base_model"] = dict(self.base_record)  # for a resumed run's report
        if save_checkpoint(self.run_dir / CHECKPOINT_FILE, state):
            self.progress["saved"] = t + 1

    def finish(self, results: IncrementalResults) -> dict[str, Any]:
        """The results record; rank 0 writes the results files (the
        checkpoint goes last) and sends them to wandb."""
        cfg = self.cfg
        if self.first_epochs is not None:
            self.base_record = dict(self.first_epochs.record)
        summary = {
            "name": cfg.name,
            "method": cfg.method,
            "dataset": cfg.dataset,
            "device": str(self.device),
            "cpu_threads": torch.get_num_threads(),
            "versions": _versions(),
            **run_summary(results, self.classes_seen, self.times),
            "base_model": dict(self.base_record),
            **self.diagnostics.summary(),
        }
        if not self.main:
            return summary
        title = f"{cfg.method} ({cfg.dataset})"
        with deferred():
            files = write_run(self.run_dir, summary, title)
            files += write_diagnostics(
                self.run_dir, summary, self.diagnostics.prior_trace.records, title
            )
            write_json(self.run_dir / "results.json", summary)  # the run is done
            (self.run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
        keys = ("average_incremental_accuracy", "last_accuracy", "forgetting")
        self.loggers.log_results(
            [self.run_dir / "results.json", *files],
            {k: summary[k] for k in (*keys, "wall_time_s")},
        )
        return summary


def _base_cache(
    cfg: ExperimentConfig, benchmark, device: torch.device
) -> BaseCache | None:
    """The cache entry of the run's first experience: for a stream of more
    than one experience, unless ``reuse_base`` is off or the base does not
    share it (:data:`~.first_epochs.NOT_SHARED`)."""
    if not cfg.reuse_base or len(benchmark.train_stream) < 2:
        return None
    base = parse_method(cfg.method).base
    if base in NOT_SHARED:
        log.info("%s: the first experience is trained: %s", cfg.name, NOT_SHARED[base])
        return None
    return BaseCache(BaseCache.folder(cfg), base_settings(cfg, benchmark, device))


def _ours(cfg: ExperimentConfig) -> bool:
    """Whether ``cfg``'s base is our LUCIR strategy."""
    return parse_method(cfg.method).ours


def _reuse(
    base: BaseCache, num_experiences: int, name: str, progress: dict[str, int]
) -> dict[str, Any] | None:
    """The checkpoint to resume from after the stored first experience of
    ``base``, if there is one (then ``progress`` is after the first
    experience): its time is the time this run took to read it, the
    training time stored with it goes to ``base_model``."""
    start = time.perf_counter()
    state = base.load(num_experiences)
    if state is None:
        return None
    progress["experience"] = progress["base"] = 1
    log.info("%s: reusing the first experience stored in %s", name, base.path)
    state["base_model"] = {
        "reused": True,
        "cache": str(base.path),
        "stored_time_s": float(state["times"][0]),
    }
    state["times"] = [time.perf_counter() - start]
    return state


def _versions() -> dict[str, str]:
    import avalanche

    return {
        "bdr_avalanche": __version__,
        "avalanche": avalanche.__version__,
        "torch": torch.__version__,
    }
