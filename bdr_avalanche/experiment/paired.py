"""What a plugin changes: a comparison's results paired by seed.

A comparison that lists a method ``X`` and the same method with BDR
(``X+bdr``), or with CwD (``X+cwd``), holds a controlled experiment: the
two runs of one seed share the stream, the backbone, the schedule, the
memory and (with the base-model cache) the first experience, and differ by
the plugin alone. :func:`find_pairs` finds these pairs;
:func:`pair_differences` gives, per seed, the difference *with − without*
of each of :data:`DIFFERENCES` and the mean memory gradient share of both
runs (:func:`mean_gradient_share`: the mechanism BDR acts on), and
:func:`over_seeds` their mean and sample standard deviation over the
seeds. The functions take the runs' ``results.json`` records, so they need
no training.

:func:`write_paired_differences` writes ``paired_differences.md``,
``paired_differences.csv`` and ``paired_differences.png`` (per pair, the
two methods' average incremental and last accuracy, mean over seeds, error
bars: standard deviation over seeds); :func:`write_seed_comparison` writes
the ``comparison.md`` / ``comparison.csv`` of a comparison over several
seeds (mean ± std per method, one CSV row per method and seed).
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..methods import parse_method  # noqa: E402
from ._atomic import atomic_write, write_text  # noqa: E402
from .report import SUMMARY_COLUMNS, _save_figure  # noqa: E402

__all__ = [
    "DIFFERENCES",
    "PAIRED_PLUGINS",
    "Pair",
    "find_pairs",
    "mean_gradient_share",
    "over_seeds",
    "pair_differences",
    "paired_markdown",
    "plot_paired",
    "write_paired_differences",
    "write_seed_comparison",
]

PAIRED_PLUGINS: tuple[str, ...] = ("bdr", "cwd")
"""The plugins whose effect a comparison measures, pairing ``X`` with
``X+plugin``."""

DIFFERENCES: dict[str, str] = {
    key: label for key, label in SUMMARY_COLUMNS.items() if key != "wall_time_s"
}
"""The ``results.json`` keys whose difference a pair gets, and their
table labels (fractions in the files, percentage points in the tables)."""

SHARE = "memory_gradient_share"
"""The column of the difference of the mean memory gradient shares; the
shares themselves are ``SHARE_without`` and ``SHARE_with``."""

COLUMNS: tuple[str, ...] = (*DIFFERENCES, SHARE, f"{SHARE}_without", f"{SHARE}_with")
"""The value columns of a row of :func:`pair_differences`."""

Results = Mapping[str, Any]
"""One run's ``results.json`` record."""
BySeed = Mapping[int, Mapping[str, Results]]
"""Seed -> method name -> results."""


@dataclass(frozen=True)
class Pair:
    """Two methods of a comparison that differ by one plugin: their names
    as the comparison lists them."""

    plugin: str
    without: str
    with_plugin: str

    @property
    def label(self) -> str:
        """``without → with``."""
        return f"{self.without} → {self.with_plugin}"


def find_pairs(methods: Sequence[str]) -> list[Pair]:
    """Every pair of ``methods`` where one is the other plus one of
    :data:`PAIRED_PLUGINS`, in the order of the methods with the plugin
    (BDR before CwD); names are compared parsed, so ``bdr+replay`` pairs
    with ``replay`` and ``lucir_cwd`` with ``lucir``."""
    parsed = {name: parse_method(name) for name in methods}
    pairs = []
    for name, method in parsed.items():
        for plugin in PAIRED_PLUGINS:
            if not method.has(plugin):
                continue
            bare = method.without(plugin)
            partner = next((n for n, m in parsed.items() if m == bare), None)
            if partner is not None:
                pairs.append(Pair(plugin, partner, name))
    return pairs


