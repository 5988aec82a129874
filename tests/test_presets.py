"""Presets: the config files shipped in the package, found by name by
``-c`` and ``inherit:``, listed by ``bdr-avalanche presets``; ``run`` and
``compare`` without ``-c`` read the digits preset on the digits dataset;
every example of ``--help`` is accepted."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from bdr_avalanche.experiment import cli
from bdr_avalanche.experiment.config import (
    ConfigError,
    ExperimentConfig,
    describe,
    load_config,
    preset_names,
    preset_path,
    presets_folder,
)

BDR = "cifar100/b50_5phases_lucir_cwd_bdr"


@pytest.fixture
def started(monkeypatch):
    """Stand-ins for ``run_experiment`` and ``run_comparison``: the
    command line goes through all its checks, then records the config it
    would run (no training)."""
    from bdr_avalanche.experiment import compare, runner

    seen: list[ExperimentConfig] = []
    monkeypatch.setattr(runner, "run_experiment", lambda cfg, **kw: seen.append(cfg))
    monkeypatch.setattr(
        compare, "run_comparison", lambda cfg, names, **kw: seen.append(cfg)
    )
    return seen


def test_every_preset_loads_validates_and_has_a_description():
    names = preset_names()
    assert len(names) == 35 and names == sorted(names)
    assert {"digits", "tiny_imagenet_cpu", BDR, "cifar100/base"} <= set(names)
    for name in names:
        assert load_config([name]).resolved().name, name
        text = describe(name)
        assert text and "\n" not in text, name
        if name.endswith("/base"):
            assert text.endswith("not run alone"), name
    bdr = load_config(["cifar100/b50_10phases_lucir_cwd_bdr"])
    assert (bdr.method, bdr.n_base, bdr.n_phases, bdr.epochs) == (
        "lucir_cwd_bdr",
        50,
        10,
        160,
    )
    assert (bdr.milestones, bdr.lr, bdr.mem_per_class, bdr.bdr.m1) == (
        [80, 120],
        0.1,
        20,
        0.8,
    )
    subset = load_config(["imagenet_subset/b50_25phases_lucir"])
    assert (subset.dataset, subset.lucir.lambda_base, subset.n_phases) == (
        "imagefolder",
        10.0,
        25,
    )
    assert subset.lucir.margin == 0.5  # the other fields are inherited


def test_a_name_with_or_without_yaml_and_its_path_are_the_same_config():
    by_path = load_config([presets_folder() / "cifar100" / f"{BDR[9:]}.yaml"])
    assert load_config([BDR]) == load_config([f"{BDR}.yaml"]) == by_path
    assert preset_path(BDR) == preset_path(f"{BDR}.yaml")
    assert by_path.dataset == "cifar100" and by_path.n_phases == 5


def test_a_path_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config(["digits"]).epochs == 30  # no such file: the preset
    (tmp_path / "digits.yaml").write_text("epochs: 3\n")
    assert load_config(["digits.yaml"]).epochs == 3
    assert load_config(["digits"]).epochs == 30
    (tmp_path / "digits").write_text("epochs: 4\n")
    assert load_config(["digits"]).epochs == 4


def test_inherit_takes_a_path_or_a_preset_name(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("inherit: cifar100/base\nepochs: 10\n")
    cfg = load_config([mine])
    assert (cfg.dataset, cfg.epochs, cfg.lr, cfg.bdr.m1) == ("cifar100", 10, 0.1, 0.8)
    (tmp_path / "cifar100").mkdir()
    (tmp_path / "cifar100" / "base").write_text("epochs: 7\n")
    assert load_config([mine]).dataset == "digits"  # the file beside it wins


@pytest.mark.parametrize(
    ("given", "near"),
    [
        ("digit", "'digits'"),
        ("/nowhere/digits.yaml", "'digits'"),
        ("tiny_imagenet", "'tiny_imagenet_cpu'"),
        (
            "b50_5phases_lucir_cwd_bdr.yaml",  # the name in every folder first
            f"'{BDR}' or 'imagenet_subset/b50_5phases_lucir_cwd_bdr' or "
            "'cifar100/b50_25phases_lucir_cwd_bdr'",
        ),
        (
            "cifar100/b50_5phase_lucir",  # in the folder named
            "'cifar100/b50_5phases_lucir' or 'cifar100/b50_25phases_lucir' or "
            "'cifar100/b50_10phases_lucir'",
        ),
    ],
)
def test_an_unknown_name_is_one_line_with_the_close_names(given, near, capsys):
    with pytest.raises(ConfigError) as err:
        load_config([given])
    assert str(err.value) == (
        f"config file {given} does not exist and is not a preset name (did you "
        f"mean {near}?); run `bdr-avalanche presets` to list them"
    )
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "-c", given])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"bdr-avalanche: error: {err.value}\n"


def test_a_name_far_from_every_preset_gets_the_listing_command():
    with pytest.raises(ConfigError, match=r"preset name; run `bdr-avalanche pre"):
        load_config(["zzzz"])
    with pytest.raises(ConfigError, match=r"^no preset is named zzzz; run `bdr-"):
        preset_path("zzzz")


def test_the_presets_command_lists_them_aligned(capsys):
    assert cli.main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = preset_names()
    assert [line.split()[0] for line in lines] == names
    column = max(map(len, names)) + 2
    for name, line in zip(names, lines, strict=True):
        assert line[column:] == describe(name) and line[column - 1] == " "
    digits = lines[names.index("digits")]
    assert "digits stream" in digits


@pytest.mark.system
def test_the_presets_command_imports_neither_torch_nor_avalanche():
    code = (
        "import sys\nfrom bdr_avalanche.experiment.cli import main\n"
        "assert main(['presets']) == 0\n"
        "print([m for m in ('torch', 'avalanche') if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "default"},
        timeout=600,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "[]"
    assert "cifar100/b50_5phases_lucir_cwd_bdr " in done.stdout


@pytest.mark.parametrize("command", ["run", "compare"])
def test_without_config_the_digits_dataset_reads_the_digits_preset(
    command, started, tmp_path
):
    out = str(tmp_path / "out")
    assert cli.main([command, "--output_dir", out]) == 0
    assert started == [load_config(["digits"], {"output_dir": out})]
    assert (started[0].epochs, started[0].batch_size, started[0].seed) == (30, 32, 0)
    # an option wins over the preset; -c replaces it
    assert cli.main([command, "--output_dir", out, "--epochs", "2"]) == 0
    assert started[-1] == load_config(["digits"], {"output_dir": out, "epochs": 2})
    own = tmp_path / "own.yaml"
    own.write_text("lr: 0.05\n")
    assert cli.main([command, "-c", str(own), "--output_dir", out]) == 0
    assert started[-1] == ExperimentConfig(lr=0.05, output_dir=out)
    assert not (tmp_path / "out").exists()


def test_without_config_another_dataset_reads_no_preset(started, tmp_path):
    out = str(tmp_path / "out")
    argv = ["--dataset", "cifar100", "--dataset_root", "x", "--output_dir", out]
    assert cli.main(["run", *argv]) == 0
    assert started == [ExperimentConfig(dataset="cifar100", dataset_root="x",
                                         output_dir=out)]  # fmt: skip
    assert started[0].epochs == 160


def test_help_gives_the_values_of_the_digits_preset(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "[default: 160; digits without -c: 30; must be >= 1]" in text
    assert "default: for the digits dataset, the digits preset" in text


def _examples() -> list[list[str]]:
    """The command lines of ``--help``'s examples, without the program."""
    text = cli.EXAMPLES.replace("\\\n", " ")
    lines = [line.split("#")[0] for line in text.splitlines()[1:]]
    return [shlex.split(line)[1:] for line in lines if line.strip()]


def test_every_example_of_the_help_is_accepted(started, tmp_path, monkeypatch):
    """Each example's options and presets are accepted, from any folder:
    the command gets as far as starting the run."""
    examples = _examples()
    assert len(examples) == 6 and ["presets"] in examples
    monkeypatch.chdir(tmp_path)  # no checkout around: presets from the package
    for argv in examples:
        out = ["--output_dir", str(tmp_path / "out")] if argv != ["presets"] else []
        assert cli.main([*argv, *out]) == 0, argv
    assert len(started) == len(examples) - 1
    assert started[3].dataset == "cifar100" and started[3].method == "lucir_cwd_bdr"
    assert started[4].dataset == "imagefolder" and started[4].epochs == 6
