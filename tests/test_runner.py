"""The experiment runner end to end on tiny digits configs: results files,
their consistency, comparisons, loggers (wandb offline) and overwriting."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import TINY_RUN

from bdr_avalanche.experiment.cli import main
from bdr_avalanche.experiment.compare import run_comparison
from bdr_avalanche.experiment.config import ExperimentConfig
from bdr_avalanche.experiment.factories import build_benchmark
from bdr_avalanche.experiment.run_folder import RunExistsError
from bdr_avalanche.experiment.runner import run_experiment

TINY = TINY_RUN


def tiny(tmp_path: Path, **changes) -> ExperimentConfig:
    return ExperimentConfig(output_dir=str(tmp_path), **{**TINY, **changes})


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One LUCIR+CwD+BDR run on digits with the text and CSV loggers on."""
    out = tmp_path_factory.mktemp("results")
    cfg = tiny(out, text_log=True, csv_log=True, tensorboard=True)
    summary = run_experiment(cfg)
    return cfg.resolved(), out / cfg.resolved().name, summary


@pytest.mark.integration
def test_results_folder_contents(finished_run):
    cfg, run_dir, summary = finished_run
    for name in (
        "config.yaml",
        "results.json",
        "accuracy_matrix.csv",
        "phases.csv",
        "accuracy_matrix.png",
        "log.txt",
    ):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "csv" / "eval_results.csv").is_file()
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert ExperimentConfig(**saved) == cfg
    assert json.loads((run_dir / "results.json").read_text()) == summary
    models = sorted((run_dir / "models").glob("exp_*.pt"))
    assert [m.name for m in models] == [f"exp_{t:02d}.pt" for t in range(4)]
    state = torch.load(models[-1], weights_only=True)
    # after the last experience the cosine head has one block per experience
    assert sum(k.startswith("head.blocks.") for k in state) == 4


@pytest.mark.integration
def test_results_are_consistent(finished_run):
    cfg, run_dir, summary = finished_run
    matrix = np.array(
        [
            [np.nan if v is None else v for v in row]
            for row in summary["accuracy_matrix"]
        ]
    )
    assert matrix.shape == (4, 4)
    assert np.isnan(matrix[np.triu_indices(4, 1)]).all()
    assert not np.isnan(matrix[np.tril_indices(4)]).any()
    # the accuracy on all seen classes is the matrix row weighted by test sizes
    benchmark = build_benchmark(cfg)
    sizes = np.array([len(exp.dataset) for exp in benchmark.test_stream])
    for t, acc in enumerate(summary["seen_accuracy"]):
        weights = sizes[: t + 1] / sizes[: t + 1].sum()
        assert acc == pytest.approx(float(matrix[t, : t + 1] @ weights))
    # the new classes of phase t are those of experience t
    assert summary["new_accuracy"] == pytest.approx(np.diag(matrix).tolist())
    assert summary["average_incremental_accuracy"] == pytest.approx(
        np.mean(summary["seen_accuracy"])
    )
    assert summary["last_accuracy"] == summary["seen_accuracy"][-1]
    assert summary["forgetting"] == pytest.approx(
        np.mean(np.diag(matrix)[:-1] - matrix[-1, :-1])
    )
    assert summary["classes_seen"] == [4, 6, 8, 10]
    assert summary["old_accuracy"][0] is None and summary["old_to_new"][0] is None
    assert summary["wall_time_s"] == pytest.approx(sum(summary["experience_time_s"]))
    # the CSV files say the same
    rows = read_csv(run_dir / "phases.csv")
    assert [float(r["seen_acc"]) for r in rows] == pytest.approx(
        summary["seen_accuracy"]
    )
    assert [int(r["classes_seen"]) for r in rows] == summary["classes_seen"]
    table = read_csv(run_dir / "accuracy_matrix.csv")
    assert float(table[3]["exp1"]) == pytest.approx(matrix[3, 1])
    assert table[0]["exp1"] == ""