def _number(value: Any) -> float | None:
    """``value`` as a float, ``None`` for a missing or non-finite one."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def mean_gradient_share(results: Results) -> float | None:
    """The memory samples' mean share of the logit gradient over the epochs
    of experiences 1, 2, ... (experience 0 has no memory); ``None`` where
    the run recorded none."""
    history = results.get(SHARE) or []
    values = [_number(v) for epochs in history[1:] for v in epochs]
    numbers = [v for v in values if v is not None]
    return statistics.fmean(numbers) if numbers else None


def _difference(with_value: Any, without_value: Any) -> float | None:
    a, b = _number(with_value), _number(without_value)
    return None if a is None or b is None else a - b


def pair_differences(pair: Pair, by_seed: BySeed) -> list[dict[str, Any]]:
    """Per seed (in ``by_seed``'s order), a row: the seed, the difference
    (with − without) of each key of :data:`DIFFERENCES` and of the mean
    memory gradient shares, and both shares (``None`` where a value is
    missing)."""
    rows = []
    for seed, runs in by_seed.items():
        with_run, without_run = runs[pair.with_plugin], runs[pair.without]
        row: dict[str, Any] = {"seed": seed}
        for key in DIFFERENCES:
            row[key] = _difference(with_run.get(key), without_run.get(key))
        shares = mean_gradient_share(without_run), mean_gradient_share(with_run)
        row[SHARE] = _difference(shares[1], shares[0])
        row[f"{SHARE}_without"], row[f"{SHARE}_with"] = shares
        rows.append(row)
    return rows


def over_seeds(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1) of the values that are
    not ``None``; the deviation is ``None`` with fewer than two values,
    the mean with none."""
    known = [v for v in values if v is not None]
    mean = statistics.fmean(known) if known else None
    std = statistics.stdev(known) if len(known) > 1 else None
    return mean, std


def _summary_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The ``mean`` and ``std`` rows of a pair's per-seed rows."""
    stats = {key: over_seeds([row[key] for row in rows]) for key in COLUMNS}
    return [
        {"seed": "mean", **{key: m for key, (m, _) in stats.items()}},
        {"seed": "std", **{key: s for key, (_, s) in stats.items()}},
    ]


def _seeds_note(seeds: Sequence[int]) -> str:
    """What the ± of a table means, or that there is none."""
    if len(seeds) == 1:
        return f"1 seed ({seeds[0]}), no interval."
    listed = ", ".join(map(str, seeds))
    return (
        f"{len(seeds)} seeds ({listed}): mean ± sample standard deviation "
        "(ddof=1) over the seeds."
    )


def _points(mean: float | None, std: float | None = None, sign: bool = True) -> str:
    """A fraction in percentage points, ``± std`` when there is one."""
    if mean is None:
        return "–"
    text = f"{100 * mean:+.2f}" if sign else f"{100 * mean:.2f}"
    return text if std is None else f"{text} ± {100 * std:.2f}"


def _table(
    label_rows: Sequence[tuple[str, Mapping[str, Any], Mapping[str, Any] | None]],
) -> list[str]:
    """Markdown table lines: per (label, mean row, std row or ``None``)."""
    header = ["pair", *[f"Δ {label}" for label in DIFFERENCES.values()]]
    header += ["mem. grad share without (%)", "with (%)", "Δ mem. grad share"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    differences = (*DIFFERENCES, SHARE)
    keys = (*DIFFERENCES, f"{SHARE}_without", f"{SHARE}_with", SHARE)
    for label, mean, std in label_rows:
        cells = [
            _points(mean[key], std[key] if std else None, sign=key in differences)
            for key in keys
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def paired_markdown(
    pairs: Sequence[Pair], by_seed: BySeed, heading: str = "##"
) -> list[str]:
    """The paired differences as markdown lines: a note on the seeds, the
    table of means (± std over seeds) and, with several seeds, the table of
    each seed's differences."""
    seeds = list(by_seed)
    per_pair = {pair: pair_differences(pair, by_seed) for pair in pairs}
    lines = [
        f"{heading} Paired differences (with − without the plugin)",
        "",
        "Percentage points; a pair's two runs of a seed share the stream, the "
        "backbone, the schedule and the memory, and differ by the plugin alone. "
        "Memory gradient share: the memory samples' mean share of the logit "
        "gradient over the epochs of experiences 1 and later. " + _seeds_note(seeds),
        "",
    ]
    several = len(seeds) > 1
    means = []
    for pair, rows in per_pair.items():
        mean, std = _summary_rows(rows)
        means.append((pair.label, mean, std if several else None))
    lines += _table(means)
    if several:
        lines += ["", f"{heading}# Per seed", ""]
        lines += _table(
            [
                (f"{pair.label}, seed {row['seed']}", row, None)
                for pair, rows in per_pair.items()
                for row in rows
            ]
        )
    return lines


def _write_csv(path: Path, pairs: Sequence[Pair], by_seed: BySeed) -> None:
    """One row per pair and seed, then the pair's ``mean`` and ``std``
    rows; fractions, empty where missing."""
    with atomic_write(path, newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["plugin", "without", "with", "seed", *COLUMNS])
        for pair in pairs:
            rows = pair_differences(pair, by_seed)
            for row in [*rows, *_summary_rows(rows)]:
                values = ["" if row[k] is None else f"{row[k]:.10g}" for k in COLUMNS]
                writer.writerow(
                    [pair.plugin, pair.without, pair.with_plugin, row["seed"], *values]
                )


def _method_stats(by_seed: BySeed, method: str, key: str) -> tuple[float, float]:
    """Mean and std (0 under two seeds) over the seeds of a results key,
    in %; NaN where no seed has it."""
    values = [_number(runs[method].get(key)) for runs in by_seed.values()]
    mean, std = over_seeds(values)
    return (
        math.nan if mean is None else 100 * mean,
        0.0 if std is None else 100 * std,
    )


def plot_paired(
    pairs: Sequence[Pair], by_seed: BySeed, path: Path, title: str = ""
) -> None:
    """Per pair, a bar without the plugin (grey) and one with it, of the
    average incremental accuracy (left) and the last accuracy (right), mean
    over the seeds; error bars: standard deviation over the seeds (none
    with one seed)."""
    panels = ("average_incremental_accuracy", "last_accuracy")
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.3 * len(pairs) + 3), 4.4))
    colours = {plugin: f"C{i}" for i, plugin in enumerate(PAIRED_PLUGINS)}
    error = len(by_seed) > 1
    for ax, key in zip(axes, panels, strict=True):
        for i, pair in enumerate(pairs):
            for shift, method, colour in (
                (-0.2, pair.without, "0.6"),
                (0.2, pair.with_plugin, colours[pair.plugin]),
            ):
                mean, std = _method_stats(by_seed, method, key)
                ax.bar(i + shift, mean, 0.4, color=colour, yerr=std if error else None)
        ax.set_xticks(range(len(pairs)))
        ax.set_xticklabels([f"{p.without}\n+{p.plugin}" for p in pairs], fontsize=8)
        ax.set_ylabel(f"{SUMMARY_COLUMNS[key]}")
        ax.grid(axis="y", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color="0.6", label="without")]
    handles += [
        plt.Rectangle((0, 0), 1, 1, color=colours[p], label=f"with {p}")
        for p in dict.fromkeys(pair.plugin for pair in pairs)
    ]
    axes[0].legend(handles=handles, fontsize=8)
    note = _seeds_note(list(by_seed)).rstrip(".")
    fig.suptitle(f"{title}\n{note}" if title else note, fontsize=9)
    fig.tight_layout()
    _save_figure(fig, path)


