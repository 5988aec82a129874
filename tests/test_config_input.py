"""Command-line values are read by the key's type, run names are one folder
name, seeds fit NumPy, and unreadable config files are named: each bad
input ends with one line ``bdr-avalanche: error: ...``, exit status 2, no
traceback and no results folder."""

from __future__ import annotations

import os
import pathlib
import resource
import subprocess
import sys

import pytest

from bdr_avalanche.experiment.cli import main
from bdr_avalanche.experiment.config import ConfigError, load_config, parse_value
from bdr_avalanche.experiment.config.files import _read_yaml
from bdr_avalanche.experiment.config.text import _parse

FILES = {
    "inherit_int.yaml": "inherit: 5\n",
    "inherit_null.yaml": "inherit: [null]\n",
    "inherit_mapping.yaml": "inherit: {a: b}\n",
    "inherit_dot.yaml": "inherit: .\n",
    "inherit_missing.yaml": "inherit: gone.yaml\n",
    "inherit_nul.yaml": 'inherit: "a\\0b"\n',
    "syntax.yaml": "lr: 0.1\nmilestones: [80,\n",
    "escape.yaml": 'name: "\\q"\n',
    "tab.yaml": "lr: 0.1\n\tm1: 0.5\n",
    "nul.yaml": "lr: 0.1\nm\x001: 0.5\n",
    "list.yaml": "- lr\n",
    "key_break.yaml": '"a\\nb": 1\n',
}
BINARY = bytes(range(256)) * 4  # not UTF-8
LIST_FORMS = "as [a, b] or a,b"

