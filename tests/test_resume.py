"""Checkpoints and resume: a run killed with SIGKILL and resumed ends as an
uninterrupted one; mismatched configs, overwriting, damaged or unwritable
checkpoints."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import paused_run
import pytest
import torch
from helpers import TINY_RUN

import bdr_avalanche.experiment.checkpoint as checkpoint_module
from bdr_avalanche.experiment.checkpoint import (
    CHECKPOINT_FILE,
    CheckpointError,
    load_checkpoint,
    rng_state,
    set_rng_state,
)
from bdr_avalanche.experiment.cli import main
from bdr_avalanche.experiment.config import ExperimentConfig
from bdr_avalanche.experiment.run_folder import RunExistsError, RunFolderError
from bdr_avalanche.experiment.runner import run_experiment

# A second experience of ~60 optimizer steps (6 epochs of ~10 batches), so
# that a stop 20 steps after the first checkpoint lands inside it (see
# paused_run); the milestone keeps a learning-rate step in each experience.
ARGS = [
    "--epochs", "6", "--milestones", "4", "--batch_size", "32", "--width", "8",
    "--mem_per_class", "5", "--interactive", "false", "--name", "run",
]  # fmt: skip
TINY = {**TINY_RUN, "name": "run"}
TIMEOUT_S = 900
"""Bound on a subprocess: for a broken run, far above a working one's."""


def cli_args(out: Path, *extra: str) -> list[str]:
    return ["run", *ARGS, "--output_dir", str(out), *extra]


def cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bdr_avalanche", *cli_args(out, *extra)]


def finished_experiences(run_dir: Path) -> int:
    return len(load_checkpoint(run_dir / CHECKPOINT_FILE)["times"])


