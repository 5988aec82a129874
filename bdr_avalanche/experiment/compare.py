"""``bdr-avalanche compare``: several methods on one stream, one table.

:func:`run_comparison` runs each method with the same stream, backbone,
schedule and memory into ``<output_dir>/<name>/<method>/`` (a locked
comparison folder), reuses the methods that had finished, and writes the
comparison table and figures beside them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ..baselines import MEMORY_MATCHING
from ._atomic import remove_stale_temporaries
from .base_cache import BaseCache, check_cache_folder
from .config import (
    METHODS,
    OUR_METHODS,
    ConfigError,
    ExperimentConfig,
    comparison_name,
)
from .factories import resolve_device, validate
from .interrupt import Interrupted, deferred
from .report import read_run, write_comparison
from .run_folder import RunExistsError, RunFolder
from .runner import run_experiment

__all__ = ["run_comparison"]

log = logging.getLogger(__name__)

OUR_MEMORY = "herding, mem_per_class exemplars for every seen class (the paper's rule)"


def run_comparison(
    cfg: ExperimentConfig, methods: Sequence[str], overwrite: bool = False
) -> dict[str, dict[str, Any]]:
    """Run every method of ``methods`` with ``cfg``'s stream, backbone,
    schedule and memory, then write the comparison table and figures.

    Runs go to ``<output_dir>/<name>/<method>/``. A method whose folder
    already holds a finished run with the same configuration is not run
    again (so an interrupted comparison picks up where it stopped); one
    with a different configuration raises unless ``overwrite``. The
    methods share the base-model cache of ``cfg``'s ``output_dir``, which
    may not be the comparison's folder or inside it.
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
    out_dir = Path(cfg.output_dir) / comparison_name(cfg)
    check_cache_folder(base, out_dir)
    runs: dict[str, dict[str, Any]] = {}
    with RunFolder.open(out_dir, "compare"):
        remove_stale_temporaries(out_dir)  # left by a process killed while writing
        for method in methods:
            sub = dataclasses.replace(
                base,
                method=method,
                name=method,
                output_dir=str(out_dir),
                base_cache=str(BaseCache.folder(base)),  # shared by comparisons
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
    configuration (keys in :data:`~bdr_avalanche.experiment.config.RUNTIME_KEYS`
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
