"""Experiment configuration: one flat, typed record per run.

A run is described by an :class:`ExperimentConfig`. Values come, in order of
precedence, from command-line options, then YAML config files (a file may
name the files it extends with ``inherit:``, relative to itself), then the
defaults below. Keys left at ``None`` are resolved from the dataset (e.g.
50 base classes for CIFAR-100, 4 for ``digits``) by :meth:`resolved`.

Every field carries its help text and its range, so the command line and
``--help`` are generated from this one definition. The keys of the LUCIR
strategy and of its plugins take their default, range and help text from
the ``HPARAMS`` of :class:`~bdr_avalanche.LUCIR` (see
:mod:`bdr_avalanche.hparams`), where the plugins' docstrings take theirs.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .hparam_tables import LUCIR_HPARAMS
from .hparams import HParam

__all__ = [
    "BACKBONES",
    "DATASETS",
    "METHODS",
    "OUR_METHODS",
    "RUNTIME_KEYS",
    "ConfigError",
    "ExperimentConfig",
    "load_config",
]

OUR_METHODS: dict[str, dict[str, bool]] = {
    "lucir": {},
    "lucir_cwd": {"cwd": True},
    "lucir_cwd_bdr": {"cwd": True, "bdr": True},
}
"""Our methods and the ``LUCIR`` switches that make them."""

BASELINE_METHODS = ("naive", "replay", "icarl", "lwf", "bic", "gdumb", "der")
METHODS = (*OUR_METHODS, *BASELINE_METHODS)
DATASETS = ("digits", "cifar100", "imagenet", "imagefolder")
BACKBONES = (
    "small_cnn",
    "resnet18_cifar",
    "resnet18_imagenet",
    "resnet8",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
)
WANDB_MODES = ("auto", "online", "offline", "disabled")
AMP_MODES = ("auto", "off", "bf16", "fp16")

# Per dataset: base classes, phases, backbone (None: chosen by resolution).
_DATASET_DEFAULTS: dict[str, tuple[int, int, str | None]] = {
    "digits": (4, 3, "small_cnn"),
    "cifar100": (50, 5, "resnet18_cifar"),
    "imagenet": (500, 5, "resnet18_imagenet"),
    "imagefolder": (50, 5, None),
}
_CHOICES = {
    "method": METHODS,
    "dataset": DATASETS,
    "backbone": BACKBONES,
    "wandb_mode": WANDB_MODES,
    "amp": AMP_MODES,
}


class ConfigError(ValueError):
    """A configuration key has a value that is not allowed."""


def _opt(
    default: Any, help: str, runtime: bool = False, kind: str | None = None
) -> Any:
    """A dataclass field with its help text and its range (a kind of
    :data:`~bdr_avalanche.hparams.KINDS`, ``None``: no range).

    ``runtime`` marks keys that say where or how a run executes and logs but
    not what it computes: they may change when a run is resumed.
    """
    return _field(HParam(default, help, kind), runtime)


def _param(
    hparams: Mapping[str, HParam], name: str, prefix: str = "", suffix: str = ""
) -> Any:
    """The field of the hyper-parameter ``hparams[name]`` (e.g. of
    ``LUCIR.HPARAMS``): its default, its range and its help text (between
    ``prefix`` and ``suffix``), so that ``--help`` says what the docstrings
    say."""
    hp = hparams[name]
    return _field(dataclasses.replace(hp, help=prefix + hp.help + suffix), False)


def _field(hp: HParam, runtime: bool) -> Any:
    metadata = {"help": hp.help, "runtime": runtime, "hparam": hp}
    if isinstance(hp.default, (list, tuple)):  # a list per instance
        return field(default_factory=lambda: list(hp.default), metadata=metadata)
    return field(default=hp.default, metadata=metadata)


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a run; see each field's help."""

    # -- what to run
    method: str = _opt("lucir_cwd_bdr", "method: " + ", ".join(METHODS))
    name: str | None = _opt(
        None,
        "run name and results sub-folder; compare: the comparison's folder "
        "(default: built from the config)",
    )
    seed: int = _opt(
        1993,
        "seed of the training RNGs (Python, NumPy, torch); under torchrun each "
        "process adds its rank",
        kind="non_negative_int",
    )
    # -- data
    dataset: str = _opt(
        "digits",
        "digits (embedded, no download), cifar100, imagenet (ImageNet-1k, "
        "torchvision layout) or imagefolder (root/train/<class>/, root/val/<class>/: "
        "ImageNet-Subset, Tiny-ImageNet)",
    )
    dataset_root: str | None = _opt(
        None,
        "dataset folder (or a .zip for imagefolder); required except for digits",
        runtime=True,
    )
    download: bool = _opt(
        False, "download CIFAR-100 into dataset_root if missing", runtime=True
    )
    n_base: int | None = _opt(
        None,
        "classes of the first experience; 0 = equal phases from the start, "
        "not for digits (default: 4 digits, 50 cifar100/imagefolder, 500 imagenet)",
        kind="non_negative_int",
    )
    n_phases: int | None = _opt(
        None,
        "equal experiences after the first (n_base=0: experiences in all) "
        "(default: 3 digits, else 5)",
        kind="positive_int",
    )
    class_order_seed: int = _opt(
        1993,
        "class order = numpy RandomState(seed).permutation (1993: iCaRL's); "
        "digits: also the seed of its train/test split",
        kind="non_negative_int",
    )
    resolution: int | None = _opt(
        None,
        "image side for imagenet/imagefolder (default 224; e.g. 32 or 64)",
        kind="positive_int",
    )
    in_memory: bool = _opt(
        False,
        "imagefolder: decode all images once and keep them in memory, shrunk "
        "to resolution (needs resolution < 224)",
    )
    num_workers: int | None = _opt(
        None,
        "DataLoader worker processes (default: min(8, CPU cores per process) "
        "on CUDA when the DataLoader path is used, 0 otherwise)",
        runtime=True,
        kind="non_negative_int",
    )
    # -- model
    backbone: str | None = _opt(
        None,
        "backbone: " + ", ".join(BACKBONES) + " (default: by dataset and resolution)",
    )
    width: int = _opt(
        32, "small_cnn: channels of its first convolution", kind="positive_int"
    )
    # -- optimisation (per experience); the schedule is also the baselines'
    epochs: int = _param(LUCIR_HPARAMS, "train_epochs")
    batch_size: int = _param(LUCIR_HPARAMS, "train_mb_size")
    first_batch_size: int | None = _param(
        LUCIR_HPARAMS, "first_train_mb_size", prefix="ours: "
    )
    lr: float = _param(LUCIR_HPARAMS, "lr")
    first_lr: float | None = _param(LUCIR_HPARAMS, "first_lr", prefix="ours: ")
    momentum: float = _param(LUCIR_HPARAMS, "momentum")
    weight_decay: float = _param(LUCIR_HPARAMS, "weight_decay")
    milestones: list[int] = _param(LUCIR_HPARAMS, "milestones")
    lr_decay: float = _param(LUCIR_HPARAMS, "lr_decay")
    eval_batch_size: int = _param(LUCIR_HPARAMS, "eval_mb_size")
    # -- memory
    mem_per_class: int = _param(
        LUCIR_HPARAMS,
        "mem_per_class",
        suffix=" (our methods; the baselines' memories are described in "
        "bdr_avalanche.baselines.MEMORY_MATCHING)",
    )
    # -- LUCIR, CwD, BDR: the plugins' texts, under the strategy's names
    lambda_base: float = _param(LUCIR_HPARAMS, "lambda_base")
    margin: float = _param(LUCIR_HPARAMS, "margin")
    k: int = _param(LUCIR_HPARAMS, "k")
    mr_weight: float = _param(LUCIR_HPARAMS, "mr_weight")
    cwd_coef: float = _param(LUCIR_HPARAMS, "cwd_coef")
    reject_threshold: int = _param(LUCIR_HPARAMS, "reject_threshold")
    m1: float = _param(LUCIR_HPARAMS, "m1")
    m2: float = _param(LUCIR_HPARAMS, "m2")
    bdr_momentum: float = _param(LUCIR_HPARAMS, "bdr_momentum")
    tau: float = _param(LUCIR_HPARAMS, "tau")
    # -- where and how
    device: str = _opt("auto", "auto (cuda if available), cpu, cuda or cuda:N")
    output_dir: str = _opt(
        "results", "folder that receives the run's results folder", runtime=True
    )
    fast_input: bool | None = _opt(
        None,
        "ours: keep each experience's images on the device and augment whole "
        "batches there (default: on CUDA for digits, cifar100 and in_memory "
        "imagefolder)",
    )
    amp: str = _opt(
        "auto",
        "ours: autocast of the forward passes: auto (bf16 on CUDA, off "
        "elsewhere), off, bf16, fp16",
    )
    channels_last: bool = _opt(False, "ours: channels-last memory format")
    compile: bool = _opt(False, "ours: torch.compile the backbone (opt-in)")
    save_models: bool = _opt(
        True,
        "save the model's weights after each experience, to models/exp_XX.pt",
        runtime=True,
    )
    # -- logging
    interactive: bool = _opt(
        True,
        "Avalanche's interactive (progress bar) logger; off: one progress bar "
        "over the experiences",
        runtime=True,
    )
    text_log: bool = _opt(True, "Avalanche's text logger, to log.txt", runtime=True)
    csv_log: bool = _opt(True, "Avalanche's CSV logger, to csv/", runtime=True)
    tensorboard: bool = _opt(
        False, "Avalanche's TensorBoard logger, to tensorboard/", runtime=True
    )
    wandb: bool = _opt(
        False, "log to Weights & Biases with Avalanche's WandBLogger", runtime=True
    )
    wandb_project: str = _opt("bdr-avalanche", "wandb project", runtime=True)
    wandb_entity: str | None = _opt(None, "wandb entity (user or team)", runtime=True)
    wandb_tags: list[str] = _opt([], "wandb tags", runtime=True)
    wandb_mode: str = _opt(
        "auto",
        "auto (WANDB_MODE when set, else online with an API key, else offline), "
        "online, offline, disabled",
        runtime=True,
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), _field_types()[f.name])
        for key, choices in _CHOICES.items():
            value = getattr(self, key)
            if value is not None and value not in choices:
                raise ConfigError(
                    f"{key}={value!r} is not allowed; choose one of "
                    + ", ".join(choices)
                )
        for f in fields(self):
            hp, value = f.metadata["hparam"], getattr(self, f.name)
            if not hp.allows(value):
                raise ConfigError(
                    f"{f.name}={value!r} is not allowed; it must be {hp.bound}"
                )
        if self.dataset != "digits" and self.dataset_root is None:
            raise ConfigError(
                f"dataset_root is required for dataset={self.dataset!r} "
                "(only digits is embedded)"
            )

    # ------------------------------------------------------------------
    def resolved(self) -> ExperimentConfig:
        """A copy with the dataset-dependent defaults and the name filled in."""
        n_base, n_phases, backbone = _DATASET_DEFAULTS[self.dataset]
        resolution = self.resolution
        if resolution is None and self.dataset in ("imagenet", "imagefolder"):
            resolution = 224
        if backbone is None:
            backbone = "resnet18_imagenet" if resolution >= 128 else "resnet18_cifar"
        values = {
            "n_base": n_base if self.n_base is None else self.n_base,
            "n_phases": n_phases if self.n_phases is None else self.n_phases,
            "backbone": backbone if self.backbone is None else self.backbone,
            "resolution": resolution,
        }
        if self.name is None:
            values["name"] = (
                f"{self.dataset}_b{values['n_base']}_{values['n_phases']}phases_"
                f"{self.method}_seed{self.seed}"
            )
        return dataclasses.replace(self, **values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def diff(
        self, other: ExperimentConfig, runtime: bool = True
    ) -> dict[str, tuple[Any, Any]]:
        """Keys whose values differ, with (self, other) values; with
        ``runtime=False``, keys in :data:`RUNTIME_KEYS` are not compared."""
        a, b = self.to_dict(), other.to_dict()
        skip = () if runtime else RUNTIME_KEYS
        return {k: (a[k], b[k]) for k in a if a[k] != b[k] and k not in skip}


RUNTIME_KEYS = frozenset(
    f.name for f in fields(ExperimentConfig) if f.metadata["runtime"]
)
"""Keys that do not change what a run computes (paths, workers, logging)."""


# ----------------------------------------------------------------------
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(ExperimentConfig)


def _check_type(key: str, value: Any, hint: Any) -> None:
    if not _matches(value, hint):
        raise ConfigError(
            f"{key}={value!r} has the wrong type; expected {_type_name(hint)}"
        )


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if origin is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    return hint.__name__


def parse_value(key: str, text: str) -> Any:
    """Parse a command-line value as YAML (``5``, ``0.1``, ``true``,
    ``null``, ``[80, 120]``); lists may also be given as ``80,120``."""
    hint = _field_types()[key]
    value = yaml.safe_load(text) if text.strip() else None
    is_list = "list" in _type_name(hint)
    if is_list and not isinstance(value, list):
        value = [] if value is None else [yaml.safe_load(v) for v in text.split(",")]
    if (
        _type_name(hint).startswith("str")
        and not isinstance(value, str)
        and value is not None
    ):
        value = text  # e.g. a run name that looks like a number
    return value


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config {path} inherits from itself")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    parents = data.pop("inherit", [])
    merged: dict[str, Any] = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        merged.update(_read_yaml(path.parent / parent, (*seen, path)))
    unknown = sorted(set(data) - {f.name for f in fields(ExperimentConfig)})
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)} in {path}; see --help for the keys"
        )
    merged.update(data)
    return merged


def load_config(
    files: Iterable[str | Path] = (), overrides: Mapping[str, Any] | None = None
) -> ExperimentConfig:
    """Merge YAML ``files`` (later ones win) and ``overrides`` over the
    defaults; raise :class:`ConfigError` for unknown keys or bad values."""
    values: dict[str, Any] = {}
    for file in files:
        values.update(_read_yaml(Path(file)))
    values.update(overrides or {})
    unknown = sorted(set(values) - {f.name for f in fields(ExperimentConfig)})
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)}; see --help")
    return ExperimentConfig(**{k: _float_from_text(k, v) for k, v in values.items()})


def _float_from_text(key: str, value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string: for a float key, a
    string that is a number is taken as that number."""
    if isinstance(value, str) and _type_name(_field_types()[key]).startswith("float"):
        try:
            return float(value)
        except ValueError:
            pass
    return value
