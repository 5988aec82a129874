"""Hyper-parameters are declared once: the command line's help, the config's
defaults and checks, the strategy's and the plugins' signatures, checks and
docstrings all agree, and the help texts say what the code does."""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import fields

import pytest

from bdr_avalanche import LUCIR
from bdr_avalanche.baselines import make_baseline
from bdr_avalanche.experiment.cli import build_parser
from bdr_avalanche.experiment.config import ConfigError, ExperimentConfig
from bdr_avalanche.hparams import KINDS, HParam, document_hparams
from bdr_avalanche.models import SmallCNN
from bdr_avalanche.plugins import BDRPlugin, CwDPlugin, LUCIRPlugin

# config key, LUCIR's argument, plugin, plugin's argument, stated range, a bad value
PLUGIN_KEYS = [
    ("lambda_base", "lambda_base", LUCIRPlugin, "lambda_base", ">= 0", -1.0),
    ("margin", "margin", LUCIRPlugin, "margin", ">= 0", -0.5),
    ("k", "k", LUCIRPlugin, "k", ">= 1", 0),
    ("mr_weight", "mr_weight", LUCIRPlugin, "mr_weight", ">= 0", -2.0),
    ("cwd_coef", "cwd_coef", CwDPlugin, "coef", ">= 0", -1.0),
    ("reject_threshold", "reject_threshold", CwDPlugin, "reject_threshold", ">= 1", 0),
    ("m1", "m1", BDRPlugin, "m1", "in [0, 1]", 1.5),
    ("m2", "m2", BDRPlugin, "m2", "in [0, 1]", -0.1),
    ("bdr_momentum", "bdr_momentum", BDRPlugin, "momentum", "in [0, 1]", 2.0),
    ("tau", "tau", BDRPlugin, "tau", "> 0", 0.0),
]
# config key, LUCIR's argument, stated range, a bad value
STRATEGY_KEYS = [
    ("lr", "lr", "> 0", 0.0),
    ("first_lr", "first_lr", "> 0", -1.0),
    ("momentum", "momentum", "in [0, 1]", 1.5),
    ("weight_decay", "weight_decay", ">= 0", -1.0),
    ("milestones", "milestones", "increasing epochs >= 1", [120, 80]),
    ("lr_decay", "lr_decay", "> 0", 0.0),
    ("mem_per_class", "mem_per_class", ">= 1", 0),
    ("batch_size", "train_mb_size", ">= 1", 0),
    ("first_batch_size", "first_train_mb_size", ">= 1", 0),
    ("epochs", "train_epochs", ">= 1", 0),
    ("eval_batch_size", "eval_mb_size", ">= 1", 0),
]
# make_baseline shares these with LUCIR
BASELINE_KEYS = {
    "lr",
    "momentum",
    "weight_decay",
    "milestones",
    "lr_decay",
    "mem_per_class",
    "train_mb_size",
    "train_epochs",
    "eval_mb_size",
}
# The texts the issue asked for, as --help must show them.
EXPECTED_HELP = {
    "m1": "BDR: weight of the class-frequency term psi against the inverse-scatter "
    "term omega in the prior measured at the start of an experience",
    "m2": "BDR: weight of the class-frequency term psi against the inverse-scatter "
    "term omega in the per-step estimate of the prior",
    "bdr_momentum": "BDR: momentum with which the prior follows its per-step estimate",
    "tau": "BDR: exponent tau of the psi/omega mixture in the prior",
    "reject_threshold": "CwD: classes with at most this many samples in a batch "
    "are skipped",
    "cwd_coef": "CwD: weight eta of the CwD term, which is added in the first "
    "experience only",
    "lambda_base": "LUCIR: base weight of the less-forget term",
}
WRONG_HELP = [
    "prior weight of the old classes",
    "prior weight of the new classes",
    "momentum of the class statistics",
    "fewer samples",
]


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def run_help() -> dict[str, str]:
    """``bdr-avalanche run --help``, one whitespace-normalised entry per option."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COLUMNS", "1000")  # argparse breaks lines at hyphens
        parser = build_parser()
        (subparsers,) = [a for a in parser._actions if a.dest == "command"]
        text = subparsers.choices["run"].format_help()
    entries = {}
    for block in text.split("\n  --")[1:]:
        # "m1 VALUE   help" or "bdr_momentum VALUE, --bdr-momentum VALUE\n   help"
        invocation, help = re.split(r"\s{2,}", block.strip(), maxsplit=1)
        entries[invocation.split()[0]] = words(help)
    return entries


def make_lucir(**kwargs) -> LUCIR:
    return LUCIR(backbone=SmallCNN(in_channels=1, width=4), device="cpu", **kwargs)


def config_default(key: str):
    (f,) = [f for f in fields(ExperimentConfig) if f.name == key]
    return getattr(ExperimentConfig(), key), f


def test_tables_cover_every_hyper_parameter():
    """Every HParam of LUCIR is a config key in the tables above, and every
    HParam of a plugin is re-exported by LUCIR."""
    strategy_names = {row[1] for row in PLUGIN_KEYS + STRATEGY_KEYS}
    assert strategy_names == set(LUCIR.HPARAMS)
    for plugin in (LUCIRPlugin, CwDPlugin, BDRPlugin):
        exported = {row[3] for row in PLUGIN_KEYS if row[2] is plugin}
        assert exported == set(plugin.HPARAMS), plugin.__name__


def test_each_table_is_defined_once():
    """The classes' HPARAMS are the tables of bdr_avalanche.hparam_tables (a
    module without torch, read by the config), not copies of them."""
    from bdr_avalanche import hparam_tables as tables

    assert LUCIR.HPARAMS is tables.LUCIR_HPARAMS
    assert BDRPlugin.HPARAMS is tables.BDR_HPARAMS
    assert CwDPlugin.HPARAMS is tables.CWD_HPARAMS
    assert LUCIRPlugin.HPARAMS is tables.LUCIR_PLUGIN_HPARAMS
    assert set(tables.STRATEGY_PLUGINS) == {"LUCIRPlugin", "CwDPlugin", "BDRPlugin"}
    for plugin in (LUCIRPlugin, CwDPlugin, BDRPlugin):
        assert tables.STRATEGY_PLUGINS[plugin.__name__].hparams is plugin.HPARAMS


@pytest.mark.parametrize("row", PLUGIN_KEYS, ids=[r[0] for r in PLUGIN_KEYS])
def test_plugin_help_is_the_command_line_help(row, run_help):
    key, ours, plugin, name, _, _ = row
    own = plugin.HPARAMS[name].help
    assert own in run_help[key], key
    assert LUCIR.HPARAMS[ours].help in run_help[key]
    assert words(own) in words(plugin.__doc__.split(f":param {name}: ")[1])
    assert plugin.__doc__.count(f":param {name}:") == 1
    assert words(LUCIR.HPARAMS[ours].help) in words(
        LUCIR.__doc__.split(f":param {ours}: ")[1]
    )


@pytest.mark.parametrize("row", STRATEGY_KEYS, ids=[r[0] for r in STRATEGY_KEYS])
def test_strategy_help_is_the_command_line_help(row, run_help):
    key, ours, _, _ = row
    assert LUCIR.HPARAMS[ours].help in run_help[key], key
    assert LUCIR.__doc__.count(f":param {ours}:") == 1


@pytest.mark.parametrize("key", sorted(EXPECTED_HELP))
def test_help_says_what_the_code_does(key, run_help):
    assert run_help[key].startswith(EXPECTED_HELP[key]), run_help[key]


def test_no_wrong_help_left(run_help):
    text = " ".join(run_help.values())
    for wrong in WRONG_HELP:
        assert wrong not in text


@pytest.mark.parametrize("row", PLUGIN_KEYS, ids=[r[0] for r in PLUGIN_KEYS])
def test_plugin_defaults_agree(row):
    key, ours, plugin, name, _, _ = row
    default = plugin.HPARAMS[name].default
    value, f = config_default(key)
    assert value == default
    assert f.metadata["hparam"].default == default
    assert LUCIR.HPARAMS[ours].default == default
    assert inspect.signature(plugin).parameters[name].default == default
    assert inspect.signature(LUCIR).parameters[ours].default == default
    assert getattr(plugin(), name) == default


@pytest.mark.parametrize("row", STRATEGY_KEYS, ids=[r[0] for r in STRATEGY_KEYS])
def test_strategy_defaults_agree(row):
    key, ours, _, _ = row
    default = LUCIR.HPARAMS[ours].default
    value, _ = config_default(key)
    if isinstance(default, tuple):  # milestones: a list in the config
        default, value = list(default), list(value)
    assert value == default
    signature_default = inspect.signature(LUCIR).parameters[ours].default
    assert signature_default == LUCIR.HPARAMS[ours].default
    if ours in BASELINE_KEYS:
        baseline_default = inspect.signature(make_baseline).parameters[ours].default
        assert baseline_default == LUCIR.HPARAMS[ours].default


@pytest.mark.parametrize("row", PLUGIN_KEYS, ids=[r[0] for r in PLUGIN_KEYS])
def test_plugin_ranges_agree(row):
    """An out-of-range value is refused by the plugin, by the strategy (even
    with the method off) and by the config, each stating the same range."""
    key, ours, plugin, name, bound, bad = row
    assert plugin.HPARAMS[name].bound == LUCIR.HPARAMS[ours].bound == bound
    with pytest.raises(
        ValueError, match=f"^{name} must be .*{re.escape(bound)}"
    ) as err:
        plugin(**{name: bad})
    assert bound in str(err.value)
    with pytest.raises(ValueError, match=f"^{ours} must be .*{re.escape(bound)}"):
        make_lucir(**{ours: bad})
    with pytest.raises(
        ConfigError, match=f"^{key}={re.escape(repr(bad))} is not allowed; it must be "
    ) as err:
        ExperimentConfig(**{key: bad})
    assert str(err.value).endswith(bound)


@pytest.mark.parametrize("row", STRATEGY_KEYS, ids=[r[0] for r in STRATEGY_KEYS])
def test_strategy_ranges_agree(row):
    key, ours, bound, bad = row
    assert bound in LUCIR.HPARAMS[ours].bound
    with pytest.raises(ValueError, match=f"^{ours} must be .*{re.escape(bound)}"):
        make_lucir(**{ours: bad})
    if ours in BASELINE_KEYS:
        with pytest.raises(ValueError, match=f"^{ours} must be .*{re.escape(bound)}"):
            make_baseline(
                "naive", backbone=SmallCNN(3, 8), num_classes=6, **{ours: bad}
            )
    with pytest.raises(
        ConfigError, match=f"^{key}={re.escape(repr(bad))} is not allowed; it must be "
    ) as err:
        ExperimentConfig(**{key: bad})
    assert str(err.value).endswith(bound)


def test_boundaries_are_accepted_everywhere():
    """The closed ends of the ranges pass the plugin, strategy and config."""
    assert BDRPlugin(m1=0, m2=1, momentum=1).momentum == 1
    assert CwDPlugin(coef=0, reject_threshold=1).coef == 0
    make_lucir(m1=0.0, bdr_momentum=1.0, cwd_coef=0.0, milestones=[])
    ExperimentConfig(m1=0.0, bdr_momentum=1.0, cwd_coef=0.0, milestones=[])


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_states_its_range_when_it_refuses(kind):
    bad = {
        "fraction": 1.01,
        "positive": math.inf,
        "non_negative": -1e-9,
        "positive_int": 0,
        "non_negative_int": -1,
        "milestones": [3, 2],
        "seed": 2**32,
    }[kind]
    good = {"milestones": (1, 2)}.get(kind, 1)
    hp = HParam(good, "x", kind)
    assert hp.allows(good) and not hp.allows(bad)
    with pytest.raises(ValueError) as err:
        hp.check("x", bad)
    assert KINDS[kind].bound in str(err.value)


def test_hparam_rejects_a_bad_declaration():
    with pytest.raises(ValueError, match="kind='percent' is not one of"):
        HParam(0.5, "x", "percent")
    with pytest.raises(ValueError, match="must be in"):
        HParam(2.0, "x", "fraction")  # its own default is out of range
    assert HParam(None, "x (default: y)", "positive").allows(None)
    assert not HParam(1.0, "x", "positive").allows(None)


def test_document_hparams_puts_the_params_before_the_others():
    @document_hparams
    class Thing:
        """A thing.

        :param other: not a hyper-parameter.
        """

        HPARAMS = {"a": HParam(0.5, "the a", "fraction")}

    lines = Thing.__doc__.splitlines()
    assert lines[2] == ":param a: the a; default 0.5, must be in [0, 1]."
    assert lines[3] == ":param other: not a hyper-parameter."


@pytest.mark.parametrize(
    ("key", "bad", "bound"),
    [
        ("seed", -1, "in [0, 4294967295]"),
        ("seed", 2**32, "in [0, 4294967295]"),
        ("class_order_seed", -1, "in [0, 4294967295]"),
        ("class_order_seed", 2**32, "in [0, 4294967295]"),
        ("n_base", -1, ">= 0"),
        ("n_phases", 0, ">= 1"),
        ("resolution", 0, ">= 1"),
        ("num_workers", -1, ">= 0"),
        ("width", 0, ">= 1"),
    ],
)
def test_config_only_keys_state_their_range(key, bad, bound, run_help):
    """Keys no strategy owns are checked by the config, with the range that
    --help states."""
    with pytest.raises(
        ConfigError,
        match=f"^{key}={bad} is not allowed; it must be {re.escape(bound)}$",
    ):
        ExperimentConfig(**{key: bad})
    assert f"must be {bound}]" in run_help[key]
