"""A results folder is never lost, shared, or written outside --output_dir.

Each case runs the command line (in a subprocess where a signal or a lock
is involved) and checks the exit status, the one line on stderr, that no
file outside the run folder changed and that no half-written file remains.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import paused_run
import pytest
import torch

import bdr_avalanche.experiment._atomic as atomic_module
from bdr_avalanche.experiment.cli import main
from bdr_avalanche.experiment.run_folder import LOCK, MARKER, RunFolder

# Tiny, quick runs (digits: 4 base classes + 3 phases).
QUICK = [
    "--epochs", "1", "--batch_size", "64", "--width", "8", "--mem_per_class", "5",
    "--interactive", "false",
]  # fmt: skip
# Runs that the tests below stop where they need them (see paused_run).
SLOW = [
    "--epochs", "4", "--milestones", "3", "--batch_size", "32", "--width", "8",
    "--mem_per_class", "5", "--interactive", "false",
]  # fmt: skip
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
TIMEOUT_S = 900
"""Bound on a subprocess: for a broken run, far above a working one's
time on a slow, busy machine."""


def command(*args: str, verb: str = "run") -> list[str]:
    return [sys.executable, "-m", "bdr_avalanche", verb, *args]


def snapshot(root: Path, skip: Path | None = None) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` (but under ``skip``): size and mtime. Lock
    files are left out: taking a free lock records its holder there."""
    files = {}
    for path in root.rglob("*"):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        if path.name == LOCK:
            continue
        if path.is_file():
            stat = path.stat()
            files[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return files


def half_written(root: Path) -> list[Path]:
    """Temporary files of interrupted atomic writes."""
    return [p for p in root.rglob(".*.tmp")]


def one_error_line(err: str) -> str:
    """The one line the command ends its stderr with (above it: the log)."""
    lines = [line for line in err.splitlines() if line.strip()]
    ours = [line for line in lines if line.startswith("bdr-avalanche:")]
    assert len(ours) == 1 and lines[-1] == ours[0], err
    assert "Traceback" not in err
    return ours[0]


def run_cli(capsys, *args: str, verb: str = "run") -> tuple[int, str]:
    """``main`` in this process: exit status and its one stderr line."""
    capsys.readouterr()
    try:
        status = main([verb, *args])
    except SystemExit as exit_info:
        status = exit_info.code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("bdr-avalanche:")]
    assert "Traceback" not in err
    return status, errors[0] if errors else ""


# -- data loss ---------------------------------------------------------
def test_a_failing_run_never_deletes_a_folder_it_does_not_own(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "precious.txt").write_text("x")
    before = snapshot(tmp_path)
    status, line = run_cli(
        capsys, *QUICK, "--output_dir", "o", "--name", "../v", "--lr", "1e30"
    )
    assert status == 2
    assert "name='../v' is not allowed" in line
    assert snapshot(tmp_path) == before  # not even `o` was created


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(
    tmp_path, capsys
):
    status, line = run_cli(
        capsys, *QUICK, "--output_dir", str(tmp_path / "o"), "--name", "v",
        "--lr", "1e30",
    )  # fmt: skip
    assert status == 1
    assert "non-finite loss" in line
    assert not (tmp_path / "o" / "v").exists()


def test_an_empty_folder_given_as_the_run_folder_stays(tmp_path, capsys):
    (tmp_path / "o" / "v").mkdir(parents=True)
    status, _ = run_cli(
        capsys, *QUICK, "--output_dir", str(tmp_path / "o"), "--name", "v",
        "--lr", "1e30",
    )  # fmt: skip
    assert status == 1
    assert (tmp_path / "o" / "v").is_dir()
    assert list((tmp_path / "o" / "v").iterdir()) == []


@pytest.mark.parametrize("name", ["mydata", "."])
def test_overwrite_refuses_a_folder_without_the_marker(tmp_path, capsys, name):
    (tmp_path / "mydata").mkdir()
    (tmp_path / "mydata" / "f.txt").write_text("x")
    (tmp_path / "other_run").mkdir()
    (tmp_path / "other_run" / MARKER).write_text('{"kind": "run"}')
    before = snapshot(tmp_path)
    status, line = run_cli(
        capsys, *QUICK, "--output_dir", str(tmp_path), "--name", name, "--overwrite"
    )
    assert status == 2
    expected = "not a bdr-avalanche results folder" if name != "." else "name='.'"
    assert expected in line
    assert snapshot(tmp_path) == before


