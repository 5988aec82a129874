"""The real entry point under ``torchrun``: 2 CPU processes (gloo) run
``bdr-avalanche run`` into one results folder, refuse what they cannot run
before loading torch, and resume a killed job to the bit.

Each test starts ``torchrun`` jobs (a module of its own, so that a test
worker runs it beside ``test_distributed.py``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import paused_run
import pytest

from bdr_avalanche.experiment.checkpoint import load_checkpoint

WORLD = 2


def torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return subprocess.run(
        [*command, f"--nproc_per_node={WORLD}", "-m", "bdr_avalanche", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,  # a bound for a broken job; a working one: a minute
    )


@pytest.mark.system
def test_torchrun_run_writes_one_results_folder(tmp_path):
    """The real entry point: rank 0 alone writes the folder and logs."""
    common = ["--epochs", "8", "--device", "cpu", "--interactive", "false"]
    done = torchrun(["run", "--name", "ddp", "--output_dir", "out", *common], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "out" / "ddp"
    results = json.loads((run_dir / "results.json").read_text())
    matrix = np.array(results["accuracy_matrix"], dtype=float)
    assert matrix.shape == (4, 4)
    assert results["average_incremental_accuracy"] > 0.4  # chance: 0.1 to 0.25
    log = (run_dir / "log.txt").read_text()
    assert log.count("Starting training on experience 0 ") == 1  # one process logs
    assert sorted(p.name for p in (run_dir / "csv").iterdir()) == [
        "eval_results.csv",
        "training_results.csv",
    ]
    assert not (run_dir / "checkpoint.pt").exists()  # deleted once finished


@pytest.mark.system
def test_torchrun_refuses_what_it_cannot_do(tmp_path):
    """Each process exits with status 2 and the one-line reason (torchrun
    itself then exits with 1), before any folder is written."""
    cases = {
        "cannot run under torchrun": ["run", "--method", "naive"],
        "does not split over 2 processes": ["run", "--batch_size", "127"],
        "compare cannot run under torchrun": ["compare"],
    }
    for message, args in cases.items():
        done = torchrun([*args, "--device", "cpu"], tmp_path)
        assert done.returncode == 1, args
        assert "bdr-avalanche: error: " in done.stderr and message in done.stderr
        assert "exitcode  : 2" in done.stderr, args
    assert not (tmp_path / "results").exists()


def children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux ``/proc``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.system
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux /proc")
def test_torchrun_killed_then_resumed_matches_uninterrupted(tmp_path):
    """SIGKILL to the whole torchrun job after its first checkpoint, then the
    same command again: the same accuracy matrix as an uninterrupted
    2-process run, to the bit (each process restores its own random state)."""
    args = ["run", "--name", "run", "--epochs", "6", "--milestones", "4",
            "--batch_size", "32", "--width", "8", "--mem_per_class", "5",
            "--device", "cpu", "--interactive", "false"]  # fmt: skip
    reference = torchrun([*args, "--output_dir", "a"], tmp_path)
    assert reference.returncode == 0, reference.stderr[-3000:]

    run_dir = tmp_path / "b" / "run"
    # rank 0 stops itself (SIGSTOP) 20 steps into the second experience,
    # however fast the machine, and the job is killed there
    marker = tmp_path / "stopped"
    paused_run.make_marker(marker)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={WORLD}", paused_run.SCRIPT,
               str(run_dir / "checkpoint.pt"), "20", str(marker),
               *args, "--output_dir", "b"]  # fmt: skip
    job = subprocess.Popen(
        command,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        paused_run.wait_for_marker(marker, job)
    finally:
        for worker in children(job.pid):  # torchrun's workers, then torchrun
            os.kill(worker, signal.SIGKILL)
        job.kill()
        job.wait()
    assert not (run_dir / "results.json").exists()
    saved = load_checkpoint(run_dir / "checkpoint.pt")
    assert len(saved["rank_rng"]) == WORLD
    assert len(saved["times"]) == 1  # killed in the second experience

    resumed = torchrun([*args, "--output_dir", "b"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after experience" in resumed.stderr
    a = json.loads((tmp_path / "a" / "run" / "results.json").read_text())
    b = json.loads((run_dir / "results.json").read_text())
    assert b["accuracy_matrix"] == a["accuracy_matrix"]
