"""Run an experiment from an :class:`~bdr_avalanche.config.ExperimentConfig`.

:func:`run_experiment` builds the stream, the backbone and the strategy
(ours or one of Avalanche's built-ins), trains with the class-incremental
protocol of :mod:`bdr_avalanche.protocol`, and writes one results folder:

- ``config.yaml``: the resolved configuration;
- ``results.json``, ``accuracy_matrix.csv``, ``phases.csv``,
  ``accuracy_matrix.png`` (see :mod:`bdr_avalanche.report`);
- the diagnostics of :class:`~bdr_avalanche.metrics.DiagnosticMetrics`:
  the memory samples' share of the logit gradient per epoch (logged, in
  ``results.json`` and ``memory_gradient_share.png``), the last-layer
  analysis (``results.json``, ``last_layer.png``) and, with BDR, the
  prior trace (``bdr_prior_trace.png``, ``prior_trace.npz``);
- ``models/exp_XX.pt``: the model's ``state_dict`` after each experience;
- the loggers' output (``log.txt``, ``csv/``, ``tensorboard/``, ``wandb/``).

:func:`run_comparison` runs several methods on the same stream and writes
the comparison table and figures next to their run folders.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.templates import SupervisedTemplate
from torch import nn
from tqdm.auto import tqdm

from . import __version__, distributed
from ._atomic import atomic_write, write_text
from .augment import BatchAugment
from .baselines import MEMORY_MATCHING, make_baseline
from .benchmarks import (
    DatasetError,
    digits_class_sizes,
    split_cifar100,
    split_digits,
    split_imagefolder,
    split_imagenet,
)
from .benchmarks._common import stream_layout
from .benchmarks.imagefolder import FULL_RESOLUTION, imagefolder_class_sizes
from .benchmarks.transforms import IMAGENET_MEAN, IMAGENET_STD
from .checkpoint import (
    CheckpointError,
    evaluator_state,
    load_checkpoint,
    load_evaluator_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import METHODS, OUR_METHODS, ConfigError, ExperimentConfig
from .interrupt import Interrupted, deferred
from .loggers import RunLoggers
from .metrics import DiagnosticMetrics
from .models import CifarResNet, SmallCNN, resnet18_cifar, resnet18_imagenet
from .protocol import IncrementalResults, make_evaluator, train_and_evaluate
from .report import (
    read_run,
    run_summary,
    write_comparison,
    write_diagnostics,
    write_json,
    write_run,
)
from .run_folder import RunFolder
from .strategy import LUCIR

__all__ = [
    "RunExistsError",
    "amp_dtype",
    "build_backbone",
    "build_batch_augment",
    "build_benchmark",
    "build_strategy",
    "num_workers",
    "resolve_device",
    "validate",
    "run_comparison",
    "run_experiment",
]

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = 1

OUR_MEMORY = "herding, mem_per_class exemplars for every seen class (the paper's rule)"


class RunExistsError(RuntimeError):
    """The results folder holds a finished run and overwriting was not asked."""


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; a CUDA device that does not
    exist raises :class:`ConfigError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"device={name!r} is not a device; use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = device.index or 0
        if index >= count:
            raise ConfigError(
                f"device={name!r} does not exist: this machine has {count} CUDA "
                "device(s); use auto or cpu"
            )
    elif device.type != "cpu":
        available = getattr(getattr(torch, device.type, None), "is_available", None)
        if available is None or not available():
            raise ConfigError(
                f"device={name!r} is not available on this machine; use auto or cpu"
            )
    return device


def build_benchmark(cfg: ExperimentConfig):
    """The class-incremental stream the (resolved) config names."""
    if cfg.dataset == "digits":
        if cfg.n_base < 1:
            raise ConfigError("digits needs n_base >= 1")
        return split_digits(
            n_base=cfg.n_base,
            increment=_increment(cfg, total=10),
            seed=cfg.class_order_seed,
        )
    common = {
        "n_base": cfg.n_base,
        "n_phases": cfg.n_phases,
        "seed": cfg.class_order_seed,
    }
    try:
        if cfg.dataset == "cifar100":
            return split_cifar100(cfg.dataset_root, download=cfg.download, **common)
        if cfg.dataset == "imagenet":
            return split_imagenet(cfg.dataset_root, resolution=cfg.resolution, **common)
        return split_imagefolder(
            cfg.dataset_root,
            resolution=cfg.resolution,
            in_memory=cfg.in_memory,
            **common,
        )
    except DatasetError:
        raise
    except ValueError as err:  # inconsistent class counts and the like
        raise ConfigError(str(err)) from None


# Datasets of fixed size: classes, training images of the smallest class
# (ImageNet-1k's classes have 732 to 1300 training images).
_DATASET_SIZES = {"cifar100": (100, 500), "imagenet": (1000, 732)}


def validate(cfg: ExperimentConfig) -> None:
    """Check what the (resolved) config asks of its dataset, without loading
    any data: that ``n_base`` and ``n_phases`` split its classes and that
    ``mem_per_class`` does not exceed its smallest class. For an
    ImageFolder tree the class folders are counted (a missing tree raises
    :class:`DatasetError`). Raises :class:`ConfigError`."""
    if cfg.dataset == "digits":
        if cfg.n_base < 1:
            raise ConfigError(
                f"n_base={cfg.n_base} is not allowed for digits; it must be >= 1"
            )
        sizes = digits_class_sizes(cfg.class_order_seed)
        num_classes, smallest = len(sizes), min(sizes)
    elif cfg.dataset == "imagefolder":
        if cfg.in_memory and cfg.resolution >= FULL_RESOLUTION:
            raise ConfigError(
                f"in_memory=true needs resolution < {FULL_RESOLUTION} (images are "
                f"kept shrunk in memory); got resolution={cfg.resolution}"
            )
        sizes = imagefolder_class_sizes(cfg.dataset_root)
        num_classes, smallest = len(sizes), min(sizes.values())
    else:
        num_classes, smallest = _DATASET_SIZES[cfg.dataset]
    try:
        stream_layout(num_classes, cfg.n_base, cfg.n_phases)
    except ValueError:
        raise ConfigError(
            f"n_base={cfg.n_base}, n_phases={cfg.n_phases} do not split the "
            f"{num_classes} classes of {cfg.dataset}: n_base + n_phases * increment "
            f"must equal {num_classes}, with 0 <= n_base < {num_classes}"
        ) from None
    if cfg.fast_input and not _fits_in_memory(cfg):
        raise ConfigError(
            f"fast_input=true needs the images in memory: dataset cifar100, digits, "
            f"or imagefolder with in_memory=true (got dataset={cfg.dataset!r}, "
            f"in_memory={cfg.in_memory})"
        )
    if cfg.mem_per_class > smallest:
        raise ConfigError(
            f"mem_per_class={cfg.mem_per_class} is not allowed: the smallest class "
            f"of {cfg.dataset} has {smallest} training images; use at most {smallest}"
        )


def _fits_in_memory(cfg: ExperimentConfig) -> bool:
    return cfg.dataset in ("digits", "cifar100") or (
        cfg.dataset == "imagefolder" and cfg.in_memory
    )


def build_batch_augment(
    cfg: ExperimentConfig, device: torch.device
) -> BatchAugment | None:
    """The on-device training augmentation of the dataset's images, the
    same recipe as its torchvision transforms; ``None`` when ``fast_input``
    is off (by default: on CUDA when the dataset is held in memory)."""
    use = (
        device.type == "cuda" and _fits_in_memory(cfg)
        if cfg.fast_input is None
        else cfg.fast_input
    )
    if not use:
        return None
    if cfg.dataset == "digits":  # standardised floats, RandomCrop(8, padding=1)
        return BatchAugment((0.0,), (1.0,), padding=1)
    if cfg.dataset == "cifar100":
        return BatchAugment.cifar()
    return BatchAugment.cifar(IMAGENET_MEAN, IMAGENET_STD, padding=cfg.resolution // 8)


def num_workers(cfg: ExperimentConfig, device: torch.device, fast: bool) -> int:
    """DataLoader worker processes: ``num_workers`` when set; by default
    ``min(8, CPU cores per process)`` when a GPU waits on the per-image transforms of
    the DataLoader path, 0 on CPU (where the workers would take cores from
    training) and with the fast input path (which needs none)."""
    if cfg.num_workers is not None:
        return cfg.num_workers
    if device.type != "cuda" or fast:
        return 0
    # torchrun: the node's cores are shared by its processes
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(8, (os.cpu_count() or 1) // per_node))


def amp_dtype(cfg: ExperimentConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype ``amp`` asks for (``auto``: bf16 on CUDA only)."""
    if cfg.amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.amp]