def test_a_run_does_not_overwrite_a_comparison_folder(tmp_path, capsys):
    folder = tmp_path / "cmp"
    folder.mkdir()
    (folder / MARKER).write_text('{"kind": "compare"}')
    (folder / "lucir").mkdir()
    before = snapshot(tmp_path)
    status, line = run_cli(
        capsys, *QUICK, "--output_dir", str(tmp_path), "--name", "cmp", "--overwrite"
    )
    assert status == 2
    assert "holds a comparison's results, not a run's results" in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["../../escape", "/abs/path", "a/b", ".."])
def test_a_name_is_one_folder_under_output_dir(tmp_path, capsys, name):
    status, line = run_cli(capsys, *QUICK, "--output_dir", str(tmp_path / "o"),
                           "--name", name)  # fmt: skip
    assert status == 2
    assert line.startswith("bdr-avalanche: error: name=")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
def test_option_values_are_taken_literally(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, _ = run_cli(capsys, *QUICK, "--output_dir", "dir #1", "--name", "run #2")
    assert status == 0
    assert (tmp_path / "dir #1" / "run #2" / "results.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir #1"]


def test_output_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "out").write_text("x")
    status, line = run_cli(capsys, *QUICK, "--output_dir", str(tmp_path / "out"))
    assert status == 2
    assert "is a file, not a folder" in line
    assert (tmp_path / "out").read_text() == "x"


@pytest.mark.parametrize("verb", ["run", "compare"])
@pytest.mark.parametrize(
    "code", [errno.ENOSPC, errno.EROFS, errno.EACCES], ids=errno.errorcode.get
)
@pytest.mark.parametrize("stage", ["output_dir", "folder", "marker"])
def test_a_results_folder_that_cannot_be_written_exits_1(
    tmp_path, capsys, monkeypatch, verb, code, stage
):
    """A full disk, a read-only file system or a missing permission is the
    machine's failure, not the input's: exit status 1, as for any results
    file (README), one line with the reason, nothing left behind."""
    out = tmp_path / "full" / "o"
    folder = out / "x"
    refused = {"output_dir": out, "folder": folder}.get(stage)
    real_mkdir, real_fsync = os.mkdir, os.fsync

    def mkdir(path, *args, **kwargs):
        if refused is not None and Path(path) == refused:
            raise OSError(code, os.strerror(code), str(path))
        return real_mkdir(path, *args, **kwargs)

    def fsync(fd):
        if stage == "marker" and os.readlink(f"/proc/self/fd/{fd}").endswith(
            f".{MARKER}.tmp"
        ):
            raise OSError(code, os.strerror(code))
        return real_fsync(fd)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(atomic_module.os, "fsync", fsync)
    status, line = run_cli(
        capsys, *QUICK, "--output_dir", str(out), "--name", "x", verb=verb
    )
    assert status == 1
    what = {
        "output_dir": f"cannot create output_dir {out}",
        "folder": f"cannot create {folder}",
        "marker": f"cannot write to {folder}",
    }[stage]
    assert line == f"bdr-avalanche: error: {what}: {os.strerror(code)}"
    assert list(tmp_path.iterdir()) == []  # the folders it created are gone


