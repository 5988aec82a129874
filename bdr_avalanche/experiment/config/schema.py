"""The experiment configuration: its keys, their help texts and ranges.

:class:`ExperimentConfig` is one typed record per run. The training keys
(``epochs``, ``lr``, ``mem_per_class``, ...) are the fields of
:class:`~bdr_avalanche.params.TrainingParams`, which it extends; each
method's own hyper-parameters are a nested record (``lucir``, ``cwd``,
``bdr``, ``lwf``, ``bic``, ``der``: :data:`GROUPS`), whose fields are the
keys ``bdr.m1``, ``cwd.coef``, ... (:func:`config_keys`). A field added
to one of those records is therefore a key, an option and a check with no
other edit.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import typing
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple, cast

from ...benchmarks.specs import DATASETS as DATASET_SPECS
from ...benchmarks.specs import ICARL_SEED, help_texts
from ...methods import ALIASES, BASELINES, BASES, PLUGINS, MethodError, parse_method
from ...params import (
    AGEMParams,
    BDRParams,
    BiCParams,
    CwDParams,
    DERParams,
    ERACEParams,
    HParam,
    LUCIRParams,
    LwFParams,
    Params,
    TrainingParams,
    hparams_of,
)
from ...training.support import methods_taking
from .messages import LISTED_KEYS, ConfigError, _cut, _quote
from .types import check_type

__all__ = [
    "BACKBONES",
    "DATASETS",
    "GROUPS",
    "METHODS",
    "RUNTIME_KEYS",
    "ExperimentConfig",
    "Key",
    "comparison_name",
    "config_keys",
    "did_you_mean",
    "flatten",
    "nest",
    "parse_seeds",
    "unknown_keys",
]

METHODS: tuple[str, ...] = ("lucir", "lucir_cwd", "lucir_cwd_bdr", *BASELINES)
"""The methods ``compare`` runs by default: ours under their classic names,
then every baseline (any composition of :mod:`bdr_avalanche.methods` may
be given)."""
DATASETS = tuple(DATASET_SPECS)
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

# The per-dataset defaults (n_base, n_phases, backbone, resolution) are the
# datasets' specs, bdr_avalanche.benchmarks.specs.DATASETS; so are the facts
# that --help names.
_SPECS = help_texts()
_CHOICES = {
    "dataset": DATASETS,
    "backbone": BACKBONES,
    "wandb_mode": WANDB_MODES,
    "amp": AMP_MODES,
}


def _methods_taking(switch: str) -> str:
    """Which methods take a speed switch, for its help text."""
    left_out = [m for m in BASES if m not in methods_taking(switch, BASES)]
    return "all bases but " + ", ".join(left_out) if left_out else "all methods"


def _opt(
    default: Any, help: str, runtime: bool = False, kind: str | None = None
) -> Any:
    """A config field with its default, help text and range (a kind of
    :data:`~bdr_avalanche.params.KINDS`, ``None``: no range).

    ``runtime`` marks keys that say where or how a run executes and logs but
    not what it computes: they may change when a run is resumed.
    """
    metadata = {"hparam": HParam(default, help, kind), "runtime": runtime}
    if isinstance(default, list):  # a list per instance
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _group(record: type[Params], help: str) -> Any:
    """A config field holding a method's record (its defaults by default)."""
    return field(default_factory=record, metadata={"help": help, "runtime": False})


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig(TrainingParams):
    """Everything that defines a run; see each field's help. The training
    keys are those of :class:`~bdr_avalanche.params.TrainingParams`; each
    method's hyper-parameters are a nested record (``bdr.m1``)."""

    # -- what to run
    method: str = _opt(
        "lucir_cwd_bdr",
        f"method: a base ({', '.join(BASES)}) plus any plugins "
        f"({', '.join(PLUGINS)}) joined by '+', in any order, e.g. replay+bdr, "
        f"der+cwd+bdr, lucir+cwd+bdr; {', '.join(ALIASES)} are aliases",
    )
    name: str | None = _opt(
        None,
        "run name and results sub-folder; compare: the comparison's folder "
        "(default: built from the config)",
    )
    seed: int = _opt(
        1993,
        "seed of the training RNGs (Python, NumPy, torch); under torchrun each "
        "process adds its rank",
        kind="seed",
    )
    # -- data
    dataset: str = _opt("digits", _SPECS["datasets"])
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
        f"not for {_SPECS['no_b0']} (default: {_SPECS['n_base']})",
        kind="non_negative_int",
    )
    n_phases: int | None = _opt(
        None,
        "equal experiences after the first (n_base=0: experiences in all) "
        f"(default: {_SPECS['n_phases']})",
        kind="positive_int",
    )
    class_order_seed: int = _opt(
        ICARL_SEED,
        f"class order = numpy RandomState(seed).permutation ({ICARL_SEED}: iCaRL's); "
        "digits: also the seed of its train/test split",
        kind="seed",
    )
    resolution: int | None = _opt(
        None,
        f"image side for {_SPECS['resized']} (default {_SPECS['resolution']}; "
        "e.g. 32 or 64)",
        kind="positive_int",
    )
    in_memory: bool = _opt(
        False,
        "imagefolder: decode all images once and keep them in memory, shrunk "
        "to resolution (needs resolution < "
        f"{DATASET_SPECS['imagefolder'].shrink_below})",
    )
    num_workers: int | None = _opt(
        None,
        "DataLoader worker processes (default: min(8, CPU cores per process) "
        "on CUDA when the DataLoader path is used, 0 otherwise); each worker "
        "draws its own augmentation stream, so this changes results",
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
    # -- the methods' own hyper-parameters, one record each
    lucir: LUCIRParams = _group(LUCIRParams, "LUCIR's losses (our methods)")
    cwd: CwDParams = _group(CwDParams, "CwD (lucir_cwd, lucir_cwd_bdr)")
    bdr: BDRParams = _group(BDRParams, "BDR (lucir_cwd_bdr)")
    lwf: LwFParams = _group(LwFParams, "the lwf baseline")
    bic: BiCParams = _group(BiCParams, "the bic baseline")
    der: DERParams = _group(DERParams, "the der baseline")
    er_ace: ERACEParams = _group(ERACEParams, "the er_ace baseline")
    agem: AGEMParams = _group(AGEMParams, "the agem baseline")
    # -- where and how
    device: str = _opt("auto", "auto (cuda if available), cpu, cuda or cuda:N")
    output_dir: str = _opt(
        "results", "folder that receives the run's results folder", runtime=True
    )
    fast_input: bool | None = _opt(
        None,
        f"{_methods_taking('fast_input')} (their own loops prevent it): keep "
        "each experience's images on the device and augment whole batches "
        f"there (default: on CUDA for {_SPECS['in_memory']})",
    )
    amp: str = _opt(
        "auto",
        f"{_methods_taking('amp')}: autocast of the forward passes: auto (bf16 "
        "on CUDA, off elsewhere), off, bf16, fp16",
    )
    channels_last: bool = _opt(
        False, f"{_methods_taking('channels_last')}: channels-last memory format"
    )
    compile: bool = _opt(
        False, f"{_methods_taking('compile')}: torch.compile the backbone (opt-in)"
    )
    reuse_base: bool = _opt(
        True,
        "ours: store the model after the first experience and start from it "
        "in runs whose first experience is identical (e.g. lucir_cwd and "
        "lucir_cwd_bdr, or 5 and 10 phases); false: always train it",
        runtime=True,
    )
    base_cache: str | None = _opt(
        None,
        "folder of the stored first-experience models (default: "
        "<output_dir>/base_models; compare: that of its own output_dir)",
        runtime=True,
    )
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
        """Check every key (types, then names and choices, then ranges) in
        the config's wording; a record given as a mapping (``bdr: {m1:
        0.6}``, as a YAML file or a stored ``config.yaml`` has it) is built."""
        for group in GROUPS:
            object.__setattr__(self, group, _record(group, getattr(self, group)))
        keys = config_keys()
        for key, spec in keys.items():
            if spec.group is None:
                check_type(key, getattr(self, key), spec.hint)
        if self.name is not None:
            _check_name(self.name)
        try:
            parse_method(self.method)
        except MethodError as err:
            raise ConfigError(str(err)) from None
        for key, choices in _CHOICES.items():
            value = getattr(self, key)
            if value is not None and value not in choices:
                raise ConfigError(
                    f"{key}={_quote(value)} is not allowed; choose one of "
                    + ", ".join(choices)
                )
        for key, spec in keys.items():
            if spec.group is None:
                _check_range(key, getattr(self, key), spec.hparam)
        embedded = [n for n, spec in DATASET_SPECS.items() if spec.builtin]
        if self.dataset not in embedded and self.dataset_root is None:
            raise ConfigError(
                f"dataset_root is required for dataset={self.dataset!r} "
                f"(only {', '.join(embedded)} is embedded)"
            )

    # ------------------------------------------------------------------
    def resolved(self) -> ExperimentConfig:
        """A copy with the dataset-dependent defaults and the name filled in."""
        spec = DATASET_SPECS[self.dataset]
        resolution = spec.resolution if self.resolution is None else self.resolution
        backbone = self.backbone
        if backbone is None:
            backbone = spec.default_backbone(resolution)
        values: dict[str, Any] = {
            "n_base": spec.n_base if self.n_base is None else self.n_base,
            "n_phases": spec.n_phases if self.n_phases is None else self.n_phases,
            "backbone": backbone,
            "resolution": resolution,
        }
        if self.name is None:
            values["name"] = (
                f"{self.dataset}_b{values['n_base']}_{values['n_phases']}phases_"
                f"{self.method}_seed{self.seed}"
            )
        return dataclasses.replace(self, **values)

    def to_dict(self) -> dict[str, Any]:
        """The keys and values, each record a nested mapping (the layout of
        a YAML file and of a run's ``config.yaml``)."""
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """The keys and values, a record's fields under dotted keys
        (``bdr.m1``), in the order of :func:`config_keys`."""
        return flatten(self.to_dict())

    def replace(self, values: Mapping[str, Any]) -> ExperimentConfig:
        """A copy with ``values`` (dotted keys for the records' fields)."""
        nested = nest(values)
        for group in GROUPS.keys() & nested.keys():
            if isinstance(nested[group], Mapping):
                old = dataclasses.asdict(getattr(self, group))
                nested[group] = {**old, **nested[group]}
        return dataclasses.replace(self, **nested)

    def diff(
        self, other: ExperimentConfig, runtime: bool = True
    ) -> dict[str, tuple[Any, Any]]:
        """Keys (dotted for the records' fields) whose values differ, with
        (self, other) values; with ``runtime=False``, keys in
        :data:`RUNTIME_KEYS` are not compared."""
        a, b = self.flat(), other.flat()
        skip = () if runtime else RUNTIME_KEYS
        return {k: (a[k], b[k]) for k in a if a[k] != b[k] and k not in skip}


GROUPS: dict[str, type[Params]] = {
    # a record's field has its class as default_factory
    f.name: cast("type[Params]", f.default_factory)
    for f in fields(ExperimentConfig)
    if "hparam" not in f.metadata
}
"""The config's nested records by key (``bdr`` -> :class:`BDRParams`): our
methods' plugins and the baselines with hyper-parameters of their own; a
baseline's record has the baseline's name."""


class Key(NamedTuple):
    """One configuration key: its range and help, its type hint, whether
    it may change on resume, and the record it belongs to (``None``: a
    top-level key)."""

    hparam: HParam
    hint: Any
    runtime: bool
    group: str | None


@functools.cache
def config_keys() -> dict[str, Key]:
    """Every key, in field order; a record's fields as ``group.field``."""
    hints = typing.get_type_hints(ExperimentConfig)
    keys: dict[str, Key] = {}
    for f in fields(ExperimentConfig):
        if f.name not in GROUPS:
            hp = f.metadata["hparam"]
            runtime = f.metadata.get("runtime", False)
            keys[f.name] = Key(hp, hints[f.name], runtime, None)
            continue
        record = GROUPS[f.name]
        inner = typing.get_type_hints(record)
        for name, hp in hparams_of(record).items():
            keys[f"{f.name}.{name}"] = Key(hp, inner[name], False, f.name)
    return keys


RUNTIME_KEYS = frozenset(key for key, spec in config_keys().items() if spec.runtime)
"""Keys that do not change what a run computes (paths, workers, logging)."""


def _check_range(key: str, value: Any, hp: HParam) -> None:
    if not hp.allows(value):
        raise ConfigError(
            f"{key}={_quote(value)} is not allowed; it must be {hp.bound}"
        )


def _record(group: str, value: Any) -> Params:
    """The record of ``group`` from ``value``: the record itself, or a
    mapping of its fields, checked in the config's wording
    (``bdr.m1=2 is not allowed; it must be in [0, 1]``)."""
    record = GROUPS[group]
    if isinstance(value, record):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{group}={_quote(value)} has the wrong type; expected a mapping of "
            f"{', '.join(hparams_of(record))}"
        )
    dotted = {f"{group}.{name}": v for name, v in value.items()}
    unknown = unknown_keys(dotted, see="see --help")
    if unknown:
        raise ConfigError(unknown)
    keys = config_keys()
    for key, v in dotted.items():
        check_type(key, v, keys[key].hint)
    for key, v in dotted.items():
        _check_range(key, v, keys[key].hparam)
    return record(**value)