# options, what the one line must contain ({d}: the folder of the files)
CASES = {
    "float from a broken list": (["--lr", "[1"], ["lr='[1' is not a number"]),
    "float from a word": (["--momentum", "high"], ["momentum='high'", "float"]),
    "int from a word": (["--seed", "abc"], ["seed='abc' is not an integer"]),
    "int from a float": (["--epochs", "2.5"], ["epochs='2.5' is not an integer"]),
    "optional int": (["--n_base", "four"], ["n_base='four'", "null"]),
    "bool from a word": (
        ["--wandb", "maybe"],
        ["wandb='maybe' is not a boolean", "true/false", "on/off", "1/0"],
    ),
    "optional bool": (["--fast_input", "2"], ["fast_input='2' is not a boolean"]),
    "broken flow list": (
        ["--milestones", "[1"],
        ["milestones='[1' is not a list", "column 3", LIST_FORMS],
    ),
    "list item": (["--milestones", "80,x"], ["milestones='80,x'", "item 'x'"]),
    "nested list": (["--milestones", "[[80]]"], ["milestones='[[80]]'", LIST_FORMS]),
    "list of mappings": (["--wandb_tags", "[a: b]"], ["wandb_tags='[a: b]'"]),
    "name with colons": (["--name", "a: b: c"], ["name='a: b: c' is not allowed"]),
    "name going up": (["--name", "../v"], ["name='../v' is not allowed", "'/'"]),
    "name of two folders": (["--name", "a/b"], ["name='a/b'", "one folder name"]),
    "name with a backslash": (["--name", "a\\b"], ["name='a\\\\b'"]),
    "name '..'": (["--name", ".."], ["name='..' is not allowed"]),
    "name '.'": (["--name", "."], ["name='.' is not allowed"]),
    "name with a line break": (["--name", "a\nb"], ["name='a\\nb'", "control"]),
    "name with a tab": (["--name", "a\tb"], ["name='a\\tb'", "control"]),
    "name with a star": (["--name", "r*"], ["name='r*'", "'*'"]),
    "name with a quote": (["--name", 'say "hi"'], ["name='say \"hi\"'", "'\"'"]),
    "name too long": (["--name", "n" * 256], ["255 bytes"]),
    "negative class order seed": (
        ["--class_order_seed", "-1"],
        ["class_order_seed=-1 is not allowed", "in [0, 4294967295]"],
    ),
    "seed above NumPy's": (
        ["--seed", "4294967296"],
        ["seed=4294967296 is not allowed", "in [0, 4294967295]"],
    ),
    "config is a folder": (["-c", "{d}"], ["config file {d} is a folder"]),
    "config is binary": (
        ["-c", "{d}/binary.yaml"],
        ["config file {d}/binary.yaml is not a YAML text file", "not UTF-8"],
    ),
    "config with a NUL character": (
        ["-c", "{d}/nul.yaml"],
        ["config file {d}/nul.yaml is not valid YAML", "#x0000"],
    ),
    "config syntax": (
        ["-c", "{d}/syntax.yaml"],
        ["config file {d}/syntax.yaml is not valid YAML", "(line 3, column 1)"],
    ),
    "config escape": (
        ["-c", "{d}/escape.yaml"],
        ["{d}/escape.yaml is not valid YAML", "unknown escape", "line 1"],
    ),
    "config tab": (["-c", "{d}/tab.yaml"], ["{d}/tab.yaml is not valid YAML"]),
    "config holds a list": (["-c", "{d}/list.yaml"], ["{d}/list.yaml must hold"]),
    "config key with a line break": (
        ["-c", "{d}/key_break.yaml"],
        ["unknown key(s) 'a\\nb' in {d}/key_break.yaml"],
    ),
    "missing config": (["-c", "{d}/nowhere.yaml"], ["{d}/nowhere.yaml does not"]),
    "inherit a number": (
        ["-c", "{d}/inherit_int.yaml"],
        ["config file {d}/inherit_int.yaml: inherit=5 is not allowed"],
    ),
    "inherit a null": (
        ["-c", "{d}/inherit_null.yaml"],
        ["{d}/inherit_null.yaml: inherit=[None] is not allowed", "file names"],
    ),
    "inherit a mapping": (
        ["-c", "{d}/inherit_mapping.yaml"],
        ["{d}/inherit_mapping.yaml: inherit="],
    ),
    "inherit a folder": (
        ["-c", "{d}/inherit_dot.yaml"],
        ["config file {d} (inherited by {d}/inherit_dot.yaml) is a folder"],
    ),
    "inherit a missing file": (
        ["-c", "{d}/inherit_missing.yaml"],
        ["{d}/gone.yaml (inherited by {d}/inherit_missing.yaml) does not exist"],
    ),
    "inherit a NUL character": (
        ["-c", "{d}/inherit_nul.yaml"],
        ["(inherited by {d}/inherit_nul.yaml) cannot be read"],
    ),
}


@pytest.fixture
def files(tmp_path):
    """The config files of :data:`FILES` and a binary one, in a folder."""
    folder = tmp_path / "configs"
    folder.mkdir()
    for name, text in FILES.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "binary.yaml").write_bytes(BINARY)
    return folder.resolve()


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    """Every command here must fail while reading its options: a run or a
    comparison that starts is a failure (and would train for minutes)."""
    from bdr_avalanche.experiment import compare, runner

    def start(*args, **kwargs):
        pytest.fail("the options were accepted and a run started")

    monkeypatch.setattr(runner, "run_experiment", start)
    monkeypatch.setattr(compare, "run_comparison", start)