# -- atomic writes -----------------------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize("target", ["exp_00.pt", "results.json", "phases.csv"])
def test_a_failing_results_write_stops_with_one_line(
    tmp_path, capsys, monkeypatch, target
):
    real_fsync = os.fsync
    written: list[str] = []

    def full_disk(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        written.append(name)
        if name.endswith(f".{target}.tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(atomic_module.os, "fsync", full_disk)
    run_dir = tmp_path / "o" / "run"
    status, line = run_cli(
        capsys, *QUICK, "--output_dir", str(tmp_path / "o"), "--name", "run"
    )
    assert status == 1
    assert line == (
        f"bdr-avalanche: error: cannot write {run_dir / 'models' / target if target.endswith('.pt') else run_dir / target}: "  # noqa: E501
        "No space left on device"
    )
    assert not half_written(tmp_path)
    if target == "exp_00.pt":  # experience 0: nothing to resume, no folder
        assert not run_dir.exists()
    else:  # the checkpoint of experience 2 remains: the run can resume
        assert not (run_dir / target).exists()
        assert (run_dir / "checkpoint.pt").is_file()
        assert not (run_dir / "results.json").exists()


# -- compare -----------------------------------------------------------
@pytest.fixture(scope="module")
def finished_comparison(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp")
    status = main(["compare", *QUICK, "--output_dir", str(out), "--name", "c",
                   "--methods", "lucir,naive"])  # fmt: skip
    assert status == 0
    return out / "c"


@pytest.mark.integration
@pytest.mark.parametrize(
    "damage, expected",
    [
        ("missing", "config.yaml is missing"),
        ("malformed", "config.yaml cannot be read"),
        ("unknown key", "config.yaml has unknown key(s) lrr"),
    ],
)
def test_compare_refuses_a_damaged_config_of_a_finished_method(
    finished_comparison, capsys, damage, expected
):
    config = finished_comparison / "naive" / "config.yaml"
    original = config.read_text()
    try:
        if damage == "missing":
            config.unlink()
        elif damage == "malformed":
            config.write_text("epochs: [1\n")
        else:
            config.write_text(original + "lrr: 0.1\n")
        before = snapshot(finished_comparison)
        status, line = run_cli(
            capsys, *QUICK, "--output_dir", str(finished_comparison.parent),
            "--name", "c", "--methods", "lucir,naive", verb="compare",
        )  # fmt: skip
        assert status == 2
        assert expected in line and "pass --overwrite to run naive again" in line
        assert snapshot(finished_comparison) == before
    finally:
        config.write_text(original)


# -- signals and locks (subprocesses) ------------------------------------
# The first command of each test stops itself (SIGSTOP) at a known training
# step (see paused_run), so that what the test does next lands there
# however fast or slow the machine.
def start_paused(
    tmp_path: Path, args: list[str], after: Path | None = None, steps: int = 1
) -> tuple[subprocess.Popen, Path]:
    """``bdr-avalanche args`` stopped at its ``steps``-th optimizer step
    once ``after`` exists; the process and its stderr file."""
    stderr = tmp_path / "first.err"
    with stderr.open("w") as file:
        process = paused_run.start(
            args, tmp_path / "stopped", after, steps,
            env=ENV, stdout=subprocess.DEVNULL, stderr=file, text=True,
        )  # fmt: skip
    paused_run.wait_stopped(process, stderr)
    return process, stderr


def resume_with(process: subprocess.Popen, signum: int) -> None:
    """Send ``signum`` to the stopped ``process``, then let it go on: it
    receives the signal where it stopped."""
    process.send_signal(signum)
    process.send_signal(signal.SIGCONT)


@pytest.mark.system
def test_sigint_in_experience_0_leaves_no_folder(tmp_path):
    run_dir = tmp_path / "o" / "run"
    args = ["run", *SLOW, "--output_dir", str(tmp_path / "o"), "--name", "run"]
    process, stderr = start_paused(tmp_path, args)  # experience 0, first step
    try:
        resume_with(process, signal.SIGINT)
        process.wait(timeout=TIMEOUT_S)
    finally:
        process.kill()
    assert process.returncode == 130
    assert one_error_line(stderr.read_text()) == (
        "bdr-avalanche: interrupted in experience 0; run the same command to "
        "resume from experience 0"
    )
    assert not run_dir.exists()
    assert not half_written(tmp_path)


@pytest.mark.system
def test_sigterm_in_experience_1_keeps_the_checkpoint_and_flushed_logs(tmp_path):
    run_dir = tmp_path / "o" / "run"
    args = ["run", *SLOW, "--output_dir", str(tmp_path / "o"), "--name", "run"]
    # the first step after the first checkpoint: experience 1
    process, stderr = start_paused(tmp_path, args, after=run_dir / "checkpoint.pt")
    try:
        resume_with(process, signal.SIGTERM)
        process.wait(timeout=TIMEOUT_S)
    finally:
        process.kill()
    assert process.returncode == 143
    assert one_error_line(stderr.read_text()) == (
        "bdr-avalanche: interrupted in experience 1; run the same command to "
        "resume from experience 1"
    )
    assert not half_written(tmp_path)
    assert (run_dir / "models" / "exp_00.pt").is_file()
    assert not (run_dir / "models" / "exp_01.pt").exists()
    log = (run_dir / "log.txt").read_text()
    assert "Top1_Acc_Stream/eval_phase/test_stream" in log  # experience 0's eval
    torch.load(run_dir / "models" / "exp_00.pt", weights_only=True)  # whole


@pytest.mark.system
def test_log_is_on_disk_after_sigkill(tmp_path):
    run_dir = tmp_path / "o" / "run"
    args = ["run", *SLOW, "--output_dir", str(tmp_path / "o"), "--name", "run"]
    process, _ = start_paused(tmp_path, args, after=run_dir / "checkpoint.pt")
    process.kill()  # in experience 1, after experience 0's evaluation
    process.wait(timeout=TIMEOUT_S)
    assert "Top1_Acc_Stream/eval_phase/test_stream" in (run_dir / "log.txt").read_text()


@pytest.mark.system
def test_a_second_launch_exits_at_once_and_a_stale_lock_does_not_block(tmp_path):
    run_dir = tmp_path / "o" / "run"
    args = [*SLOW, "--output_dir", str(tmp_path / "o"), "--name", "run"]
    first, _ = start_paused(tmp_path, ["run", *args])  # training, lock held
    try:
        config = (run_dir / "config.yaml").read_text()
        second = subprocess.run(
            command(*args), env=ENV, capture_output=True, text=True, timeout=TIMEOUT_S
        )
        assert second.returncode == 2
        line = one_error_line(second.stderr)
        assert line.startswith(f"bdr-avalanche: error: {run_dir} is in use")
        assert f"(process {first.pid})" in line
        assert (run_dir / "config.yaml").read_text() == config
        assert first.poll() is None  # the first run is still there, stopped
    finally:
        # killed: its lock dies with it, the next run is not blocked
        first.kill()
        first.wait(timeout=TIMEOUT_S)
    assert (run_dir / LOCK).exists()
    again = subprocess.run(
        command(*args, "--epochs", "1", "--milestones", "1", "--overwrite"),
        env=ENV, capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert (run_dir / "results.json").is_file()


@pytest.mark.system
@pytest.mark.parametrize("extra", [["--lr", "0.05"], ["--overwrite"]])
def test_a_locked_folder_is_not_touched(tmp_path, extra):
    """Another configuration, or --overwrite, on a folder in use."""
    run_dir = tmp_path / "o" / "run"
    with RunFolder.open(run_dir, "run"):  # as a running run holds it
        (run_dir / "config.yaml").write_text("epochs: 1\n")
        before = snapshot(tmp_path)
        second = subprocess.run(
            command(*QUICK, "--output_dir", str(tmp_path / "o"), "--name", "run",
                    *extra),
            env=ENV, capture_output=True, text=True, timeout=TIMEOUT_S,
        )  # fmt: skip
        assert second.returncode == 2
        line = one_error_line(second.stderr)
        assert line == (
            f"bdr-avalanche: error: {run_dir} is in use by another run (process "
            f"{os.getpid()}); wait for it to end, or choose another name or "
            "output_dir"
        )
        assert snapshot(tmp_path) == before


@pytest.mark.system
def test_two_comparisons_on_one_folder(tmp_path):
    out = tmp_path / "o"
    args = [*SLOW, "--output_dir", str(out), "--name", "c", "--methods", "naive,lucir"]
    first, _ = start_paused(tmp_path, ["compare", *args])  # training naive
    try:
        before = snapshot(out / "c", skip=out / "c" / "naive")
        second = subprocess.run(
            command(*args, verb="compare"),
            env=ENV, capture_output=True, text=True, timeout=TIMEOUT_S,
        )  # fmt: skip
        assert second.returncode == 2
        assert one_error_line(second.stderr).startswith(
            f"bdr-avalanche: error: {out / 'c'} is in use"
        )
        assert snapshot(out / "c", skip=out / "c" / "naive") == before
        assert first.poll() is None
        assert json.loads((out / "c" / MARKER).read_text()) == {"kind": "compare"}
    finally:
        first.kill()
        first.wait(timeout=TIMEOUT_S)


# Runs bdr-avalanche and reports, after it exits, which of the heavy modules
# it imported (on the last line of stdout).
HEAVY = ("torch", "avalanche")
IMPORTS = f"""
import sys
from bdr_avalanche.experiment.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as exit_info:
    status = exit_info.code
print("imported:", ",".join(m for m in {HEAVY!r} if m in sys.modules))
sys.exit(status)
"""


@pytest.mark.system
@pytest.mark.parametrize(
    "verb, kind, options, folder",
    [
        ("run", "run", ["--name", "r"], "r"),
        ("run", "run", [], "digits_b4_3phases_lucir_cwd_bdr_seed0"),
        ("compare", "compare", ["--name", "c"], "c"),
        ("compare", "compare", [], "compare_digits_b4_3phases_seed0"),
    ],
    ids=["run", "run_default_name", "compare", "compare_default_name"],
)
def test_a_folder_in_use_is_refused_before_torch_is_imported(
    tmp_path, verb, kind, options, folder
):
    """The lock is checked right after the options: a second launch is
    refused without importing torch or Avalanche (in a second or two, not
    after the seconds those imports take)."""
    held = tmp_path / "o" / folder
    with RunFolder.open(held, kind):
        before = snapshot(tmp_path)
        result = subprocess.run(
            [sys.executable, "-c", IMPORTS, verb, *QUICK, *options,
             "--output_dir", str(tmp_path / "o")],
            env=ENV, capture_output=True, text=True, timeout=TIMEOUT_S,
        )  # fmt: skip
        assert snapshot(tmp_path) == before
    assert result.returncode == 2, result.stderr[-2000:]
    assert one_error_line(result.stderr).startswith(
        f"bdr-avalanche: error: {held} is in use by another run (process {os.getpid()})"
    )
    assert result.stdout.splitlines()[-1] == "imported: "
