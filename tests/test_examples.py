"""The example scripts of ``experiments/`` run on the digits stream.

Each script runs in a subprocess with ``--digits --epochs 1`` (seconds on
one core); its output, printed by Avalanche's ``InteractiveLogger`` and by
the script, is then checked: after every training experience the model is
evaluated on the whole test stream (4 experiences), the stream accuracy is
reported each time, and the final accuracy printed is the last of them, a
number in [0, 1].
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.system  # every test starts Python processes

ROOT = Path(__file__).resolve().parents[1]
N_EXPERIENCES = 4  # split_digits: 4 base classes, then 3 experiences of 2
NUMBER = r"(-?\d+(?:\.\d+)?)"
STREAM_ACCURACY = re.compile(
    rf"^\tTop1_Acc_Stream/eval_phase/test_stream/Task000 = {NUMBER}$", re.M
)
EXPERIENCE_ACCURACY = re.compile(
    rf"^\tTop1_Acc_Exp/eval_phase/test_stream/Task000/Exp(\d+) = {NUMBER}$", re.M
)
EVAL_START = re.compile(r"^-- Starting eval on experience (\d+) \(Task 0\)", re.M)
FINAL = re.compile(rf"^Final accuracy on the test stream: {NUMBER}$", re.M)


def run_example(script: str, *args: str) -> str:
    """Run ``experiments/<script> --digits --epochs 1 ARGS``; its stdout."""
    command = [sys.executable, f"experiments/{script}", "--digits", "--epochs", "1"]
    result = subprocess.run(
        [*command, *args, "--cuda", "-1"],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def check_loop(stdout: str) -> list[float]:
    """The checks every example passes; the stream accuracy after each
    experience."""
    evaluated = [int(e) for e in EVAL_START.findall(stdout)]
    assert evaluated == list(range(N_EXPERIENCES)) * N_EXPERIENCES
    accuracies = [float(a) for a in STREAM_ACCURACY.findall(stdout)]
    assert len(accuracies) == N_EXPERIENCES
    assert all(0.0 <= a <= 1.0 for a in accuracies), accuracies
    (final,) = FINAL.findall(stdout)
    assert 0.0 <= float(final) <= 1.0
    assert float(final) == pytest.approx(accuracies[-1], abs=1e-4)
    return accuracies


def test_lucir_cwd_bdr_example(digits_benchmark):
    stdout = run_example("example_lucir_cwd_bdr.py")
    accuracies = check_loop(stdout)
    # The first evaluation covers the classes not learned yet: their logits
    # are masked, so experiences 1-3 have accuracy 0 and the stream accuracy
    # is experience 0's scaled by its share of the test set.
    first_eval = stdout[: stdout.index("Start of experience 1")]
    per_experience = {
        int(e): float(a) for e, a in EXPERIENCE_ACCURACY.findall(first_eval)
    }
    assert sorted(per_experience) == list(range(N_EXPERIENCES))
    assert [per_experience[e] for e in (1, 2, 3)] == [0.0] * 3
    sizes = [len(e.dataset) for e in digits_benchmark.test_stream]
    share = sizes[0] / sum(sizes)
    assert accuracies[0] == pytest.approx(per_experience[0] * share, abs=1e-3)


@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("example_replay_bdr.py", ()),
        ("example_replay_bdr.py", ("--strategy", "herding", "--cwd")),
        ("example_replay_bdr.py", ("--strategy", "der", "--cwd")),
    ],
    ids=["replay", "replay-herding-cwd", "der-cwd"],
)
def test_replay_examples(script: str, args: tuple[str, ...]):
    check_loop(run_example(script, *args))
