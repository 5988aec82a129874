"""The example scripts of ``experiments/`` run on the digits stream.

Each script runs as ``__main__`` in the test's process (``runpy``), with
``--digits --epochs 1`` (seconds on one core): a subprocess would spend
most of its time importing torch and Avalanche again. Its output, printed
by Avalanche's ``InteractiveLogger`` and by the script, is then checked:
after every training experience the model is evaluated on the whole
test stream (4 experiences), the stream accuracy is reported each time,
and the final accuracy printed is the last of them, a
number in [0, 1].
"""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # every test trains on a whole stream

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


def run_example(capfd, monkeypatch, script: str, *args: str) -> str:
    """Run ``experiments/<script> --digits --epochs 1 ARGS`` as ``__main__``;
    what it printed."""
    path = ROOT / "experiments" / script
    argv = [str(path), "--digits", "--epochs", "1", *args, "--cuda", "-1"]
    monkeypatch.setattr("sys.argv", argv)
    capfd.readouterr()  # start from nothing
    runpy.run_path(str(path), run_name="__main__")
    return capfd.readouterr().out


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


def test_lucir_cwd_bdr_example(digits_benchmark, capfd, monkeypatch):
    stdout = run_example(capfd, monkeypatch, "example_lucir_cwd_bdr.py")
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
def test_replay_examples(script: str, args: tuple[str, ...], capfd, monkeypatch):
    check_loop(run_example(capfd, monkeypatch, script, *args))
