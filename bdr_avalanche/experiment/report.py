"""Results files and figures of runs and comparisons.

A run's folder gets ``results.json`` (everything below, machine-readable),
``accuracy_matrix.csv``, ``phases.csv`` (per phase: classes seen, accuracy
on all seen / old / new classes, share of old-class images predicted as a
new class, time) and ``accuracy_matrix.png``. A comparison gets
``comparison.md``, ``comparison.csv``, ``accuracy_curves.png`` (accuracy
versus number of classes, one line per method) and
``accuracy_matrices.png`` (one heatmap per method). Accuracies are stored
as fractions in JSON and printed as percentages in tables. Times are those
each run spent: a first experience reused from the base-model cache counts
the time to read it, and ``comparison.md`` says which runs reused one and
how long its training had taken the run that stored it.

The figures of :mod:`bdr_avalanche.metrics`' diagnostics
(:func:`write_diagnostics`): ``memory_gradient_share.png`` (the memory
samples' share of the classification loss's logit-gradient per epoch; in a
comparison, one line per method), ``bdr_prior_trace.png`` and
``prior_trace.npz`` (BDR's prior per class over the training steps, runs
with BDR) and ``last_layer.png`` (per-class classifier weight norms and
mean test logits after each experience).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .._utils import nan_to_none  # noqa: E402
from ..protocol import IncrementalResults  # noqa: E402
from ._atomic import atomic_write, write_text  # noqa: E402

if TYPE_CHECKING:
    from ..metrics import PriorTraceRecord

__all__ = [
    "SUMMARY_COLUMNS",
    "plot_accuracy_curves",
    "plot_accuracy_matrices",
    "plot_last_layer",
    "plot_memory_gradient_share",
    "plot_prior_trace",
    "read_run",
    "run_summary",
    "save_prior_trace",
    "write_comparison",
    "write_diagnostics",
    "write_json",
    "write_run",
]

SUMMARY_COLUMNS = {
    "average_incremental_accuracy": "avg inc acc (%)",
    "last_accuracy": "last acc (%)",
    "forgetting": "forgetting (%)",
    "last_old_accuracy": "last: old acc (%)",
    "last_new_accuracy": "last: new acc (%)",
    "last_old_to_new": "last: old→new (%)",
    "wall_time_s": "time (s)",
}


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (temporary file, fsync, rename)."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def _mark_experiences(
    ax: plt.Axes, positions: Sequence[float], ls: str, label_offset: float
) -> None:
    """A vertical line at each of ``positions``, where experiences 1, 2, ...
    start, labelled at the top of ``ax``, ``label_offset`` to its right."""
    for t, x in enumerate(positions, start=1):
        ax.axvline(x, color="grey", ls=ls, lw=0.8)
        ax.text(
            x + label_offset,
            1.0,
            f"exp {t}",
            transform=ax.get_xaxis_transform(),
            fontsize=7,
            va="top",
            color="grey",
        )


def _save_figure(fig: plt.Figure, path: Path) -> None:
    """Save ``fig`` as PNG atomically and close it."""
    try:
        with atomic_write(path, "wb") as file:
            fig.savefig(file, format="png", dpi=120)
    finally:
        plt.close(fig)


def run_summary(
    results: IncrementalResults,
    classes_seen: Sequence[int],
    experience_times: Sequence[float],
) -> dict[str, Any]:
    """The JSON-ready record of a run's results."""
    return {
        "classes_seen": list(classes_seen),
        "accuracy_matrix": nan_to_none(results.accuracy_matrix.tolist()),
        "seen_accuracy": list(results.seen_accuracy),
        "average_incremental_accuracy": results.average_incremental_accuracy,
        "last_accuracy": results.last_accuracy,
        "forgetting": results.forgetting,
        "old_accuracy": nan_to_none(list(results.old_accuracy)),
        "new_accuracy": list(results.new_accuracy),
        "old_to_new": nan_to_none(list(results.old_to_new)),
        "last_old_accuracy": nan_to_none(results.old_accuracy[-1]),
        "last_new_accuracy": results.new_accuracy[-1],
        "last_old_to_new": nan_to_none(results.old_to_new[-1]),
        "experience_time_s": list(experience_times),
        "wall_time_s": float(sum(experience_times)),
    }


