"""What a configuration builds: the device, the stream, the backbone, the
strategy (ours or one of Avalanche's), and the checks that need no data.

Each factory takes a resolved :class:`~bdr_avalanche.experiment.config.ExperimentConfig`
and returns a ready object; :func:`validate` checks a configuration against
its dataset before anything is read or written.
"""

from __future__ import annotations

import os

import torch
from avalanche.training.templates import SupervisedTemplate
from torch import nn

from .. import distributed
from ..baselines import make_baseline
from ..benchmarks import DatasetError
from ..benchmarks.specs import DATASETS, in_memory_datasets
from ..methods import parse_method
from ..models import CifarResNet, SmallCNN, resnet18_cifar, resnet18_imagenet
from ..params import TrainingParams
from ..strategy import LUCIR
from ..training.augment import BatchAugment
from ..training.speed import Speed
from ..training.support import unsupported
from .composition import baseline_plugins, check_method
from .config import GROUPS, ConfigError, ExperimentConfig
from .launch import check_launch

__all__ = [
    "amp_dtype",
    "build_backbone",
    "build_batch_augment",
    "build_benchmark",
    "build_strategy",
    "check_speed",
    "num_workers",
    "process_device",
    "resolve_device",
    "validate",
]


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
    """The class-incremental stream the (resolved) config names, built by
    its dataset's spec."""
    spec = DATASETS[cfg.dataset]
    assert cfg.n_base is not None and cfg.n_phases is not None  # resolved
    try:
        spec.check_n_base(cfg.n_base)
        # the classes per phase, where the classes are known before reading
        known = spec.classes is not None
        return spec.stream(
            dataset_root=cfg.dataset_root,
            n_base=cfg.n_base,
            n_phases=cfg.n_phases,
            increment=spec.split(cfg.n_base, cfg.n_phases) if known else None,
            seed=cfg.class_order_seed,
            resolution=cfg.resolution,
            in_memory=cfg.in_memory,
            download=cfg.download,
        )
    except DatasetError:
        raise
    except ValueError as err:  # inconsistent class counts and the like
        raise ConfigError(str(err)) from None


def validate(cfg: ExperimentConfig) -> None:
    """Check what the (resolved) config asks of its dataset, without loading
    any data: that ``n_base`` and ``n_phases`` split its classes and that
    ``mem_per_class`` does not exceed its smallest class. For an
    ImageFolder tree the class folders are counted (a missing tree raises
    :class:`DatasetError`). The facts are the dataset's spec
    (:data:`~bdr_avalanche.benchmarks.specs.DATASETS`); and that the speed
    switches it sets explicitly are ones its method takes
    (:func:`check_speed`); and that the compatibility matrix allows the
    method's plugins on its base
    (:func:`~.composition.check_method`), and that a baseline sets neither
    ``first_lr`` nor ``first_batch_size``. Raises :class:`ConfigError`."""
    method = check_method(cfg)
    first = [k for k in ("first_lr", "first_batch_size") if getattr(cfg, k) is not None]
    if first and not method.ours:
        raise ConfigError(
            f"{' and '.join(first)} apply to the lucir base only; method="
            f"{cfg.method!r} trains every experience with lr and batch_size: "
            f"leave {' and '.join(first)} unset"
        )
    check_speed(cfg)
    spec = DATASETS[cfg.dataset]
    assert cfg.n_base is not None and cfg.n_phases is not None  # resolved
    try:
        spec.check_n_base(cfg.n_base)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    limit = spec.shrink_below
    if cfg.in_memory and spec.in_memory is None:
        # held in memory on request: shrunk below a limit, to a resolution
        assert limit is not None and cfg.resolution is not None
        if cfg.resolution >= limit:
            raise ConfigError(
                f"in_memory=true needs resolution < {limit} (images are "
                f"kept shrunk in memory); got resolution={cfg.resolution}"
            )
    num_classes, smallest = spec.sizes(cfg.dataset_root, cfg.class_order_seed)
    try:
        spec.split(cfg.n_base, cfg.n_phases, num_classes)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if cfg.fast_input and not spec.fits_in_memory(cfg.in_memory):
        always, optional = in_memory_datasets()
        raise ConfigError(
            f"fast_input=true needs the images in memory: dataset "
            f"{', '.join(sorted(always))}, or "
            f"{' or '.join(f'{name} with in_memory=true' for name in optional)} "
            f"(got dataset={cfg.dataset!r}, in_memory={cfg.in_memory})"
        )
    if cfg.mem_per_class > smallest:
        raise ConfigError(
            f"mem_per_class={cfg.mem_per_class} is not allowed: the smallest class "
            f"of {cfg.dataset} has {smallest} training images; use at most {smallest}"
        )