def flatten(values: Mapping[Any, Any]) -> dict[Any, Any]:
    """``values`` with each record's mapping (``bdr: {m1: 0.6}``) spread
    into dotted keys (``bdr.m1: 0.6``); other keys as they are."""
    flat: dict[Any, Any] = {}
    for key, value in values.items():
        if key in GROUPS and isinstance(value, Mapping):
            flat.update({f"{key}.{name}": v for name, v in value.items()})
        else:
            flat[key] = value
    return flat


def nest(values: Mapping[Any, Any]) -> dict[Any, Any]:
    """The inverse of :func:`flatten`: dotted keys of a record gathered
    into its mapping; other keys as they are."""
    nested: dict[Any, Any] = {}
    for key, value in values.items():
        group, dot, name = key.partition(".") if isinstance(key, str) else ("", "", "")
        if dot and group in GROUPS and isinstance(nested.get(group, {}), dict):
            nested.setdefault(group, {})[name] = value
        else:
            nested[key] = value
    return nested


@functools.cache
def _by_field() -> dict[str, list[str]]:
    """Dotted keys by what their flat names were or might be: ``coef`` and
    ``cwd_coef`` -> ``cwd.coef``."""
    near: dict[str, list[str]] = {}
    for key, spec in config_keys().items():
        if spec.group is not None:
            name = key.partition(".")[2]
            for old in (name, f"{spec.group}_{name}"):
                near.setdefault(old, []).append(key)
    return near