def write_run(run_dir: Path, summary: Mapping[str, Any], title: str) -> list[Path]:
    """Write a run's CSV files and heatmap; return the files written."""
    matrix = _matrix(summary)
    n = len(matrix)
    matrix_csv = run_dir / "accuracy_matrix.csv"
    with atomic_write(matrix_csv, newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["after_experience", *[f"exp{j}" for j in range(n)]])
        for t, row in enumerate(matrix):
            writer.writerow([t, *[_fmt(v) for v in row]])
    phases_csv = run_dir / "phases.csv"
    with atomic_write(phases_csv, newline="") as file:
        writer = csv.writer(file)
        writer.writerow(
            [
                "phase",
                "classes_seen",
                "seen_acc",
                "old_acc",
                "new_acc",
                "old_to_new",
                "time_s",
            ]
        )
        for t in range(n):
            writer.writerow(
                [t, summary["classes_seen"][t]]
                + [
                    _fmt(summary[key][t])
                    for key in (
                        "seen_accuracy",
                        "old_accuracy",
                        "new_accuracy",
                        "old_to_new",
                        "experience_time_s",
                    )
                ]
            )
    figure = run_dir / "accuracy_matrix.png"
    plot_accuracy_matrices({title: summary}, figure)
    return [matrix_csv, phases_csv, figure]


def read_run(run_dir: Path) -> dict[str, Any]:
    """The ``results.json`` of a run folder."""
    return json.loads((run_dir / "results.json").read_text())


def _fmt(value: Any) -> str:
    return (
        ""
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:.10g}" if isinstance(value, float) else str(value))
    )


def _matrix(summary: Mapping[str, Any]) -> np.ndarray:
    return np.array(
        [
            [np.nan if v is None else v for v in row]
            for row in summary["accuracy_matrix"]
        ],
        dtype=float,
    )


def _panel_grid(n: int, max_cols: int, panel_size: tuple[float, float]):
    """A figure with ``n`` panels, at most ``max_cols`` a row; unused axes
    are hidden."""
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    width, height = panel_size
    fig, axes = plt.subplots(
        rows, cols, figsize=(width * cols, height * rows), squeeze=False
    )
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes


def plot_accuracy_matrices(runs: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    """One heatmap of ``A[t, j]`` (accuracy on experience ``j``'s classes
    after experience ``t``, in %) per run, side by side."""
    fig, axes = _panel_grid(len(runs), 4, (4.2, 3.8))
    for ax, (title, summary) in zip(axes.flat, runs.items(), strict=False):
        matrix = 100 * _matrix(summary)
        image = ax.imshow(matrix, vmin=0, vmax=100, cmap="viridis")
        size = len(matrix)
        if size <= 11:
            for t in range(size):
                for j in range(t + 1):
                    ax.text(
                        j,
                        t,
                        f"{matrix[t, j]:.0f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if matrix[t, j] < 60 else "black",
                    )
        ticks = range(0, size, 1 if size <= 11 else 5)
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("experience evaluated")
        ax.set_ylabel("after experience")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="accuracy (%)")
    fig.tight_layout()
    _save_figure(fig, path)