@pytest.mark.system
def test_sigkill_during_experience_2_then_resume_matches_uninterrupted(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    reference = subprocess.run(
        cli(tmp_path / "a"), env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert reference.returncode == 0, reference.stderr[-2000:]

    run_dir = tmp_path / "b" / "run"
    # stopped (SIGSTOP) in the second experience: 20 of its ~60 steps after
    # the first checkpoint, however fast the machine; then killed there
    stderr = tmp_path / "b.err"
    with stderr.open("w") as file:
        process = paused_run.start(
            cli_args(tmp_path / "b"), tmp_path / "stopped",
            after=run_dir / CHECKPOINT_FILE, steps=20,
            env=env, stdout=subprocess.DEVNULL, stderr=file,
        )  # fmt: skip
    try:
        paused_run.wait_stopped(process, stderr)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (run_dir / "results.json").exists()
    assert finished_experiences(run_dir) == 1  # killed in the second of four

    resumed = subprocess.run(
        cli(tmp_path / "b"), env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming after experience 0" in resumed.stderr

    a = json.loads((tmp_path / "a" / "run" / "results.json").read_text())
    b = json.loads((run_dir / "results.json").read_text())
    assert len(b["accuracy_matrix"]) == 4
    assert b["accuracy_matrix"] == a["accuracy_matrix"]  # exactly
    assert b["old_to_new"] == a["old_to_new"]
    assert len(b["experience_time_s"]) == 4
    for t in range(4):
        weights_a = torch.load(tmp_path / "a" / "run" / "models" / f"exp_{t:02d}.pt")
        weights_b = torch.load(run_dir / "models" / f"exp_{t:02d}.pt")
        assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    # the CSV log holds each experience once, as in the uninterrupted run
    for name in ("eval_results.csv", "training_results.csv"):
        assert (run_dir / "csv" / name).read_text() == (
            tmp_path / "a" / "run" / "csv" / name
        ).read_text()
    # a finished run keeps no checkpoint
    assert not (run_dir / CHECKPOINT_FILE).exists()


def interrupt_after(monkeypatch, experiences: int) -> None:
    """Make the run stop (as if killed) once ``experiences`` checkpoints are
    written."""
    import bdr_avalanche.experiment.runner as runner

    saved = runner.save_checkpoint
    count = [0]

    def save_then_stop(path, state):
        written = saved(path, state)
        count[0] += 1
        if count[0] == experiences:
            raise KeyboardInterrupt
        return written

    monkeypatch.setattr(runner, "save_checkpoint", save_then_stop)


@pytest.fixture
def interrupted(tmp_path, monkeypatch):
    """A LUCIR+CwD+BDR digits run stopped after its second experience."""
    cfg = ExperimentConfig(output_dir=str(tmp_path), **TINY)
    interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg)
    monkeypatch.undo()
    return cfg, tmp_path / "run"


@pytest.mark.integration
def test_checkpoint_reads_with_weights_only(interrupted):
    _, run_dir = interrupted
    state = torch.load(run_dir / CHECKPOINT_FILE, weights_only=True)
    assert len(state["times"]) == 2
    assert state["strategy"]["clock"]["train_exp_counter"] == 2
    memory = state["strategy"]["memory"]["classes"]
    assert sorted(memory) == list(range(6))  # 4 + 2 classes, 5 exemplars each
    assert all(len(entry["indices"]) == 5 for entry in memory.values())
    assert state["strategy"]["lucir"]["num_old_classes"] == 6
    assert state["strategy"]["lucir"]["old_model"] is not None


@pytest.mark.integration
def test_resume_refuses_another_config_and_names_the_keys(interrupted, capsys):
    cfg, run_dir = interrupted
    before = (run_dir / CHECKPOINT_FILE).read_bytes()
    argv = ["run", "--output_dir", str(run_dir.parent), "--name", "run",
            "--epochs", "3", "--milestones", "1", "--batch_size", "64",
            "--width", "8", "--mem_per_class", "5", "--lr", "0.05"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 1
    message = capsys.readouterr().err
    assert "another configuration" in message
    assert "epochs: 2 in the checkpoint, 3 now" in message
    assert "lr: 0.1 in the checkpoint, 0.05 now" in message
    assert "batch_size" not in message
    assert (run_dir / CHECKPOINT_FILE).read_bytes() == before  # untouched


@pytest.mark.integration
def test_resume_refuses_another_worker_count(interrupted):
    """Each DataLoader worker draws its own augmentation stream, so the
    later experiences of a run resumed with other workers would differ."""
    cfg, run_dir = interrupted
    before = (run_dir / CHECKPOINT_FILE).read_bytes()
    with pytest.raises(CheckpointError, match="num_workers: None in the checkpoint"):
        run_experiment(ExperimentConfig(**{**cfg.to_dict(), "num_workers": 1}))
    assert (run_dir / CHECKPOINT_FILE).read_bytes() == before


@pytest.mark.integration
def test_runtime_keys_may_change_on_resume(interrupted):
    cfg, run_dir = interrupted
    resumed = run_experiment(ExperimentConfig(**{**cfg.to_dict(), "text_log": True}))
    assert len(resumed["accuracy_matrix"]) == 4
    assert (run_dir / "log.txt").read_text().startswith("-- resumed after experience 1")


@pytest.mark.integration
def test_resumed_in_process_equals_uninterrupted(interrupted, tmp_path):
    cfg, run_dir = interrupted
    resumed = run_experiment(cfg)
    full = run_experiment(
        ExperimentConfig(**{**cfg.to_dict(), "output_dir": str(tmp_path / "full")})
    )
    assert resumed["accuracy_matrix"] == full["accuracy_matrix"]


@pytest.mark.integration
def test_overwrite_starts_again(interrupted):
    cfg, run_dir = interrupted
    summary = run_experiment(cfg, overwrite=True)
    assert len(summary["experience_time_s"]) == 4
    with pytest.raises(RunExistsError, match="already holds a finished run"):
        run_experiment(cfg)


@pytest.mark.integration
def test_damaged_checkpoint_is_named(interrupted):
    cfg, run_dir = interrupted
    path = run_dir / CHECKPOINT_FILE
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=str(path)):
        run_experiment(cfg)


def test_failed_write_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    assert checkpoint_module.save_checkpoint(path, {"times": [1.0]})

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", no_space)
    assert not checkpoint_module.save_checkpoint(path, {"times": [1.0, 2.0]})
    assert load_checkpoint(path) == {"times": [1.0]}
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


@pytest.mark.integration
def test_run_goes_on_when_a_checkpoint_cannot_be_written(tmp_path, monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", no_space)
    cfg = ExperimentConfig(output_dir=str(tmp_path), **{**TINY, "save_models": False})
    summary = run_experiment(cfg)
    assert len(summary["accuracy_matrix"]) == 4


def draws() -> tuple:
    return np.random.rand(), torch.rand(3), random.random()  # noqa: NPY002


def test_rng_state_round_trip():
    state = rng_state()
    expected = draws()
    set_rng_state(state)
    again = draws()
    assert expected[0] == again[0]
    assert torch.equal(expected[1], again[1])
    assert expected[2] == again[2]


@pytest.mark.integration
def test_stale_temporary_file_of_a_killed_write_is_ignored(interrupted):
    """A kill while writing leaves the temporary file, not a damaged
    checkpoint: the resume reads the last complete one."""
    cfg, run_dir = interrupted
    (run_dir / f".{CHECKPOINT_FILE}.tmp").write_bytes(b"half a checkpoint")
    summary = run_experiment(cfg)
    assert len(summary["accuracy_matrix"]) == 4


def test_a_folder_that_is_not_a_results_folder_is_refused(tmp_path):
    cfg = ExperimentConfig(output_dir=str(tmp_path), **TINY)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not a bdr-avalanche results folder"):
        run_experiment(cfg)
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"
