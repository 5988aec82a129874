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
from ..metrics import DiagnosticMetrics
from ..protocol import IncrementalResults, make_evaluator, train_and_evaluate
from ..strategy import LUCIR
from ._atomic import atomic_write, write_text
from .base_cache import BaseCache, base_settings
from .checkpoint import (
    CHECKPOINT_FILE,
    previous_checkpoint,
    restore_diagnostics,
    restore_rng,
    run_state,
    save_checkpoint,
    wrap_seed,
)
from .config import OUR_METHODS, ExperimentConfig
from .factories import (
    amp_dtype,
    build_backbone,
    build_batch_augment,
    build_benchmark,
    build_strategy,
    num_workers,
    process_device,
    validate,
)
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
    :data:`~bdr_avalanche.config.RUNTIME_KEYS` may change; others raise
    :class:`CheckpointError`). ``overwrite`` empties the folder and starts
    again. A run that fails or is interrupted before its first checkpoint
    leaves no folder (an empty folder it was given stays, empty). Every
    results file is written atomically. Avalanche's baselines are not
    checkpointed: an interrupted one starts again from its first
    experience.
    """
    cfg = cfg.resolved()
    device = process_device(cfg)
    validate(cfg)
    run_dir = Path(cfg.output_dir) / cfg.name
    folder = RunFolder.open(run_dir, "run") if distributed.is_main_process() else None
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
        if checkpoint is None and base is not None:
            checkpoint = base.load(len(benchmark.train_stream))
            if checkpoint is not None:  # resume after the first experience
                progress["experience"] = progress["base"] = 1
                log.info(
                    "%s: reusing the first experience stored in %s", cfg.name, base.path
                )
        summary = _train(
            cfg, device, run_dir, backbone, benchmark, checkpoint, progress, base
        )
    except BaseException as err:
        if isinstance(err, Interrupted) and err.experience is None:
            err.experience = progress["experience"]
            err.resume_from = max(progress["saved"], progress["base"])
        if folder is not None:
            finished = (run_dir / "results.json").exists() and fresh
            if fresh and not progress["saved"] and not finished:
                # nothing to resume: leave no half-written folder behind
                folder.discard(delete=folder.created or overwrite)
            elif checkpoint is None and not fresh and folder.created:
                folder.discard(delete=True)  # failed before writing anything
        raise
    finally:
        if folder is not None:
            folder.close()
    log.info(
        "%s: average incremental accuracy %.2f%%, last %.2f%%, forgetting %.2f%%",
        cfg.name,
        100 * summary["average_incremental_accuracy"],
        100 * summary["last_accuracy"],
        100 * summary["forgetting"],
    )
    return summary


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
    main = distributed.is_main_process()
    classes = [len(exp.classes_in_this_experience) for exp in benchmark.train_stream]
    classes_seen = [sum(classes[: t + 1]) for t in range(len(classes))]
    done = 0 if checkpoint is None else len(checkpoint["times"])
    loggers = RunLoggers(
        cfg if main else _without_logging(cfg),
        run_dir,
        resume_after=done if checkpoint else None,
        wandb_id=checkpoint.get("wandb_id") if checkpoint else None,
    )
    try:
        diagnostics = DiagnosticMetrics()
        evaluator = make_evaluator(loggers.loggers, diagnostics.metrics)
        strategy = build_strategy(cfg, backbone, classes_seen[-1], device, evaluator)
        checkpointed = isinstance(strategy, LUCIR)
        fast = checkpointed and strategy.batch_augment is not None
        workers = num_workers(cfg, device, fast)
        results, times = None, []
        if checkpoint is not None:
            strategy.load_state_dict(checkpoint["strategy"], benchmark.train_stream)
            restore_diagnostics(
                diagnostics, evaluator, checkpoint, benchmark.train_stream[:done]
            )
            results = IncrementalResults.from_state_dict(checkpoint["results"])
            times = list(checkpoint["times"])
            if not progress["base"]:
                log.info("%s: resuming after experience %d", cfg.name, done - 1)
        log.info(
            "%s: %s on %s (%d experiences, classes %s), %s, results in %s",
            cfg.name,
            cfg.method,
            cfg.dataset,
            len(classes),
            classes,
            device,
            run_dir,
        )
        clock = [time.perf_counter()]

        def save_model(t: int) -> None:
            if cfg.save_models and main:
                models = run_dir / "models"
                models.mkdir(exist_ok=True)
                with atomic_write(models / f"exp_{t:02d}.pt", "wb") as file:
                    torch.save(strategy.model.state_dict(), file)

        if progress["base"]:  # the stored first experience is this run's
            with deferred():
                save_model(0)

        def after_experience(t: int, results: IncrementalResults) -> None:
            times.append(time.perf_counter() - clock[0])
            with deferred():  # a signal waits until the files are whole
                save_model(t)
                if checkpointed and t + 1 < len(classes):
                    state = run_state(
                        cfg,
                        strategy,
                        evaluator,
                        diagnostics,
                        results,
                        times,
                        loggers.wandb_id,
                    )
                    if state is not None:
                        if save_checkpoint(run_dir / CHECKPOINT_FILE, state):
                            progress["saved"] = t + 1
                        if t == 0 and base is not None and not progress["base"]:
                            base.store(state)

                loggers.flush()
                progress["experience"] = t + 1
            clock[0] = time.perf_counter()  # saving is not training time

        if checkpoint is not None:  # last: nothing may draw after it
            restore_rng(checkpoint, cfg.seed + 1000 * done)
        with tqdm(
            total=len(classes),
            initial=done,
            desc=cfg.name,
            unit="exp",
            disable=cfg.interactive or not main,
        ) as bar:
            results = train_and_evaluate(
                strategy,
                benchmark,
                progress=bar,
                on_experience_end=after_experience,
                num_workers=workers,
                results=results,
                persistent_workers=workers > 0,
            )
        summary = {
            "name": cfg.name,
            "method": cfg.method,
            "dataset": cfg.dataset,
            "device": str(device),
            "versions": _versions(),
            **run_summary(results, classes_seen, times),
            "base_model": _base_record(base, progress),
            **diagnostics.summary(),
        }
        if not main:
            return summary
        title = f"{cfg.method} ({cfg.dataset})"
        with deferred():
            files = write_run(run_dir, summary, title)
            files += write_diagnostics(
                run_dir, summary, diagnostics.prior_trace.records, title
            )
            write_json(run_dir / "results.json", summary)  # last: the run is done
            (run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
        loggers.log_results(
            [run_dir / "results.json", *files],
            {
                k: summary[k]
                for k in (
                    "average_incremental_accuracy",
                    "last_accuracy",
                    "forgetting",
                    "wall_time_s",
                )
            },
        )
    finally:
        loggers.close()
    return summary


def _base_cache(
    cfg: ExperimentConfig, benchmark, device: torch.device
) -> BaseCache | None:
    """The cache entry of the run's first experience: for our methods with
    more than one experience, unless ``reuse_base`` is off."""
    if not cfg.reuse_base or cfg.method not in OUR_METHODS:
        return None
    if len(benchmark.train_stream) < 2:
        return None
    first = benchmark.train_stream[0]
    settings = base_settings(
        cfg,
        [int(c) for c in first.classes_in_this_experience],
        len(first.dataset),
        device,
        fast_input=build_batch_augment(cfg, device) is not None,
        amp=amp_dtype(cfg, device),
    )
    return BaseCache(BaseCache.folder(cfg), settings)


def _base_record(base: BaseCache | None, progress: dict[str, int]) -> dict[str, Any]:
    """What ``results.json`` says of the first experience's model."""
    if base is None:
        return {"reused": False, "cache": None}
    return {"reused": bool(progress["base"]), "cache": str(base.path)}


def _versions() -> dict[str, str]:
    import avalanche

    return {
        "bdr_avalanche": __version__,
        "avalanche": avalanche.__version__,
        "torch": torch.__version__,
    }