@pytest.mark.integration
def test_finished_run_is_not_clobbered(finished_run, capsys):
    cfg, run_dir, _ = finished_run
    before = (run_dir / "results.json").stat().st_mtime_ns
    with pytest.raises(RunExistsError, match="already holds a finished run"):
        run_experiment(cfg)
    # the seed of the library's default: without -c, the command line reads
    # the digits preset (seed 0)
    argv = ["run", "--output_dir", cfg.output_dir, "--seed", str(cfg.seed)]
    for key, value in TINY.items():
        argv += [f"--{key}", json.dumps(value)]
    argv += ["--text_log", "true", "--csv_log", "true", "--tensorboard", "true"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 1
    assert "pass --overwrite" in capsys.readouterr().err
    assert (run_dir / "results.json").stat().st_mtime_ns == before


@pytest.mark.integration
def test_overwrite_starts_over(tmp_path):
    cfg = tiny(tmp_path, epochs=1, save_models=False)
    run_experiment(cfg)
    run_dir = tmp_path / cfg.resolved().name
    (run_dir / "stale.txt").write_text("from an older run")
    run_experiment(cfg, overwrite=True)
    assert not (run_dir / "stale.txt").exists()
    assert not (run_dir / "models").exists()
    assert (run_dir / "results.json").is_file()


@pytest.mark.integration
def test_same_seed_same_results(tmp_path):
    cfg = tiny(tmp_path, epochs=1, save_models=False, method="lucir")
    first = run_experiment(cfg)
    second = run_experiment(cfg, overwrite=True)
    assert first["accuracy_matrix"] == second["accuracy_matrix"]


@pytest.mark.integration
def test_comparison_writes_table_and_figures(tmp_path, caplog):
    cfg = tiny(tmp_path, epochs=1, save_models=False, name="cmp")
    runs = run_comparison(cfg, ["lucir_cwd_bdr", "naive"])
    out = tmp_path / "cmp"
    for name in (
        "comparison.md",
        "comparison.csv",
        "accuracy_curves.png",
        "accuracy_matrices.png",
    ):
        assert (out / name).is_file(), name
    rows = read_csv(out / "comparison.csv")
    assert [r["method"] for r in rows] == ["lucir_cwd_bdr", "naive"]
    for row in rows:
        summary = json.loads((out / row["method"] / "results.json").read_text())
        assert float(row["average_incremental_accuracy"]) == pytest.approx(
            summary["average_incremental_accuracy"], rel=1e-5
        )
    table = (out / "comparison.md").read_text()
    assert "| lucir_cwd_bdr |" in table and "| naive |" in table
    assert "Memory of each method" in table
    assert runs["naive"]["method"] == "naive"

    # an interrupted comparison resumes: finished methods are reused
    stamp = (out / "naive" / "results.json").stat().st_mtime_ns
    with caplog.at_level("INFO", logger="bdr_avalanche.experiment.compare"):
        run_comparison(cfg, ["lucir_cwd_bdr", "naive"])
    assert (out / "naive" / "results.json").stat().st_mtime_ns == stamp
    assert "reusing the finished run" in caplog.text
    # ... but never with another configuration
    with pytest.raises(RunExistsError, match="differs in epochs"):
        run_comparison(tiny(tmp_path, epochs=2, name="cmp"), ["naive"])


@pytest.mark.integration
def test_wandb_runs_offline_without_api_key(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a key
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    cfg = tiny(
        tmp_path,
        epochs=1,
        save_models=False,
        wandb=True,
        wandb_tags=["test"],
        name="wb",
    )
    run_experiment(cfg)
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("run-*.wandb"))
    media = {p.suffix for p in (runs[0] / "files" / "media").rglob("*") if p.is_file()}
    assert ".png" in media  # the figures went to wandb


@pytest.mark.integration
def test_wandb_disabled_writes_nothing(tmp_path):
    cfg = tiny(
        tmp_path,
        epochs=1,
        save_models=False,
        wandb=True,
        wandb_mode="disabled",
        name="nowb",
    )
    run_experiment(cfg)
    assert not (tmp_path / "nowb" / "wandb").exists()


@pytest.mark.system
def test_console_entry_point_runs(tmp_path):
    """``python -m bdr_avalanche`` with a config file and overrides."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "method": "lucir", "name": "cli"}))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bdr_avalanche",
            "run",
            "-c",
            str(config),
            "--output-dir",
            str(tmp_path),
            "--epochs",
            "1",
            "--save_models",
            "false",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    saved = yaml.safe_load((tmp_path / "cli" / "config.yaml").read_text())
    assert (saved["method"], saved["epochs"], saved["save_models"]) == (
        "lucir",
        1,
        False,
    )
    assert "average incremental accuracy" in done.stderr


def test_missing_dataset_is_one_clear_error(tmp_path, capsys):
    missing = tmp_path / "no-cifar"
    argv = [
        "run",
        "--dataset",
        "cifar100",
        "--dataset_root",
        str(missing),
        "--output_dir",
        str(tmp_path / "out"),
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("bdr-avalanche: error: CIFAR-100 not found in")
    assert str(missing) in err and "cifar-100-python.tar.gz" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
