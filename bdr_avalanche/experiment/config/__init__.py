"""Experiment configuration: one typed record per run.

A run is described by an :class:`ExperimentConfig`. Values come, in order of
precedence, from command-line options, then YAML config files (a file may
name the files it extends with ``inherit:``, relative to itself; a file is
a path or the name of a preset shipped with the package), then the
defaults. Keys left at ``None`` are resolved from the dataset (e.g. 50 base
classes for CIFAR-100, 4 for ``digits``) by
:meth:`ExperimentConfig.resolved`.

Keys: the training schedule is top-level (``epochs``, ``lr``, the fields
of :class:`~bdr_avalanche.params.TrainingParams`); each method's own
hyper-parameters are a nested record, written ``bdr: {m1: 0.6}`` in YAML
and ``--bdr.m1 0.6`` on the command line (:data:`GROUPS`). Every field
carries its help text and its range, so ``--help`` and the checks are
generated from the one definition in :mod:`bdr_avalanche.params`.

The package is split by concern: :mod:`.schema` (the keys),
:mod:`.types` (type checks), :mod:`.text` (command-line text),
:mod:`.files` (YAML files), :mod:`.presets` (the files shipped with the
package, by name), :mod:`.messages` (one-line errors). It
imports neither torch nor Avalanche.
"""

from __future__ import annotations

from .files import MAX_CONFIG_BYTES, load_config, locate, read_file
from .messages import ConfigError
from .presets import (
    DEFAULT_PRESETS,
    close_presets,
    default_files,
    describe,
    find_preset,
    preset_names,
    preset_path,
    presets_folder,
)
from .schema import (
    BACKBONES,
    DATASETS,
    GROUPS,
    METHODS,
    RUNTIME_KEYS,
    ExperimentConfig,
    Key,
    comparison_name,
    config_keys,
    did_you_mean,
    flatten,
    nest,
    parse_seeds,
)
from .text import parse_value

__all__ = [
    "BACKBONES",
    "DATASETS",
    "DEFAULT_PRESETS",
    "GROUPS",
    "MAX_CONFIG_BYTES",
    "METHODS",
    "RUNTIME_KEYS",
    "ConfigError",
    "ExperimentConfig",
    "Key",
    "close_presets",
    "comparison_name",
    "config_keys",
    "default_files",
    "describe",
    "did_you_mean",
    "find_preset",
    "flatten",
    "load_config",
    "locate",
    "nest",
    "parse_seeds",
    "parse_value",
    "preset_names",
    "preset_path",
    "presets_folder",
    "read_file",
]