def plot_accuracy_curves(
    runs: Mapping[str, Mapping[str, Any]], path: Path, title: str = ""
) -> None:
    """Accuracy on all seen classes versus number of classes, per run."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for label, summary in runs.items():
        acc = 100 * np.asarray(summary["seen_accuracy"])
        avg = 100 * summary["average_incremental_accuracy"]
        ax.plot(
            summary["classes_seen"],
            acc,
            marker="o",
            markersize=3,
            label=f"{label} ({avg:.1f})",
        )
    ax.set_xlabel("number of classes")
    ax.set_ylabel("top-1 accuracy on seen classes (%)")
    ax.set_title(title or "accuracy vs classes (legend: avg inc acc)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)


def write_comparison(
    runs: Mapping[str, Mapping[str, Any]],
    out_dir: Path,
    title: str,
    notes: Mapping[str, str] | None = None,
) -> list[Path]:
    """Write the comparison table (markdown and CSV) and figures of
    ``runs`` (method -> results summary); return the files written."""
    table_csv = out_dir / "comparison.csv"
    with atomic_write(table_csv, newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["method", *SUMMARY_COLUMNS])
        for method, summary in runs.items():
            writer.writerow([method, *[_fmt(summary[k]) for k in SUMMARY_COLUMNS]])
    lines = [
        f"# {title}",
        "",
        "| method | " + " | ".join(SUMMARY_COLUMNS.values()) + " |",
    ]
    lines.append("|---" * (len(SUMMARY_COLUMNS) + 1) + "|")
    for method, summary in runs.items():
        cells = [
            _fmt_table(summary[k], percent=k != "wall_time_s") for k in SUMMARY_COLUMNS
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", _TIME_NOTE]
    reused = {
        method: summary["base_model"]
        for method, summary in runs.items()
        if (summary.get("base_model") or {}).get("reused")
    }
    lines += [
        f"- **{method}**: first experience reused from the base-model cache "
        f"{record['cache']}{_stored_time(record)}"
        for method, record in reused.items()
    ]
    if notes:
        lines += ["", "Memory of each method:", ""]
        lines += [f"- **{m}**: {text}" for m, text in notes.items() if m in runs]
    table_md = out_dir / "comparison.md"
    write_text(table_md, "\n".join(lines) + "\n")
    curves = out_dir / "accuracy_curves.png"
    plot_accuracy_curves(runs, curves, title)
    matrices = out_dir / "accuracy_matrices.png"
    plot_accuracy_matrices(runs, matrices)
    files = [table_md, table_csv, curves, matrices]
    with_share = {m: r for m, r in runs.items() if r.get("memory_gradient_share")}
    if with_share:
        share = out_dir / "memory_gradient_share.png"
        plot_memory_gradient_share(with_share, share, title)
        files.append(share)
    return files


_TIME_NOTE = (
    "time (s): the time each run spent training and evaluating; a first "
    "experience reused from the base-model cache counts only the time to read it."
)


def _stored_time(record: Mapping[str, Any]) -> str:
    """How long the reused first experience took the run that stored it
    (results written before that time was recorded apart have none)."""
    stored = record.get("stored_time_s")
    if stored is None:
        return ""
    return f" (its training took {stored:.0f} s in the run that stored it)"


def _fmt_table(value: Any, percent: bool) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.2f}" if percent else f"{value:.0f}"


def write_diagnostics(
    run_dir: Path,
    summary: Mapping[str, Any],
    prior_traces: Sequence[PriorTraceRecord] = (),
    title: str = "",
) -> list[Path]:
    """Write the figures of a run's diagnostics (see
    :class:`bdr_avalanche.metrics.DiagnosticMetrics`): the memory gradient
    share, the last-layer analysis and, when ``prior_traces`` is not empty,
    BDR's prior trace (figure and ``prior_trace.npz``); return the files
    written."""
    files = []
    if summary.get("memory_gradient_share"):
        path = run_dir / "memory_gradient_share.png"
        plot_memory_gradient_share({title or "run": summary}, path, title)
        files.append(path)
    if summary.get("last_layer"):
        path = run_dir / "last_layer.png"
        plot_last_layer(summary["last_layer"], path, title)
        files.append(path)
    if prior_traces:
        path = run_dir / "bdr_prior_trace.png"
        plot_prior_trace(prior_traces, path, title)
        data = run_dir / "prior_trace.npz"
        save_prior_trace(prior_traces, data)
        files += [path, data]
    return files


def _share_curve(
    summary: Mapping[str, Any],
) -> tuple[list[float], list[float], list[int]]:
    """Gradient and sample shares per epoch of experiences 1.., concatenated,
    and the epoch (x) where each of these experiences starts."""
    grads: list[float] = []
    samples: list[float] = []
    starts: list[int] = []
    sample_history = summary.get("memory_sample_share") or []
    for t, epochs in enumerate(summary["memory_gradient_share"]):
        if t == 0:
            continue
        starts.append(len(grads))
        grads += epochs
        sample = sample_history[t] if t < len(sample_history) else []
        samples += sample if len(sample) == len(epochs) else [math.nan] * len(epochs)
    return grads, samples, starts


def plot_memory_gradient_share(
    runs: Mapping[str, Mapping[str, Any]], path: Path, title: str = ""
) -> None:
    """The memory samples' share of the logit-gradient mass per training
    epoch (solid) and their share of the training samples (dashed), over
    the epochs of experiences 1, 2, ... (the first has no memory), one
    colour per run; dotted lines mark where each experience starts."""
    fig, ax = plt.subplots(figsize=(8.4, 4.2))
    starts: list[int] = []
    for i, (label, summary) in enumerate(runs.items()):
        grads, samples, starts = _share_curve(summary)
        x = np.arange(1, len(grads) + 1)
        colour = f"C{i}"
        ax.plot(x, 100 * np.asarray(grads, float), color=colour, label=label)
        ax.plot(
            x,
            100 * np.asarray(samples, float),
            color=colour,
            ls="--",
            lw=0.9,
            alpha=0.7,
        )
    _mark_experiences(ax, [start + 0.5 for start in starts], ":", 0.2)
    ax.plot([], [], color="black", label="gradient share")
    ax.plot([], [], color="black", ls="--", lw=0.9, label="share of samples")
    ax.set_xlabel("training epoch (experiences 1, 2, ...)")
    ax.set_ylabel("memory samples' share (%)")
    ax.set_ylim(bottom=0)
    ax.set_title(title or "memory samples' share of the logit gradient", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    _save_figure(fig, path)


def plot_prior_trace(
    records: Sequence[PriorTraceRecord], path: Path, title: str = ""
) -> None:
    """BDR's prior of each class over the training steps, one panel per
    experience with a trace: old classes in blues, new ones in oranges
    (thin: each class; thick: their mean)."""
    fig, axes = _panel_grid(len(records), 3, (4.6, 3.6))
    for ax, record in zip(axes.flat, records, strict=False):
        steps = record.steps.numpy()
        prior = record.prior.numpy()
        groups = (
            (record.old_classes, plt.get_cmap("Blues"), "old classes"),
            (record.new_classes, plt.get_cmap("Oranges"), "new classes"),
        )
        for classes, cmap, label in groups:
            classes = [c for c in classes if c < prior.shape[1]]
            for j, c in enumerate(classes):
                shade = 0.35 + 0.5 * j / max(1, len(classes) - 1)
                ax.plot(steps, prior[:, c], color=cmap(shade), lw=0.6, alpha=0.6)
            if classes:
                ax.plot(
                    steps,
                    prior[:, classes].mean(1),
                    color=cmap(0.95),
                    lw=2,
                    label=f"{label} ({len(classes)}), mean",
                )
        ax.set_title(f"experience {record.experience}", fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel("prior π")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(f"BDR prior: {title}", fontsize=10)
    fig.tight_layout()
    _save_figure(fig, path)


def save_prior_trace(records: Sequence[PriorTraceRecord], path: Path) -> None:
    """The prior traces as NumPy arrays: ``exp{t}_steps`` (S,),
    ``exp{t}_prior`` (S, K), ``exp{t}_old_classes``, ``exp{t}_new_classes``."""
    arrays: dict[str, Any] = {}  # keyword arguments of savez_compressed
    for r in records:
        arrays[f"exp{r.experience}_steps"] = r.steps.numpy()
        arrays[f"exp{r.experience}_prior"] = r.prior.numpy()
        arrays[f"exp{r.experience}_old_classes"] = np.asarray(r.old_classes, int)
        arrays[f"exp{r.experience}_new_classes"] = np.asarray(r.new_classes, int)
    with atomic_write(path, "wb") as file:
        np.savez_compressed(file, **arrays)


def plot_last_layer(
    records: Sequence[Mapping[str, Any]], path: Path, title: str = ""
) -> None:
    """Per-class classifier weight norm and mean test logit after each
    experience (one line per experience, classes in order of arrival);
    dashed lines mark where each experience's new classes start."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    last = len(records) - 1
    cmap = plt.get_cmap("viridis")
    classes = max((r["classes"] for r in records), key=len)
    starts = sorted({len(r["classes"]) for r in records})[:-1]
    panels = (
        ("weight_norm", "classifier weight norm"),
        ("mean_logit", "mean logit over the seen test images"),
    )
    for ax, (key, label) in zip(axes, panels, strict=True):
        for r in records:
            values = np.array([np.nan if v is None else v for v in r[key]], float)
            ax.plot(
                np.arange(len(values)),
                values,
                color=cmap(r["experience"] / max(1, last) if last else 0.0),
                marker="o" if len(classes) <= 50 else None,
                markersize=3,
                lw=1,
                label=f"after exp {r['experience']}",
            )
        _mark_experiences(ax, [start - 0.5 for start in starts], "--", 0.1)
        if len(classes) <= 30:
            ax.set_xticks(range(len(classes)))
            ax.set_xticklabels([str(c) for c in classes], fontsize=7)
        ax.set_xlabel("class (in order of arrival)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"last layer{': ' + title if title else ''}", fontsize=10)
    fig.tight_layout()
    _save_figure(fig, path)