def check_speed(cfg: ExperimentConfig) -> None:
    """Raise :class:`ConfigError` when the config sets a speed switch
    explicitly (``fast_input: true``, ``amp: bf16|fp16``, ``channels_last``,
    ``compile``) that its method cannot take
    (:data:`~bdr_avalanche.training.support.UNSUPPORTED`); switches left
    to ``auto`` fall back to what the method takes."""
    asked = {
        "fast_input": cfg.fast_input is True,
        "amp": cfg.amp in ("bf16", "fp16"),
        "channels_last": cfg.channels_last,
        "compile": cfg.compile,
    }
    base = parse_method(cfg.method).base
    for switch, on in asked.items():
        reason = unsupported(base, switch) if on else None
        if reason is not None:
            value = cfg.amp if switch == "amp" else "true"
            raise ConfigError(
                f"{switch}={value} is not available for method={cfg.method!r}: {reason}"
            )


def build_batch_augment(
    cfg: ExperimentConfig, device: torch.device
) -> BatchAugment | None:
    """The on-device training augmentation of the dataset's images, the
    same recipe as its torchvision transforms (its spec's); ``None`` when
    ``fast_input`` is off (by default: on CUDA when the dataset is held in
    memory and the method takes it)."""
    spec = DATASETS[cfg.dataset]
    use = (
        device.type == "cuda"
        and spec.fits_in_memory(cfg.in_memory)
        and unsupported(parse_method(cfg.method).base, "fast_input") is None
        if cfg.fast_input is None
        else cfg.fast_input
    )
    if not use:
        return None
    return BatchAugment.from_recipe(spec.recipe(cfg.resolution, cfg.in_memory))


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
    """The autocast dtype ``amp`` asks for (``auto``: bf16 on CUDA only,
    for a method that takes it)."""
    if cfg.amp == "auto":
        takes = unsupported(parse_method(cfg.method).base, "amp") is None
        return torch.bfloat16 if device.type == "cuda" and takes else None
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.amp]


def build_backbone(cfg: ExperimentConfig) -> nn.Module:
    """The (resolved) config's backbone, randomly initialised."""
    assert cfg.backbone is not None  # resolved
    channels = DATASETS[cfg.dataset].channels
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
    """Our ``LUCIR`` strategy for our methods, else an Avalanche baseline;
    both with the config's speed switches (fast input path, autocast,
    channels-last, compile), so that every method is fed the same way.

    The records go as they are: the training keys
    (:class:`~bdr_avalanche.params.TrainingParams`), and ``cfg.lucir``,
    ``cfg.cwd`` and ``cfg.bdr`` for the plugins that the method has
    (:mod:`bdr_avalanche.methods`); a baseline gets the record of its name
    when the config has one (``cfg.der``) and the plugins of the method
    (:func:`~.composition.baseline_plugins`)."""
    training = TrainingParams.take(cfg)
    speed = Speed(
        batch_augment=build_batch_augment(cfg, device),
        amp_dtype=amp_dtype(cfg, device),
        channels_last=cfg.channels_last,
        compile=cfg.compile,
    )
    method = parse_method(cfg.method)
    if not method.ours:
        return make_baseline(
            method.base,
            backbone=backbone,
            num_classes=num_classes,
            training=training,  # validate refused first_lr, first_batch_size
            device=device,
            evaluator=evaluator,
            plugins=baseline_plugins(cfg),
            hparams=getattr(cfg, method.base) if method.base in GROUPS else None,
            speed=speed,
            cosine_head=method.has("lucir"),  # LUCIR's plugin needs one
        )
    return LUCIR(
        backbone=backbone,
        training=training,
        lucir=cfg.lucir,
        cwd=cfg.cwd if method.has("cwd") else False,
        bdr=cfg.bdr if method.has("bdr") else False,
        device=device,
        evaluator=evaluator,
        speed=speed,
    )


def process_device(cfg: ExperimentConfig) -> torch.device:
    """The run's device; under ``torchrun``, this process's device, after
    joining the process group (our methods only, batches that split)."""
    device = resolve_device(cfg.device)
    if not distributed.launched_by_torchrun():
        return device
    check_launch(cfg)
    try:
        device = distributed.init_from_env(device)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return device
