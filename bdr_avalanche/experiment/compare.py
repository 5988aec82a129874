"""``bdr-avalanche compare``: several methods on one stream, one table.

:func:`run_comparison` runs each method with the same stream, backbone,
schedule and memory, for one seed or several, in a locked comparison
folder, reuses the methods that had finished, and writes the comparison
table and figures beside them. Where the methods hold a method and the
same method with BDR or CwD (``replay`` and ``replay+bdr``), it writes
what the plugin changes, per seed and over the seeds
(:mod:`~bdr_avalanche.experiment.paired`).

The folder's layout, ``<output_dir>/<name>/``:

- one seed: ``<method>/`` per run, ``comparison.md`` / ``.csv`` and the
  figures of :func:`~.report.write_comparison`;
- several seeds: ``<method>/seed<S>/`` per run, ``seed<S>/`` with each
  seed's own comparison (as for one seed), and ``comparison.md`` /
  ``.csv`` over the seeds (:func:`~.paired.write_seed_comparison`);
- with pairs: ``paired_differences.md`` / ``.csv`` / ``.png``, and the
  paired table appended to ``comparison.md``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..baselines import MEMORY_MATCHING
from ..methods import Method, MethodError, parse_method
from ._atomic import remove_stale_temporaries, write_text
from .base_cache import BaseCache, check_cache_folder
from .config import ConfigError, ExperimentConfig, comparison_name
from .factories import resolve_device, validate
from .interrupt import Interrupted, deferred
from .paired import (
    find_pairs,
    paired_markdown,
    write_paired_differences,
    write_seed_comparison,
)
from .report import read_run, write_comparison
from .run_folder import RunExistsError, RunFolder
from .runner import run_experiment

__all__ = ["run_comparison"]

log = logging.getLogger(__name__)

OUR_MEMORY = "herding, mem_per_class exemplars for every seen class (the paper's rule)"


def _check_methods(methods: Sequence[str]) -> dict[str, Method]:
    """Each method name, parsed; :class:`ConfigError` for none, one that
    does not parse or a method given twice (under any of its names)."""
    listed = ",".join(methods)
    if not methods:
        raise ConfigError(
            "methods='' is not allowed; give one or more methods, "
            "e.g. replay,replay+bdr"
        )
    parsed: dict[str, Method] = {}
    for name in methods:
        try:
            method = parse_method(name)
        except MethodError as err:
            raise ConfigError(f"methods={listed!r} is not allowed: {err}") from None
        twin = next((n for n, m in parsed.items() if m == method), None)
        if twin is not None:
            raise ConfigError(
                f"methods={listed!r} lists {method.name} twice ({twin!r} and "
                f"{name!r}); give each method once"
            )
        parsed[name] = method
    return parsed


def run_comparison(
    cfg: ExperimentConfig,
    methods: Sequence[str],
    overwrite: bool = False,
    seeds: Sequence[int] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run every method of ``methods`` with ``cfg``'s stream, backbone,
    schedule and memory, for each of ``seeds`` (default: ``cfg``'s
    ``seed``), then write the comparison's tables and figures (see the
    module's docstring for the layout); return each method's results for
    the first seed.

    Every (method, seed) configuration is checked before anything trains.
    A run whose folder already holds a finished run with the same
    configuration is not run again (so an interrupted comparison picks up
    where it stopped); one with a different configuration raises unless
    ``overwrite``. The runs share the base-model cache of ``cfg``'s
    ``output_dir``, which may not be the comparison's folder or inside it.
    """
    parsed = _check_methods(methods)
    seeds = tuple(seeds) if seeds else (cfg.seed,)
    bases = {s: dataclasses.replace(cfg, seed=s).resolved() for s in seeds}
    resolve_device(cfg.device)
    for base in bases.values():  # before any method runs
        for name in parsed:
            validate(dataclasses.replace(base, method=name))
    out_dir = Path(cfg.output_dir) / comparison_name(cfg, seeds)
    for base in bases.values():
        check_cache_folder(base, out_dir)
    with RunFolder.open(out_dir, "compare"):
        remove_stale_temporaries(out_dir)  # left by a process killed while writing
        by_seed = {
            seed: {
                name: _run_method(base, name, out_dir, len(seeds) > 1, overwrite)
                for name in parsed
            }
            for seed, base in bases.items()
        }
        with deferred():
            _write_results(by_seed, parsed, out_dir, bases[seeds[0]])
    log.info("comparison written to %s", out_dir)
    return by_seed[seeds[0]]


def _run_method(
    base: ExperimentConfig, method: str, out_dir: Path, per_seed: bool, overwrite: bool
) -> dict[str, Any]:
    """Run ``method`` with ``base`` into ``out_dir/<method>/`` (or, with
    ``per_seed``, ``out_dir/<method>/seed<S>/``), or read its finished run
    there."""
    folder, name = out_dir, method
    if per_seed:
        folder, name = out_dir / method, f"seed{base.seed}"
    sub = dataclasses.replace(
        base,
        method=method,
        name=name,
        output_dir=str(folder),
        base_cache=str(BaseCache.folder(base)),  # shared by comparisons
    )
    run_dir = folder / name
    which = f"{method} (seed {base.seed})" if per_seed else method
    if not overwrite and (run_dir / "results.json").exists():
        _check_finished_run(run_dir, sub)
        log.info("%s: reusing the finished run in %s", which, run_dir)
        return read_run(run_dir)
    log.info("%s: running into %s", which, run_dir)
    try:
        return run_experiment(sub, overwrite=overwrite)
    except Interrupted as err:
        err.where = f" of {which}"
        raise


def _write_results(
    by_seed: Mapping[int, Mapping[str, Mapping[str, Any]]],
    methods: Mapping[str, Method],
    out_dir: Path,
    base: ExperimentConfig,
) -> None:
    """Write the comparison's tables and figures (one seed: today's; several:
    each seed's in ``seed<S>/`` and the table over the seeds) and, where
    ``methods`` hold pairs, the paired differences, also appended to
    ``comparison.md``."""
    notes = {
        name: OUR_MEMORY if method.ours else MEMORY_MATCHING[method.base]
        for name, method in methods.items()
    }
    title = (
        f"{base.dataset}: {base.n_base} base classes + {base.n_phases} phases, "
        f"{base.backbone}, {base.epochs} epochs, {base.mem_per_class} "
        "exemplars/class"
    )
    if len(by_seed) == 1:
        write_comparison(next(iter(by_seed.values())), out_dir, title, notes)
    else:
        for seed, runs in by_seed.items():
            folder = out_dir / f"seed{seed}"
            folder.mkdir(exist_ok=True)
            write_comparison(runs, folder, f"{title}, seed {seed}", notes)
        write_seed_comparison(by_seed, out_dir, title, notes)
    pairs = find_pairs(list(methods))
    if pairs:
        write_paired_differences(pairs, by_seed, out_dir, title)
        table = out_dir / "comparison.md"
        section = paired_markdown(pairs, by_seed)
        section += ["", "Also in paired_differences.csv and paired_differences.png."]
        write_text(table, table.read_text() + "\n" + "\n".join(section) + "\n")


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