def _increment(cfg: ExperimentConfig, total: int) -> int:
    rest = total - cfg.n_base
    if rest <= 0 or rest % cfg.n_phases:
        raise ConfigError(
            f"n_base={cfg.n_base} and n_phases={cfg.n_phases} do not split the "
            f"{total} classes of {cfg.dataset}: n_base + n_phases * increment must "
            f"equal {total}"
        )
    return rest // cfg.n_phases


def build_backbone(cfg: ExperimentConfig) -> nn.Module:
    """The (resolved) config's backbone, randomly initialised."""
    channels = 1 if cfg.dataset == "digits" else 3
    if cfg.backbone == "small_cnn":
        return SmallCNN(in_channels=channels, width=cfg.width)
    if channels != 3:
        raise ConfigError(
            f"backbone={cfg.backbone!r} needs RGB images; {cfg.dataset} is "
            "grey-scale: use backbone=small_cnn"
        )
    if cfg.backbone == "resnet18_cifar":
        return resnet18_cifar()
    if cfg.backbone == "resnet18_imagenet":
        return resnet18_imagenet()
    return CifarResNet(depth=int(cfg.backbone.removeprefix("resnet")))


def build_strategy(
    cfg: ExperimentConfig,
    backbone: nn.Module,
    num_classes: int,
    device: torch.device,
    evaluator,
) -> SupervisedTemplate:
    """Our ``LUCIR`` strategy for our methods, else an Avalanche baseline."""
    schedule: dict[str, Any] = {
        "lr": cfg.lr,
        "momentum": cfg.momentum,
        "weight_decay": cfg.weight_decay,
        "milestones": list(cfg.milestones),
        "lr_decay": cfg.lr_decay,
        "train_mb_size": cfg.batch_size,
        "train_epochs": cfg.epochs,
        "eval_mb_size": cfg.eval_batch_size,
        "mem_per_class": cfg.mem_per_class,
        "device": device,
        "evaluator": evaluator,
    }
    if cfg.method not in OUR_METHODS:
        return make_baseline(
            cfg.method, backbone=backbone, num_classes=num_classes, **schedule
        )
    return LUCIR(
        backbone=backbone,
        first_lr=cfg.first_lr,
        first_train_mb_size=cfg.first_batch_size,
        lambda_base=cfg.lambda_base,
        margin=cfg.margin,
        k=cfg.k,
        mr_weight=cfg.mr_weight,
        cwd_coef=cfg.cwd_coef,
        reject_threshold=cfg.reject_threshold,
        m1=cfg.m1,
        m2=cfg.m2,
        bdr_momentum=cfg.bdr_momentum,
        tau=cfg.tau,
        batch_augment=build_batch_augment(cfg, device),
        amp_dtype=amp_dtype(cfg, device),
        channels_last=cfg.channels_last,
        compile_backbone=cfg.compile,
        **OUR_METHODS[cfg.method],
        **schedule,
    )