def _fails_in_one_line(argv, capsys) -> str:
    """Run ``bdr-avalanche`` with ``argv``; the one line it prints."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    assert err.startswith("bdr-avalanche: error: "), repr(err)
    return err.rstrip("\n")


@pytest.mark.parametrize("command", ["run", "compare"])
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_is_one_line(case, command, files, tmp_path, capsys):
    argv, expected = CASES[case]
    out = tmp_path / "results"
    argv = [a.format(d=files) for a in argv]
    line = _fails_in_one_line(
        [command, *argv, "--output_dir", str(out), "--interactive", "false"], capsys
    )
    for part in expected:
        assert part.format(d=files) in line, line
    assert not out.exists()


def test_unreadable_config_is_named(files, tmp_path, capsys, monkeypatch):
    """A file without read permission (simulated: root may read anything)."""
    path = files / "secret.yaml"
    path.write_text("lr: 0.1\n")
    open_file = pathlib.Path.open

    def refuse(self, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return open_file(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", refuse)
    out = tmp_path / "results"
    line = _fails_in_one_line(
        ["run", "-c", str(path), "--output_dir", str(out)], capsys
    )
    assert line == (
        f"bdr-avalanche: error: config file {path} cannot be read: permission denied"
    )
    assert not out.exists()


def test_yaml_errors_are_one_line_and_name_the_file(files):
    for name in ("syntax.yaml", "escape.yaml", "tab.yaml", "nul.yaml", "binary.yaml"):
        with pytest.raises(ConfigError) as err:
            _read_yaml(files / name)
        assert "\n" not in str(err.value)
        assert str(err.value).startswith(f"config file {files / name} ")


def test_inherit_takes_a_name_or_a_list_of_names(files):
    (files / "base.yaml").write_text("epochs: 7\n")
    (files / "other.yaml").write_text("lr: 0.5\n")
    (files / "one.yaml").write_text("inherit: base.yaml\n")
    (files / "two.yaml").write_text("inherit: [base.yaml, other.yaml]\n")
    (files / "none.yaml").write_text("inherit: []\nlr: 0.2\n")
    assert load_config([files / "one.yaml"]).epochs == 7
    two = load_config([files / "two.yaml"])
    assert (two.lr, two.epochs) == (0.5, 7)
    assert load_config([files / "none.yaml"]).lr == 0.2


def test_scientific_notation_in_files_is_a_number(files):
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; float keys take it."""
    (files / "sci.yaml").write_text("lr: 1e-3\nfirst_lr: 2e-2\n")
    cfg = load_config([files / "sci.yaml"])
    assert (cfg.lr, cfg.first_lr) == (1e-3, 2e-2)


# ----------------------------------------------------------------------
# Values that used to be mangled by YAML are now taken as they are.


@pytest.mark.parametrize(
    ("key", "text"),
    [
        ("name", "run #2"),
        ("name", "null"),
        ("name", "~"),
        ("name", "123"),
        ("name", "true"),
        ("name", "[x]"),
        ("name", " spaced "),
        ("name", "#hash"),
        ("output_dir", "dir #1"),
        ("output_dir", "a: b"),
        ("output_dir", "null"),
        ("output_dir", "../out/x"),
        ("wandb_project", "proj #3"),
        ("wandb_entity", "~"),
        ("device", "cpu"),
    ],
)
def test_text_keys_take_the_text_as_it_is(key, text):
    assert parse_value(key, text) == text
    cfg = load_config([], {key: parse_value(key, text)})
    assert getattr(cfg, key) == text
    assert getattr(cfg.resolved(), key) == text


def test_run_name_with_a_hash_names_the_folder():
    cfg = load_config(
        [],
        {
            "name": parse_value("name", "run #2"),
            "output_dir": parse_value("output_dir", "dir #1"),
        },
    ).resolved()
    assert (cfg.name, cfg.output_dir) == ("run #2", "dir #1")


def test_empty_text_is_the_default_for_optional_text_keys():
    assert parse_value("name", "") is None
    assert load_config([], {"name": parse_value("name", "")}).resolved().name == (
        "digits_b4_3phases_lucir_cwd_bdr_seed1993"
    )
    assert parse_value("dataset_root", "") is None
    assert parse_value("wandb_entity", "") is None
    assert parse_value("output_dir", "") == ""  # not optional: literal


@pytest.mark.parametrize(
    ("key", "text", "value"),
    [
        ("seed", "0", 0),
        ("seed", " 42 ", 42),
        ("seed", "4294967295", 4294967295),
        ("epochs", "+3", 3),
        ("n_base", "0", 0),
        ("n_base", "null", None),
        ("n_base", "None", None),
        ("n_base", "", None),
        ("first_batch_size", "NULL", None),
    ],
)
def test_int_keys(key, text, value):
    assert parse_value(key, text) == value
    assert type(parse_value(key, text)) is type(value)