def did_you_mean(key: str) -> list[str]:
    """The dotted keys that the flat ``key`` may mean (the names before
    records were nested: ``m1``, ``cwd_coef``, ``bdr_momentum``)."""
    return _by_field().get(key.replace("-", "_"), [])


def unknown_keys(values: Mapping[Any, Any], where: str = "", see: str = "") -> str:
    """The message for the keys of (flat) ``values`` that are not config
    keys (``""``: none): a flat name of a record's field gets "did you
    mean"; otherwise the first :data:`LISTED_KEYS` in order, each cut, and
    how many more. ``where`` follows the keys; ``see`` ends the message."""
    keys = config_keys()
    unknown = sorted(k if isinstance(k, str) and k.isprintable() else repr(k)
                     for k in values if k not in keys and k not in GROUPS)  # fmt: skip
    if not unknown:
        return ""
    for key in unknown:
        near = did_you_mean(key)
        if near:
            return (
                f"unknown key {_cut(repr(key))}{where}; did you mean "
                f"{' or '.join(map(repr, near))}?"
            )
    listed = ", ".join(_cut(k) for k in unknown[:LISTED_KEYS])
    more = len(unknown) - LISTED_KEYS
    listed = f"{listed} and {more:,} more" if more > 0 else listed
    return f"unknown key(s) {listed}{where}{'; ' + see if see else ''}"