def _previous_run(
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


def _process_device(cfg: ExperimentConfig) -> torch.device:
    """The run's device; under ``torchrun``, this process's device, after
    joining the process group (our methods only, batches that split)."""
    device = resolve_device(cfg.device)
    if not distributed.launched_by_torchrun():
        return device
    if cfg.method not in OUR_METHODS:
        raise ConfigError(
            f"method={cfg.method!r} cannot run under torchrun; distributed "
            f"training supports {', '.join(OUR_METHODS)}"
        )
    try:
        device = distributed.init_from_env(device)
        distributed.shard_size(cfg.batch_size, "batch_size")
        if cfg.first_batch_size is not None:
            distributed.shard_size(cfg.first_batch_size, "first_batch_size")
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return device


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


def _seed(value: int) -> int:
    """``value`` in NumPy's seed range [0, 2**32 - 1] (a seed near the top
    of the range plus a rank or an offset wraps around)."""
    return value % 2**32


def _restore_rng(checkpoint: dict[str, Any], fallback_seed: int) -> None:
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
    RNGManager.set_random_seeds(_seed(fallback_seed + distributed.rank()))


def _restore_diagnostics(
    diagnostics: DiagnosticMetrics,
    evaluator,
    checkpoint: dict[str, Any],
    done_experiences: Sequence,
) -> None:
    """Restore the evaluator's metrics and the diagnostics from a
    checkpoint. A checkpoint written before the diagnostics existed has
    no state for them (they come last in the evaluator): they start with
    the classes of the finished experiences and no history."""
    saved = list(checkpoint["evaluator"])
    if "diagnostics" in checkpoint:
        diagnostics.load_state_dict(checkpoint["diagnostics"])
    else:
        saved += [None] * len(diagnostics.metrics)
        diagnostics.set_seen_experiences(
            [
                (exp.current_experience, exp.classes_in_this_experience)
                for exp in done_experiences
            ]
        )
    load_evaluator_state(evaluator, saved)


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
    device = _process_device(cfg)
    validate(cfg)
    run_dir = Path(cfg.output_dir) / cfg.name
    folder = RunFolder.open(run_dir, "run") if distributed.is_main_process() else None
    progress = {"experience": 0, "saved": 0}  # in progress; resumable from
    checkpoint, fresh = None, False
    try:
        checkpoint = _previous_run(run_dir, cfg, overwrite)
        if checkpoint is not None:
            progress["experience"] = progress["saved"] = len(checkpoint["times"])
        distributed.barrier()  # every process has read the folder before it changes
        # Config and data errors surface before any file is written.
        backbone = build_backbone(cfg)
        benchmark = build_benchmark(cfg)
        if folder is not None and checkpoint is None:
            fresh = True
            _start_afresh(folder, cfg)
        summary = _train(
            cfg, device, run_dir, backbone, benchmark, checkpoint, progress
        )
    except BaseException as err:
        if isinstance(err, Interrupted) and err.experience is None:
            err.experience, err.resume_from = progress["experience"], progress["saved"]
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
) -> dict[str, Any]:
    """Train and evaluate the (resolved) ``cfg`` into its prepared folder;
    ``progress`` follows the experience in progress and the last saved."""
    main = distributed.is_main_process()
    # one seed per process: their augmentations must not repeat each other
    RNGManager.set_random_seeds(_seed(cfg.seed + distributed.rank()))
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
            _restore_diagnostics(
                diagnostics, evaluator, checkpoint, benchmark.train_stream[:done]
            )
            results = IncrementalResults.from_state_dict(checkpoint["results"])
            times = list(checkpoint["times"])
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

        def after_experience(t: int, results: IncrementalResults) -> None:
            times.append(time.perf_counter() - clock[0])
            with deferred():  # a signal waits until the files are whole
                if cfg.save_models and main:
                    models = run_dir / "models"
                    models.mkdir(exist_ok=True)
                    with atomic_write(models / f"exp_{t:02d}.pt", "wb") as file:
                        torch.save(strategy.model.state_dict(), file)
                if checkpointed and t + 1 < len(classes):
                    _save_checkpoint(
                        run_dir,
                        cfg,
                        strategy,
                        evaluator,
                        diagnostics,
                        results,
                        times,
                        loggers,
                        progress,
                        t,
                    )
                loggers.flush()
                progress["experience"] = t + 1
            clock[0] = time.perf_counter()  # saving is not training time

        if checkpoint is not None:  # last: nothing may draw after it
            _restore_rng(checkpoint, cfg.seed + 1000 * done)
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