@pytest.mark.parametrize("text", ["abc", "2.5", "1e3", "[1", "", "null", "true"])
def test_int_keys_refuse_what_is_not_an_integer(text):
    with pytest.raises(ConfigError) as err:
        parse_value("seed", text)
    assert str(err.value) == f"seed={text!r} is not an integer; expected int"


@pytest.mark.parametrize(
    ("key", "text", "value"),
    [
        ("lr", "0.05", 0.05),
        ("lr", "1e-3", 1e-3),
        ("lr", "1E-3", 1e-3),
        ("lr", "2", 2.0),
        ("lr", ".5", 0.5),
        ("first_lr", "null", None),
        ("first_lr", "none", None),
        ("first_lr", "", None),
        ("first_lr", "2e-2", 0.02),
    ],
)
def test_float_keys(key, text, value):
    parsed = parse_value(key, text)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("text", ["[1", "fast", "", "1,2", "null", "0.1.2"])
def test_float_keys_refuse_what_is_not_a_number(text):
    with pytest.raises(ConfigError, match=r"^lr=.* is not a number; expected float"):
        parse_value("lr", text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("True", True),
        ("YES", True),
        ("on", True),
        ("1", True),
        ("false", False),
        ("No", False),
        ("OFF", False),
        ("0", False),
        (" true ", True),
    ],
)
def test_bool_keys(text, value):
    assert parse_value("wandb", text) is value
    assert parse_value("fast_input", text) is value


@pytest.mark.parametrize("text", ["null", "None", ""])
def test_optional_bool_keys_take_null(text):
    assert parse_value("fast_input", text) is None


@pytest.mark.parametrize("text", ["maybe", "2", "null", "", "y", "truee"])
def test_bool_keys_refuse_other_words(text):
    with pytest.raises(ConfigError) as err:
        parse_value("wandb", text)
    assert str(err.value) == (
        f"wandb={text!r} is not a boolean; expected one of "
        "true/false, yes/no, on/off, 1/0"
    )


@pytest.mark.parametrize(
    ("key", "text", "value"),
    [
        ("milestones", "[80, 120]", [80, 120]),
        ("milestones", "80,120", [80, 120]),
        ("milestones", " 80 , 120 ", [80, 120]),
        ("milestones", "80", [80]),
        ("milestones", "[]", []),
        ("milestones", "", []),
        ("wandb_tags", "a,b", ["a", "b"]),
        ("wandb_tags", "[a, b]", ["a", "b"]),
        ("wandb_tags", "[null, ~, 1, true]", ["null", "~", "1", "true"]),
        ("wandb_tags", "null,1", ["null", "1"]),
        ("wandb_tags", "run #2,a: b", ["run #2", "a: b"]),
        ("wandb_tags", "['a,b', c]", ["a,b", "c"]),
    ],
)
def test_list_keys(key, text, value):
    assert parse_value(key, text) == value
    assert getattr(load_config([], {key: parse_value(key, text)}), key) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1", r"^milestones='\[1' is not a list: .*\(column 3\); expected a list"),
        ("[80, x]", r"^milestones='\[80, x\]': item 'x' is not an integer"),
        ("80,1.5", r"^milestones='80,1.5': item '1.5' is not an integer"),
        ("[[80]]", r"^milestones='\[\[80\]\]' is not a list of single values"),
        ("[a: 1]", r"^milestones='\[a: 1\]' is not a list of single values"),
        ("[1] x", r"^milestones='\[1\] x' is not a list: "),
        ("[\x00]", r"^milestones='\[\\x00\]' is not a list: the character #x0000"),
    ],
)
def test_list_keys_refuse_in_one_line(text, message):
    with pytest.raises(ConfigError, match=message) as err:
        parse_value("milestones", text)
    assert "\n" not in str(err.value)