def write_paired_differences(
    pairs: Sequence[Pair], by_seed: BySeed, out_dir: Path, title: str
) -> list[Path]:
    """Write ``paired_differences.md``, ``.csv`` and ``.png`` of ``pairs``
    into ``out_dir``; return the files written."""
    table_md = out_dir / "paired_differences.md"
    lines = [f"# {title}", "", *paired_markdown(pairs, by_seed)]
    write_text(table_md, "\n".join(lines) + "\n")
    table_csv = out_dir / "paired_differences.csv"
    _write_csv(table_csv, pairs, by_seed)
    figure = out_dir / "paired_differences.png"
    plot_paired(pairs, by_seed, figure, title)
    return [table_md, table_csv, figure]


def write_seed_comparison(
    by_seed: BySeed, out_dir: Path, title: str, notes: Mapping[str, str]
) -> list[Path]:
    """The ``comparison.md`` (per method, mean ± std over the seeds of
    :data:`~.report.SUMMARY_COLUMNS`, and a link to each seed's own
    comparison in ``seed<S>/``) and ``comparison.csv`` (one row per
    method and seed) of a comparison over several seeds."""
    seeds = list(by_seed)
    methods = list(next(iter(by_seed.values())))
    table_csv = out_dir / "comparison.csv"
    with atomic_write(table_csv, newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["method", "seed", *SUMMARY_COLUMNS])
        for seed, runs in by_seed.items():
            for method in methods:
                values = [_number(runs[method].get(k)) for k in SUMMARY_COLUMNS]
                cells = ["" if v is None else f"{v:.10g}" for v in values]
                writer.writerow([method, seed, *cells])
    header = ["method", *SUMMARY_COLUMNS.values()]
    lines = [f"# {title}", "", _seeds_note(seeds), ""]
    lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for method in methods:
        cells = []
        for key in SUMMARY_COLUMNS:
            values = [_number(runs[method].get(key)) for runs in by_seed.values()]
            mean, std = over_seeds(values)
            if key == "wall_time_s":
                cells.append("–" if mean is None else f"{mean:.0f}")
            else:
                cells.append(_points(mean, std, sign=False))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "time (s): the mean over the seeds of the time each run spent."]
    lines += ["", "Each seed's table and figures:", ""]
    lines += [f"- [seed {s}](seed{s}/comparison.md)" for s in seeds]
    lines += ["", "Memory of each method:", ""]
    lines += [f"- **{m}**: {notes[m]}" for m in methods if m in notes]
    table_md = out_dir / "comparison.md"
    write_text(table_md, "\n".join(lines) + "\n")
    return [table_md, table_csv]
