"""Bad configuration values are rejected before any data is read: one line
naming the key, the value and what is allowed, exit status 2, and no
results folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import fake_datasets as fake
import pytest

from bdr_avalanche.experiment.cli import main

MISSING_DATA = "/nonexistent/dataset"  # checks must fail before reading it

CASES = {
    "unknown key": (["--config", "{bad_yaml}"], ["unknown key(s) lrr"]),
    "wrong type": (["--epochs", "ten"], ["epochs='ten'", "expected int"]),
    "negative lr": (["--lr", "-0.1"], ["lr=-0.1", "must be > 0"]),
    "fraction above 1": (["--bdr.m1", "1.5"], ["bdr.m1=1.5", "in [0, 1]"]),
    "old flat key": (["--m1", "0.5"], ["did you mean --bdr.m1?"]),
    "zero batch": (["--batch_size", "0"], ["batch_size=0", ">= 1"]),
    "unknown choice": (["--backbone", "vgg"], ["backbone='vgg'", "resnet18_cifar"]),
    "phases do not split digits": (
        ["--n_base", "4", "--n_phases", "4"],
        ["n_base=4, n_phases=4", "10 classes of digits", "must equal 10"],
    ),
    "phases do not split cifar100": (
        ["--dataset", "cifar100", "--dataset_root", MISSING_DATA, "--n_phases", "7"],
        ["n_base=50, n_phases=7", "100 classes of cifar100"],
    ),
    "memory above the smallest digits class": (
        ["--mem_per_class", "500"],
        ["mem_per_class=500", "smallest class of digits has 116", "at most 116"],
    ),
    "memory above the smallest cifar100 class": (
        [
            "--dataset",
            "cifar100",
            "--dataset_root",
            MISSING_DATA,
            "--mem_per_class",
            "501",
        ],
        ["mem_per_class=501", "has 500 training images"],
    ),  # fmt: skip
    "memory above the smallest imagenet class": (
        [
            "--dataset",
            "imagenet",
            "--dataset_root",
            MISSING_DATA,
            "--mem_per_class",
            "800",
        ],
        ["mem_per_class=800", "has 732 training images"],
    ),  # fmt: skip
    "cuda device beyond the machine's": (
        ["--device", "cuda:7"],
        ["device='cuda:7' does not exist"],
    ),
    "not a device": (["--device", "gpu0"], ["device='gpu0' is not a device"]),
    "unavailable backend": (["--device", "mps"], ["device='mps' is not available"]),
    "fast input without the images in memory": (
        [
            "--dataset",
            "imagenet",
            "--dataset_root",
            MISSING_DATA,
            "--fast_input",
            "true",
        ],
        ["fast_input=true needs the images in memory", "dataset='imagenet'"],
    ),  # fmt: skip
    "unknown amp mode": (["--amp", "fp8"], ["amp='fp8' is not allowed", "bf16"]),
    "missing dataset_root": (
        ["--dataset", "cifar100"],
        ["dataset_root is required for dataset='cifar100'"],
    ),
}


@pytest.mark.parametrize("command", ["run", "compare"])
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_rejected_before_anything_is_written(case, command, tmp_path, capsys):
    argv, expected = CASES[case]
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("lrr: 0.1\n")
    argv = [a.format(bad_yaml=bad_yaml) for a in argv]
    out = tmp_path / "results"
    with pytest.raises(SystemExit) as exit_info:
        main([command, *argv, "--output_dir", str(out), "--interactive", "false"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for part in expected:
        assert part in err
    assert not out.exists()


def test_scientific_notation_is_a_number(tmp_path):
    """YAML 1.1 reads ``1e-3`` as a string; float keys accept it."""
    from bdr_avalanche.experiment.config import load_config, parse_value

    config = tmp_path / "c.yaml"
    config.write_text("lr: 1e-3\n")
    assert load_config([config]).lr == 1e-3
    assert (
        load_config([], {"first_lr": parse_value("first_lr", "2e-2")}).first_lr == 0.02
    )


def test_training_failure_before_a_checkpoint_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "results"
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--lr", "1e30", "--epochs", "2", "--width", "8",
              "--output_dir", str(out), "--interactive", "false"])  # fmt: skip
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "non-finite loss term(s) classification" in err
    assert "in experience 0" in err
    assert not out.exists() or not any(out.iterdir())


@pytest.fixture
def tree(tmp_path):
    """An ImageFolder tree of 10 classes with 3 training images each."""
    root = tmp_path / "tree"
    fake.write_imagefolder(root, num_classes=10, train_per_class=3, size=8)
    return root


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            ["--mem_per_class", "4"],
            ["mem_per_class=4", "smallest class of imagefolder has 3", "at most 3"],
        ),
        (["--n_base", "5", "--n_phases", "3"], ["10 classes of imagefolder"]),
        (
            ["--in_memory", "true", "--resolution", "224"],
            ["in_memory=true needs resolution < 224", "resolution=224"],
        ),
    ],
)
def test_imagefolder_values_checked_from_the_folder_listing(
    tree, tmp_path, capsys, options, expected
):
    out = tmp_path / "results"
    argv = ["run", "--dataset", "imagefolder", "--dataset_root", str(tree),
            "--n_base", "4", "--n_phases", "3", "--resolution", "8",
            "--mem_per_class", "2", *options, "--output_dir", str(out)]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for part in expected:
        assert part in err
    assert not out.exists()


# -- a home folder that cannot be written ---------------------------------
# Avalanche writes its settings file, ~/.avalanche/config.json, when it is
# first imported. HOME is made unwritable by pointing it under a regular file
# (mkdir then fails with "Not a directory", even for root, whom a read-only
# mode would not stop).
QUICK = ["--epochs", "1", "--width", "8", "--interactive", "false"]


def run_with_home(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home), "PYTHONWARNINGS": "ignore"}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "bdr_avalanche", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,  # a bound for a broken command; a working one: seconds
    )


@pytest.fixture
def unwritable_home(tmp_path):
    (tmp_path / "file").write_text("")
    return tmp_path / "file" / "home"


@pytest.mark.system
def test_bad_value_with_an_unwritable_home_is_one_line(unwritable_home, tmp_path):
    out = tmp_path / "results"
    done = run_with_home(
        unwritable_home, "run", "--lr", "nan", "--output_dir", str(out)
    )
    assert done.returncode == 2
    assert done.stderr == (
        "bdr-avalanche: error: lr=nan is not allowed; it must be > 0\n"
    )
    assert not out.exists()


@pytest.mark.system
def test_run_with_an_unwritable_home_is_one_line_naming_home(unwritable_home, tmp_path):
    out = tmp_path / "results"
    done = run_with_home(unwritable_home, "run", *QUICK, "--output_dir", str(out))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "bdr-avalanche: error: Avalanche cannot create its settings file "
        f"{unwritable_home}/.avalanche/config.json (Not a directory): HOME="
        f"{unwritable_home} must be a folder that can be written; set HOME to "
        "one, or create that file"
    ]
    assert not out.exists()