def _save_checkpoint(
    run_dir: Path,
    cfg: ExperimentConfig,
    strategy: LUCIR,
    evaluator,
    diagnostics: DiagnosticMetrics,
    results: IncrementalResults,
    times: Sequence[float],
    loggers: RunLoggers,
    progress: dict[str, int],
    t: int,
) -> None:
    """Every process takes part; rank 0 saves everyone's state."""
    rank_rng = distributed.gather_objects(rng_state())
    if not distributed.is_main_process():
        return
    state = {
        "format": CHECKPOINT_FORMAT,
        "config": cfg.to_dict(),
        "strategy": strategy.state_dict(),
        "evaluator": evaluator_state(evaluator),
        "diagnostics": diagnostics.state_dict(),
        "results": results.state_dict(),
        "times": list(times),
        "wandb_id": loggers.wandb_id,
        "rank_rng": rank_rng,
    }
    if save_checkpoint(run_dir / CHECKPOINT_FILE, state):
        progress["saved"] = t + 1


def run_comparison(
    cfg: ExperimentConfig, methods: Sequence[str], overwrite: bool = False
) -> dict[str, dict[str, Any]]:
    """Run every method of ``methods`` with ``cfg``'s stream, backbone,
    schedule and memory, then write the comparison table and figures.

    Runs go to ``<output_dir>/<name>/<method>/``. A method whose folder
    already holds a finished run with the same configuration is not run
    again (so an interrupted comparison picks up where it stopped); one
    with a different configuration raises unless ``overwrite``.
    """
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise ConfigError(
            f"methods={','.join(methods)!r} is not allowed; give one or more of "
            + ", ".join(METHODS)
        )
    base = cfg.resolved()
    resolve_device(base.device)
    validate(base)  # before any method runs
    name = cfg.name or (
        f"compare_{base.dataset}_b{base.n_base}_{base.n_phases}phases_seed{base.seed}"
    )
    out_dir = Path(cfg.output_dir) / name
    runs: dict[str, dict[str, Any]] = {}
    with RunFolder.open(out_dir, "compare"):
        for method in methods:
            sub = dataclasses.replace(
                base, method=method, name=method, output_dir=str(out_dir)
            )
            run_dir = out_dir / method
            if not overwrite and (run_dir / "results.json").exists():
                _check_finished_run(run_dir, sub)
                log.info("%s: reusing the finished run in %s", method, run_dir)
                runs[method] = read_run(run_dir)
                continue
            try:
                runs[method] = run_experiment(sub, overwrite=overwrite)
            except Interrupted as err:
                err.where = f" of {method}"
                raise
        notes = {
            m: OUR_MEMORY if m in OUR_METHODS else MEMORY_MATCHING[m] for m in runs
        }
        title = (
            f"{base.dataset}: {base.n_base} base classes + {base.n_phases} phases, "
            f"{base.backbone}, {base.epochs} epochs, {base.mem_per_class} "
            "exemplars/class"
        )
        with deferred():
            write_comparison(runs, out_dir, title, notes)
    log.info("comparison written to %s", out_dir)
    return runs


