"""The application around the library: configurations, the command line,
runs and comparisons, their results folders, checkpoints, reports and
loggers.

The library (plugins, strategy, storage, models, benchmarks) does not
import this package. Its names are imported on first use, so that the
command line's ``--help`` needs neither torch nor Avalanche.
"""

from __future__ import annotations

from .._lazy import lazy_attributes

__all__ = [
    "METHODS",
    "ConfigError",
    "ExperimentConfig",
    "load_config",
    "run_comparison",
    "run_experiment",
]

_HOMES = {
    "METHODS": ".config",
    "ConfigError": ".config",
    "ExperimentConfig": ".config",
    "load_config": ".config",
    "run_comparison": ".compare",
    "run_experiment": ".runner",
}

__getattr__, __dir__ = lazy_attributes(__name__, _HOMES)