def test_mapping_values_are_yaml():
    """No key is a mapping today; the parser is ready for one."""
    assert _parse("m", "{a: 1, b: [2]}", dict[str, object]) == {"a": 1, "b": [2]}
    assert _parse("m", "", dict[str, int]) == {}
    with pytest.raises(ConfigError, match=r"^m='\{a: 1' is not a mapping: ") as err:
        _parse("m", "{a: 1", dict[str, int])
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"^m='\[1\]' is not a mapping"):
        _parse("m", "[1]", dict[str, int])


def test_unknown_key_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown key 'lrr'"):
        parse_value("lrr", "0.1")


# ----------------------------------------------------------------------
# Names and seeds are checked by the config itself, so in files too.


@pytest.mark.parametrize(
    "name", ["run #2", "a b", "ünïcødé", "x.y", "..x", "-dash", "n" * 255]
)
def test_names_that_are_one_folder(name):
    assert load_config([], {"name": name}).name == name


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("name: ../v\n", "../v"),
        ("name: 'a: b: c'\n", "a: b: c"),
        ("name: ''\n", ""),
        ("name: '..'\n", ".."),
        ('name: "a\\0b"\n', "a\x00b"),
        ('name: "a\\x7fb"\n', "a\x7fb"),
        ('name: "a\\u2028b"\n', "a\u2028b"),
        ("name: /abs\n", "/abs"),
        ("name: a|b\n", "a|b"),
        ("name: a?\n", "a?"),
        ("name: <a>\n", "<a>"),
    ],
)
def test_names_in_files_are_checked(tmp_path, text, name):
    path = tmp_path / "name.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config([path])
    message = str(err.value)
    assert message.startswith(
        f"name={name!r} is not allowed: it must be one folder name; "
    )
    assert "\n" not in message


@pytest.mark.parametrize("key", ["seed", "class_order_seed"])
def test_seeds_fit_numpy(key):
    assert getattr(load_config([], {key: 0}), key) == 0
    assert getattr(load_config([], {key: 2**32 - 1}), key) == 2**32 - 1
    for bad in (-1, 2**32, 10**30):
        with pytest.raises(ConfigError) as err:
            load_config([], {key: bad})
        assert str(err.value) == (
            f"{key}={bad} is not allowed; it must be in [0, 4294967295]"
        )


# ----------------------------------------------------------------------
# Config files are read within bounds, and an error line quotes within
# bounds: no input makes the command read without end or print megabytes.

MIB = 1 << 20
LINE_BOUND = 1000
"""Characters an error line may take, whatever the input quotes."""


def _in_a_subprocess(*args: str) -> subprocess.CompletedProcess:
    """``python args`` with 2 GiB of address space at most, so that reading
    a device without end fails instead of filling the machine's memory."""

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    return subprocess.run(
        [sys.executable, *args],
        env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=900,  # a bound for a command that hangs; a working one: seconds
        preexec_fn=limit_memory,
    )


LOAD = """
import sys
from bdr_avalanche.experiment.config import ConfigError, load_config
try:
    load_config([sys.argv[1]])
except ConfigError as err:
    sys.exit(f"ConfigError: {err}")
"""


@pytest.mark.system
@pytest.mark.skipif(not pathlib.Path("/dev/zero").exists(), reason="needs /dev/zero")
@pytest.mark.parametrize("kind", ["device", "pipe"])
def test_config_that_is_not_a_regular_file_is_refused(tmp_path, kind):
    """A device would be read without end, a pipe without a writer waited
    on: only regular files are read."""
    if kind == "device":
        path = pathlib.Path("/dev/zero")
    else:
        path = tmp_path.resolve() / "pipe.yaml"
        os.mkfifo(path)
    done = _in_a_subprocess("-c", LOAD, str(path))
    assert done.stderr == (
        f"ConfigError: config file {path} is not a regular file (a device, a "
        "pipe or a socket); give a YAML file\n"
    )