def _check_finished_run(run_dir: Path, cfg: ExperimentConfig) -> None:
    """Raise unless the finished run in ``run_dir`` has ``cfg``'s
    configuration (keys in :data:`~bdr_avalanche.config.RUNTIME_KEYS`
    aside): a missing, malformed or foreign ``config.yaml`` raises
    :class:`ConfigError`, another configuration :class:`RunExistsError`."""
    path = run_dir / "config.yaml"
    again = f"pass --overwrite to run {cfg.method} again"
    try:
        previous = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing; {again}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        problem = getattr(err, "problem", None) or getattr(err, "strerror", None)
        raise ConfigError(
            f"{path} cannot be read ({problem or type(err).__name__}); {again}"
        ) from None
    if not isinstance(previous, dict):
        raise ConfigError(f"{path} does not hold a mapping of keys; {again}")
    try:
        saved = ExperimentConfig(**previous)
    except TypeError:
        unknown = sorted(set(previous) - set(cfg.to_dict()))
        raise ConfigError(
            f"{path} has unknown key(s) {', '.join(map(str, unknown))}; {again}"
        ) from None
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}; {again}") from None
    changed = cfg.diff(saved, runtime=False)
    if changed:
        raise RunExistsError(
            f"{run_dir} holds a finished run with another configuration "
            f"(differs in {', '.join(sorted(changed))}); {again}"
        )


def _versions() -> dict[str, str]:
    import avalanche

    return {
        "bdr_avalanche": __version__,
        "avalanche": avalanche.__version__,
        "torch": torch.__version__,
    }
