"""Config files, overrides and their validation; the command line's help."""

from __future__ import annotations

import pytest

from bdr_avalanche.experiment.cli import build_parser, main
from bdr_avalanche.experiment.config import (
    ConfigError,
    ExperimentConfig,
    config_keys,
    load_config,
    parse_value,
)


def test_defaults_resolve_per_dataset():
    digits = ExperimentConfig().resolved()
    assert (digits.n_base, digits.n_phases, digits.backbone) == (4, 3, "small_cnn")
    assert digits.name == "digits_b4_3phases_lucir_cwd_bdr_seed1993"
    cifar = ExperimentConfig(dataset="cifar100", dataset_root="x").resolved()
    assert (cifar.n_base, cifar.n_phases, cifar.backbone) == (50, 5, "resnet18_cifar")
    small = ExperimentConfig(dataset="imagefolder", dataset_root="x", resolution=32)
    assert small.resolved().backbone == "resnet18_cifar"
    big = ExperimentConfig(dataset="imagefolder", dataset_root="x").resolved()
    assert (big.resolution, big.backbone) == (224, "resnet18_imagenet")


def test_inherit_and_later_files_win(tmp_path):
    (tmp_path / "base.yaml").write_text("epochs: 7\nlr: 0.5\n")
    (tmp_path / "child.yaml").write_text("inherit: base.yaml\nlr: 0.2\n")
    (tmp_path / "last.yaml").write_text("batch_size: 16\n")
    cfg = load_config([tmp_path / "child.yaml", tmp_path / "last.yaml"], {"lr": 0.3})
    assert (cfg.epochs, cfg.lr, cfg.batch_size) == (7, 0.3, 16)


def test_inherit_cycle_is_reported(tmp_path):
    (tmp_path / "a.yaml").write_text("inherit: b.yaml\n")
    (tmp_path / "b.yaml").write_text("inherit: a.yaml\n")
    with pytest.raises(ConfigError, match="inherits from itself"):
        load_config([tmp_path / "a.yaml"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epoch: 5\n", r"unknown key\(s\) epoch in .*bad.yaml"),
        ("epochs: ten\n", r"epochs='ten' has the wrong type; expected int"),
        ("epochs: 0\n", r"epochs=0 is not allowed; it must be >= 1"),
        ("bdr: {m1: 1.5}\n", r"bdr.m1=1.5 is not allowed; it must be in \[0, 1\]"),
        ("bdr.m1: 1.5\n", r"bdr.m1=1.5 is not allowed; it must be in \[0, 1\]"),
        ("bdr: {m1: x}\n", r"bdr.m1='x' has the wrong type; expected float"),
        ("bdr: {nope: 1}\n", r"unknown key\(s\) bdr.nope"),
        ("m1: 0.5\n", r"unknown key 'm1' in .*bad.yaml; did you mean 'bdr.m1'\?"),
        ("cwd_coef: 0.5\n", r"unknown key 'cwd_coef' in .*; did you mean 'cwd.coef'\?"),
        ("method: ewc\n", r"method 'ewc': unknown part 'ewc'; a method is a base"),
        (
            "milestones: [120, 80]\n",
            r"milestones=\[120, 80\] is not allowed; it must be a list of increasing",
        ),
        ("dataset: cifar100\n", r"dataset_root is required for dataset='cifar100'"),
        ("lr: -1\n", r"lr=-1 is not allowed; it must be > 0"),
        ("- 1\n- 2\n", r"must hold a mapping"),
        ("a: [\n", r"is not valid YAML"),
    ],
)
def test_bad_config_files(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config([path])


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nowhere.yaml does not exist"):
        load_config([tmp_path / "nowhere.yaml"])


def test_parse_value():
    assert parse_value("milestones", "80,120") == [80, 120]
    assert parse_value("milestones", "[3, 4]") == [3, 4]
    assert parse_value("lr", "0.05") == 0.05
    assert parse_value("wandb", "true") is True
    assert parse_value("first_lr", "null") is None
    assert parse_value("name", "123") == "123"
    assert parse_value("wandb_tags", "a,b") == ["a", "b"]
    assert parse_value("bdr.m1", "0.6") == 0.6
    assert parse_value("der.batch_size_mem", "") is None
    with pytest.raises(ConfigError, match="did you mean 'bdr.momentum'"):
        parse_value("bdr_momentum", "0.9")


def test_records_nest_and_inherit_field_by_field(tmp_path):
    (tmp_path / "base.yaml").write_text("bdr: {m1: 0.6, m2: 0.7}\n")
    (tmp_path / "child.yaml").write_text("inherit: base.yaml\nbdr: {m2: 0.5}\n")
    cfg = load_config([tmp_path / "child.yaml"], {"bdr.tau": 2.0})
    assert (cfg.bdr.m1, cfg.bdr.m2, cfg.bdr.tau) == (0.6, 0.5, 2.0)
    assert cfg.flat()["bdr.m1"] == 0.6 and cfg.to_dict()["bdr"]["m2"] == 0.5
    # a run's stored config.yaml (nested) gives the same config back
    assert ExperimentConfig(**cfg.to_dict()) == cfg
    assert cfg.replace({"cwd.coef": 0.1}).diff(cfg) == {"cwd.coef": (0.1, 0.5)}
    with pytest.raises(ConfigError, match="did you mean 'lwf.alpha' or 'der.alpha'"):
        load_config([], {"alpha": 1.0})


@pytest.mark.parametrize("command", ["run", "compare"])
def test_help_documents_every_key(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for key in config_keys():
        assert f"--{key} " in text or key == "method", key
    assert "--bdr.m1 0.6" in text  # the key style, in the epilog
    assert "--config" in text and "--overwrite" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--epochs", "0"], "epochs=0 is not allowed"),
        (["run", "--bogus", "1"], "unrecognized arguments: --bogus"),
        (
            ["run", "--cwd_coef", "1"],
            "unknown option --cwd_coef; did you mean --cwd.coef?",
        ),
        (["run", "--bdr.m1", "2"], "bdr.m1=2.0 is not allowed; it must be in [0, 1]"),
        (["run", "--device", "cuda:7"], "device='cuda:7' does not exist"),
        (["run", "--device", "banana"], "device='banana' is not a device"),
        (["run", "--backbone", "resnet32"], "needs RGB images; digits is grey-scale"),
        (["run", "--n_base", "5"], "do not split the 10 classes of digits"),
        (["compare", "--methods", "lucir,ewc"], "methods='lucir,ewc' is not allowed"),
    ],
)
def test_command_line_errors_exit_2(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--output_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) <= 2  # usage line + message, no traceback
    assert not any(tmp_path.iterdir()), "no results folder may be left behind"