@pytest.mark.system
@pytest.mark.skipif(not pathlib.Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_dev_zero_as_config_is_one_line(tmp_path):
    out = tmp_path / "results"
    done = _in_a_subprocess(
        "-m", "bdr_avalanche", "run", "-c", "/dev/zero", "--output_dir", str(out)
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr == (
        "bdr-avalanche: error: config file /dev/zero is not a regular file (a "
        "device, a pipe or a socket); give a YAML file\n"
    )
    assert not out.exists()


def test_config_above_one_mib_is_refused(tmp_path, capsys):
    path = tmp_path / "big.yaml"
    path.write_text("lr: 0.1\n" + "#" * MIB + "\n")
    line = _fails_in_one_line(["run", "-c", str(path)], capsys)
    assert line == (
        f"bdr-avalanche: error: config file {path} is larger than 1 MiB "
        f"({MIB + 9:,} bytes); a config file is a few lines of YAML"
    )


def test_config_of_one_mib_is_read(tmp_path):
    path = tmp_path / "big.yaml"
    text = "lr: 0.25\n"
    path.write_text(text + "#" * (MIB - len(text)))
    assert path.stat().st_size == MIB
    assert load_config([path]).lr == 0.25


@pytest.mark.parametrize("where", ["file", "options"])
def test_many_unknown_keys_are_listed_up_to_ten(tmp_path, capsys, where):
    keys = [f"k{i:05d}" for i in range(10_000)]
    path = tmp_path / "many.yaml"
    path.write_text("".join(f"{key}: 1\n" for key in keys))
    if where == "file":
        with pytest.raises(ConfigError) as err:
            load_config([path])
        suffix = f" in {path}; see --help for the keys"
    else:
        with pytest.raises(ConfigError) as err:
            load_config([], {key: 1 for key in reversed(keys)})
        suffix = "; see --help"
    assert str(err.value) == (
        f"unknown key(s) {', '.join(keys[:10])} and 9,990 more{suffix}"
    )
    line = _fails_in_one_line(["run", "-c", str(path)], capsys)
    assert len(line) < LINE_BOUND, len(line)


def test_a_huge_unknown_key_is_cut(tmp_path, capsys):
    key = "x" * 900_000  # an explicit key: YAML's plain ones end at 1024
    path = tmp_path / "huge.yaml"
    path.write_text(f"? {key}\n: 1\n")
    line = _fails_in_one_line(["run", "-c", str(path)], capsys)
    assert line.startswith("bdr-avalanche: error: unknown key(s) xxxx")
    assert "900,000 characters" in line
    assert line.endswith(f" in {path}; see --help for the keys")
    assert len(line) < LINE_BOUND, len(line)


@pytest.mark.parametrize(
    ("argv", "start"),
    [
        (["--name", "n" * 100_000], "name='nnnn"),
        (["--epochs", "9" * 50_000 + "x"], "epochs='9999"),
        (["--backbone", "b" * 100_000], "backbone='bbbb"),
        (["--milestones", "1," * 50_000 + "x"], "milestones='1,1,"),
    ],
    ids=["name", "int", "choice", "list"],
)
def test_a_huge_value_is_cut_in_the_error_line(argv, start, capsys):
    line = _fails_in_one_line(["run", *argv], capsys)
    assert line.startswith(f"bdr-avalanche: error: {start}")
    assert "characters)" in line
    assert len(line) < LINE_BOUND, len(line)


def test_an_error_line_is_cut_whatever_raises_it(monkeypatch, capsys):
    """The command line's own bound, for messages from any module."""
    from bdr_avalanche.experiment import config

    def huge(*args, **kwargs):
        raise ConfigError("start " + "y" * 100_000 + " end")

    monkeypatch.setattr(config, "load_config", huge)
    line = _fails_in_one_line(["run"], capsys)
    assert line.startswith("bdr-avalanche: error: start yyyy")
    assert line.endswith("yyyy end")
    assert "characters left out" in line
    assert len(line) < LINE_BOUND, len(line)


def test_unrecognised_arguments_are_cut(capsys):
    """argparse's own errors (status 2, after the usage) are bounded too."""
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--" + "z" * 100_000])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("bdr-avalanche: error: unrecognized arguments: --zzz")
    assert len(last) < LINE_BOUND, len(last)