_NOT_PORTABLE = ':*?"<>|'
"""Characters that some file systems do not allow in a file name."""
_NO_LINE = ("Cc", "Cs", "Zl", "Zp")
"""Unicode categories refused in a name: control characters, bytes that
were not text (surrogates) and line breaks."""


def _check_name(name: str) -> None:
    """Raise :class:`ConfigError` unless ``name`` is one portable folder
    name: the run's (or the comparison's) results folder."""
    seps = {"/", "\\", os.sep, os.altsep} - {None}
    bad = sorted({ch for ch in name if ch in _NOT_PORTABLE})
    if name in ("", ".", ".."):
        problem = f"it may not be {name!r}" if name else "it may not be empty"
    elif any(ch in seps for ch in name):
        problem = "it may not contain '/' or '\\'"
    elif any(unicodedata.category(ch) in _NO_LINE for ch in name):
        problem = "it may not contain control characters or line breaks"
    elif bad:
        problem = (
            f"it may not contain {' or '.join(map(repr, bad))}, which some "
            f"file systems refuse (none of {_NOT_PORTABLE})"
        )
    elif len(name.encode("utf-8", "surrogatepass")) > 255:
        problem = "it may not be longer than 255 bytes"
    else:
        return
    raise ConfigError(
        f"name={_quote(name)} is not allowed: it must be one folder name; {problem}"
    )


def comparison_name(cfg: ExperimentConfig, seeds: Sequence[int] = ()) -> str:
    """The folder name of a comparison of ``cfg`` over ``seeds`` (default:
    its ``seed``): its ``name``, else one built from its stream and the
    seed (``compare_<stream>_seed<S>``) or seeds
    (``compare_<stream>_seeds<S1>-<S2>``)."""
    if cfg.name is not None:
        return cfg.name
    base = cfg.resolved()
    stream = f"compare_{base.dataset}_b{base.n_base}_{base.n_phases}phases"
    if len(seeds) > 1:
        return f"{stream}_seeds{'-'.join(map(str, seeds))}"
    return f"{stream}_seed{seeds[0] if seeds else base.seed}"


def parse_seeds(text: str) -> tuple[int, ...]:
    """The seeds of ``compare --seeds`` (``"0,1,2"``); :class:`ConfigError`
    for an empty list, a part that is not an integer or a seed given twice
    (the range is the ``seed`` key's, checked with the config)."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        seeds = tuple(int(part) for part in parts)
    except ValueError:
        seeds = ()
    if not seeds:
        raise ConfigError(
            f"seeds={text!r} is not allowed; give comma-separated integer seeds, "
            "e.g. 0,1,2"
        )
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ConfigError(
            f"seeds={text!r} lists seed {repeated[0]} twice; give each seed once"
        )
    return seeds
