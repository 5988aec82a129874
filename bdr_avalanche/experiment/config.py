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
import functools
import os
import stat
import types
import typing
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..benchmarks.specs import DATASETS as DATASET_SPECS
from ..benchmarks.specs import ICARL_SEED, help_texts
from ..hparam_tables import LUCIR_HPARAMS
from ..hparams import HParam
from ..training.support import methods_taking

__all__ = [
    "BACKBONES",
    "DATASETS",
    "METHODS",
    "OUR_METHODS",
    "RUNTIME_KEYS",
    "MAX_CONFIG_BYTES",
    "ConfigError",
    "ExperimentConfig",
    "comparison_name",
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
    "method": METHODS,
    "dataset": DATASETS,
    "backbone": BACKBONES,
    "wandb_mode": WANDB_MODES,
    "amp": AMP_MODES,
}


def _methods_taking(switch: str) -> str:
    """Which methods take a speed switch, for its help text."""
    left_out = [m for m in METHODS if m not in methods_taking(switch, METHODS)]
    return "all methods but " + ", ".join(left_out) if left_out else "all methods"


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
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), _field_types()[f.name])
        if self.name is not None:
            _check_name(self.name)
        for key, choices in _CHOICES.items():
            value = getattr(self, key)
            if value is not None and value not in choices:
                raise ConfigError(
                    f"{key}={_quote(value)} is not allowed; choose one of "
                    + ", ".join(choices)
                )
        for f in fields(self):
            hp, value = f.metadata["hparam"], getattr(self, f.name)
            if not hp.allows(value):
                raise ConfigError(
                    f"{f.name}={_quote(value)} is not allowed; it must be {hp.bound}"
                )
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
        values = {
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
@functools.cache
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(ExperimentConfig)


def _check_type(key: str, value: Any, hint: Any) -> None:
    if not _matches(value, hint):
        raise ConfigError(
            f"{key}={_quote(value)} has the wrong type; expected {_type_name(hint)}"
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


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_NULL = ("null", "none", "")


def parse_value(key: str, text: str) -> Any:
    """Parse a command-line value by the type of ``key``.

    Text keys take the text as it is (``null``, ``~``, ``run #2`` and
    ``a: b`` are text); for a text key that may be null, the empty text
    means null (the default). Numbers are read by ``int`` or ``float``
    (``1e-3``), booleans from true/false, yes/no, on/off, 1/0; keys that
    may be null also take null, none or the empty text. Lists are a YAML
    flow list ``[80, 120]`` or comma-separated ``80,120``, each item read
    by the item type. Raise :class:`ConfigError` (one line) when the text
    is not of the key's type; ranges are checked by :class:`ExperimentConfig`.
    """
    hints = _field_types()
    if key not in hints:
        raise ConfigError(f"unknown key {key!r}; see --help")
    return _parse(key, text, hints[key])


def _parse(key: str, text: str, hint: Any) -> Any:
    """``text`` as a value of the type ``hint``, for key ``key``."""
    args = typing.get_args(hint)
    optional = _is_union(hint) and type(None) in args
    if optional:
        others = [h for h in args if h is not type(None)]
        hint = others[0] if len(others) == 1 else hint
    if hint is str:
        return None if optional and text == "" else text
    if optional and text.strip().lower() in _NULL:
        return None
    origin = typing.get_origin(hint)
    if origin is list:
        return _parse_list(key, text, typing.get_args(hint)[0])
    if hint is dict or origin is dict:
        return _parse_mapping(key, text)
    try:
        return _parse_scalar(text, hint)
    except ValueError as err:
        null = ", or null, none or an empty value for the default" if optional else ""
        raise ConfigError(f"{key}={_quote(text)} {err}{null}") from None


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _parse_scalar(text: str, hint: Any) -> Any:
    """``text`` as a ``hint`` (str, int, float or bool); ``ValueError``
    with what was expected when it is not one."""
    if hint is str:
        return text
    if hint is bool:
        word = text.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        pairs = ", ".join(f"{t}/{f}" for t, f in zip(_TRUE, _FALSE, strict=True))
        raise ValueError(f"is not a boolean; expected one of {pairs}")
    if hint is int:
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError("is not an integer; expected int") from None
    if hint is float:
        try:
            return float(text.strip())
        except ValueError:
            raise ValueError(
                "is not a number; expected float (e.g. 0.1 or 1e-3)"
            ) from None
    return text  # a type without a parser of its own: checked by the config


def _parse_list(key: str, text: str, item: Any) -> list[Any]:
    """A YAML flow list (``[80, 120]``) or comma-separated items, each
    item read by ``_parse_scalar`` as an ``item`` (text items literally)."""
    form = f"expected a list of {_type_name(item)} as [a, b] or a,b"
    body = text.strip()
    if body.startswith("["):
        try:
            node = yaml.compose(body, Loader=yaml.SafeLoader)
        except yaml.YAMLError as err:
            raise ConfigError(
                f"{key}={_quote(text)} is not a list: "
                f"{_yaml_problem(err, lines=False)}; {form}"
            ) from None
        if not isinstance(node, yaml.SequenceNode) or not all(
            isinstance(n, yaml.ScalarNode) for n in node.value
        ):
            raise ConfigError(
                f"{key}={_quote(text)} is not a list of single values; {form}"
            )
        items = [n.value for n in node.value]
    else:
        items = [part.strip() for part in body.split(",")]
        items = [part for part in items if part]
    values = []
    for part in items:
        try:
            values.append(_parse_scalar(part, item))
        except ValueError as err:
            raise ConfigError(
                f"{key}={_quote(text)}: item {_quote(part)} {err}"
            ) from None
    return values


def _parse_mapping(key: str, text: str) -> dict[Any, Any]:
    """A YAML mapping, e.g. ``{a: 1, b: 2}``; ``{}`` for the empty text."""
    try:
        value = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as err:
        raise ConfigError(
            f"{key}={_quote(text)} is not a mapping: " + _yaml_problem(err, lines=False)
        ) from None
    if not isinstance(value, dict):
        raise ConfigError(
            f"{key}={_quote(text)} is not a mapping; expected {{key: value}}"
        )
    return value


def _yaml_problem(err: yaml.YAMLError, lines: bool = True) -> str:
    """A YAML error in one line (``str(err)`` quotes the text over several):
    what is wrong and where (``lines``: the line too, else the column)."""
    if isinstance(err, yaml.reader.ReaderError):
        char = err.character
        code = char if isinstance(char, int) else ord(char[:1] or "\0")
        return (
            f"the character #x{code:04x} (at character {err.position + 1}) "
            "is not allowed in YAML"
        )
    if isinstance(err, yaml.MarkedYAMLError):
        parts = [p for p in (err.context, err.problem) if p]
        text = _one_line(": ".join(parts) or type(err).__name__)
        mark = err.problem_mark or err.context_mark
        if mark is not None:
            where = f"line {mark.line + 1}, " if lines else ""
            text += f" ({where}column {mark.column + 1})"
        return text
    return _one_line(str(err)) or type(err).__name__


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


QUOTE_LIMIT = 60
"""Characters of a value that an error message quotes (a value, a key, a
file's text can be megabytes long; an error line may not)."""
LISTED_KEYS = 10
"""Unknown keys that an error message names (then: "and N more")."""


def _cut(text: str) -> str:
    """``text`` for a message: as it is up to :data:`QUOTE_LIMIT`
    characters, else its start, "…" and its length."""
    if len(text) <= QUOTE_LIMIT:
        return text
    return f"{text[:QUOTE_LIMIT]}… ({len(text):,} characters)"


def _quote(value: Any) -> str:
    """``repr(value)`` for a message, cut by :func:`_cut`."""
    return _cut(repr(value))


def _show(path: Path | str) -> str:
    """A path for a message: as it is, or quoted when it holds characters
    (a line break) that would not print on one line."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The keys of the YAML file ``path`` over those of the files it
    inherits; ``seen``: the files that inherit it, innermost last."""
    by = f" (inherited by {_show(seen[-1])})" if seen else ""
    try:
        path = path.resolve()
    except (OSError, RuntimeError, ValueError) as err:
        raise ConfigError(
            f"config file {_show(path)}{by} cannot be read: {_os_problem(err)}"
        ) from None
    what = f"config file {_show(path)}{by}"
    if path in seen:
        raise ConfigError(f"config {_show(path)} inherits from itself")
    try:
        text = _read_text(path, what)
    except FileNotFoundError:
        raise ConfigError(f"{what} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} is a folder, not a YAML file") from None
    except PermissionError:
        raise ConfigError(f"{what} cannot be read: permission denied") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{what} is not a YAML text file: byte {err.start + 1} is not UTF-8"
        ) from None
    except ConfigError:
        raise
    except (OSError, ValueError) as err:
        raise ConfigError(f"{what} cannot be read: {_os_problem(err)}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} is not valid YAML: {_yaml_problem(err)}") from None
    if data is None:  # an empty file, or only comments
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} must hold a mapping of keys to values")
    parents = data.pop("inherit", [])
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError(
            f"{what}: inherit={_quote(parents)} is not allowed; it must be a file "
            "name or a list of file names"
        )
    merged: dict[str, Any] = {}
    for parent in parents:
        merged.update(_read_yaml(path.parent / parent, (*seen, path)))
    unknown = _unknown(data)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {unknown} in {_show(path)}; see --help for the keys"
        )
    merged.update(data)
    return merged


