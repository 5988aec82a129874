"""Results files and figures of runs and comparisons.

A run's folder gets ``results.json`` (everything below, machine-readable),
``accuracy_matrix.csv``, ``phases.csv`` (per phase: classes seen, accuracy
on all seen / old / new classes, share of old-class images predicted as a
new class, time) and ``accuracy_matrix.png``. A comparison gets
``comparison.md``, ``comparison.csv``, ``accuracy_curves.png`` (accuracy
versus number of classes, one line per method) and
``accuracy_matrices.png`` (one heatmap per method). Accuracies are stored
as fractions in JSON and printed as percentages in tables.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .protocol import IncrementalResults  # noqa: E402

__all__ = [
    "SUMMARY_COLUMNS",
    "plot_accuracy_curves",
    "plot_accuracy_matrices",
    "read_run",
    "run_summary",
    "write_comparison",
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


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def run_summary(
    results: IncrementalResults,
    classes_seen: Sequence[int],
    experience_times: Sequence[float],
) -> dict[str, Any]:
    """The JSON-ready record of a run's results."""
    return {
        "classes_seen": list(classes_seen),
        "accuracy_matrix": _nan_to_none(results.accuracy_matrix.tolist()),
        "seen_accuracy": list(results.seen_accuracy),
        "average_incremental_accuracy": results.average_incremental_accuracy,
        "last_accuracy": results.last_accuracy,
        "forgetting": results.forgetting,
        "old_accuracy": _nan_to_none(list(results.old_accuracy)),
        "new_accuracy": list(results.new_accuracy),
        "old_to_new": _nan_to_none(list(results.old_to_new)),
        "last_old_accuracy": _nan_to_none(results.old_accuracy[-1]),
        "last_new_accuracy": results.new_accuracy[-1],
        "last_old_to_new": _nan_to_none(results.old_to_new[-1]),
        "experience_time_s": list(experience_times),
        "wall_time_s": float(sum(experience_times)),
    }


def write_run(run_dir: Path, summary: Mapping[str, Any], title: str) -> list[Path]:
    """Write a run's CSV files and heatmap; return the files written."""
    matrix = _matrix(summary)
    n = len(matrix)
    matrix_csv = run_dir / "accuracy_matrix.csv"
    with open(matrix_csv, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["after_experience", *[f"exp{j}" for j in range(n)]])
        for t, row in enumerate(matrix):
            writer.writerow([t, *[_fmt(v) for v in row]])
    phases_csv = run_dir / "phases.csv"
    with open(phases_csv, "w", newline="") as file:
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


def plot_accuracy_matrices(runs: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    """One heatmap of ``A[t, j]`` (accuracy on experience ``j``'s classes
    after experience ``t``, in %) per run, side by side."""
    n = len(runs)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False
    )
    for ax in axes.flat[n:]:
        ax.axis("off")
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
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_comparison(
    runs: Mapping[str, Mapping[str, Any]],
    out_dir: Path,
    title: str,
    notes: Mapping[str, str] | None = None,
) -> list[Path]:
    """Write the comparison table (markdown and CSV) and figures of
    ``runs`` (method -> results summary); return the files written."""
    table_csv = out_dir / "comparison.csv"
    with open(table_csv, "w", newline="") as file:
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
    if notes:
        lines += ["", "Memory of each method:", ""]
        lines += [f"- **{m}**: {text}" for m, text in notes.items() if m in runs]
    table_md = out_dir / "comparison.md"
    table_md.write_text("\n".join(lines) + "\n")
    curves = out_dir / "accuracy_curves.png"
    plot_accuracy_curves(runs, curves, title)
    matrices = out_dir / "accuracy_matrices.png"
    plot_accuracy_matrices(runs, matrices)
    return [table_md, table_csv, curves, matrices]


def _fmt_table(value: Any, percent: bool) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.2f}" if percent else f"{value:.0f}"