MAX_CONFIG_BYTES = 1 << 20
"""The largest config file that is read (1 MiB; a config is a few lines)."""


def _read_text(path: Path, what: str) -> str:
    """The text of the config file ``path`` (``what`` names it): only a
    regular file, of at most :data:`MAX_CONFIG_BYTES`, is read, so that
    ``-c /dev/zero`` or a pipe is refused instead of read without end."""
    mode = path.stat().st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError
    if not stat.S_ISREG(mode):
        raise ConfigError(
            f"{what} is not a regular file (a device, a pipe or a socket); "
            "give a YAML file"
        )
    with path.open("rb") as file:
        data = file.read(MAX_CONFIG_BYTES + 1)
        size = max(os.fstat(file.fileno()).st_size, len(data))
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{what} is larger than 1 MiB ({size:,} bytes); a config file is a "
            "few lines of YAML"
        )
    return data.decode("utf-8")


def _os_problem(err: BaseException) -> str:
    """An ``OSError``'s reason (without the path it repeats), in one line."""
    reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return _one_line(reason)


def _unknown(values: Mapping[Any, Any]) -> str:
    """The keys of ``values`` that are not config keys, for a message
    (``""``: none): the first :data:`LISTED_KEYS` in order, each cut by
    :func:`_cut`, and how many more."""
    keys = {f.name for f in fields(ExperimentConfig)}
    unknown = sorted(k if isinstance(k, str) and k.isprintable() else repr(k)
                     for k in values if k not in keys)  # fmt: skip
    listed = ", ".join(_cut(k) for k in unknown[:LISTED_KEYS])
    more = len(unknown) - LISTED_KEYS
    return f"{listed} and {more:,} more" if more > 0 else listed


def comparison_name(cfg: ExperimentConfig) -> str:
    """The folder name of a comparison of ``cfg``: its ``name``, else one
    built from its stream and seed."""
    if cfg.name is not None:
        return cfg.name
    base = cfg.resolved()
    return (
        f"compare_{base.dataset}_b{base.n_base}_{base.n_phases}phases_seed{base.seed}"
    )


def load_config(
    files: Iterable[str | Path] = (), overrides: Mapping[str, Any] | None = None
) -> ExperimentConfig:
    """Merge YAML ``files`` (later ones win) and ``overrides`` over the
    defaults; raise :class:`ConfigError` for unknown keys or bad values."""
    values: dict[str, Any] = {}
    for file in files:
        values.update(_read_yaml(Path(file)))
    values.update(overrides or {})
    unknown = _unknown(values)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown}; see --help")
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
