"""Hyper-parameters are declared once, as fields of the records of
:mod:`bdr_avalanche.params`: the command line's help, the config's checks,
the plugins' docstrings and the checks of the plugins and of LUCIR all
read them, and the help texts say what the code does."""

from __future__ import annotations

import math
import re
from dataclasses import fields

import pytest
from helpers import make_tiny_lucir

from bdr_avalanche import LUCIR
from bdr_avalanche.experiment.cli import build_parser
from bdr_avalanche.experiment.config import ConfigError, ExperimentConfig
from bdr_avalanche.params import (
    KINDS,
    AGEMParams,
    BDRParams,
    BiCParams,
    CwDParams,
    DERParams,
    ERACEParams,
    HParam,
    LUCIRParams,
    LwFParams,
    Params,
    TrainingParams,
    document_hparams,
    hparams_of,
    params,
)
from bdr_avalanche.plugins import BDRPlugin, CwDPlugin, LUCIRPlugin

RECORDS = [TrainingParams, LUCIRParams, CwDParams, BDRParams, LwFParams, BiCParams]
RECORDS += [DERParams, ERACEParams, AGEMParams]
PLUGINS = {LUCIRPlugin: LUCIRParams, CwDPlugin: CwDParams, BDRPlugin: BDRParams}
# LUCIR's argument taking each record
LUCIR_ARGUMENT = {
    TrainingParams: "training",
    LUCIRParams: "lucir",
    CwDParams: "cwd",
    BDRParams: "bdr",
}
# config group (command-line prefix) of each method's record
GROUP = {LUCIRParams: "lucir", CwDParams: "cwd", BDRParams: "bdr"}
# record, field, stated range, a bad value
BAD = [
    (LUCIRParams, "lambda_base", ">= 0", -1.0),
    (LUCIRParams, "margin", ">= 0", -0.5),
    (LUCIRParams, "k", ">= 1", 0),
    (LUCIRParams, "mr_weight", ">= 0", -2.0),
    (CwDParams, "coef", ">= 0", -1.0),
    (CwDParams, "reject_threshold", ">= 1", 0),
    (BDRParams, "m1", "in [0, 1]", 1.5),
    (BDRParams, "m2", "in [0, 1]", -0.1),
    (BDRParams, "momentum", "in [0, 1]", 2.0),
    (BDRParams, "tau", "> 0", 0.0),
    (TrainingParams, "lr", "> 0", 0.0),
    (TrainingParams, "first_lr", "> 0", -1.0),
    (TrainingParams, "momentum", "in [0, 1]", 1.5),
    (TrainingParams, "weight_decay", ">= 0", -1.0),
    (TrainingParams, "milestones", "increasing epochs >= 1", [120, 80]),
    (TrainingParams, "lr_decay", "> 0", 0.0),
    (TrainingParams, "mem_per_class", ">= 1", 0),
    (TrainingParams, "batch_size", ">= 1", 0),
    (TrainingParams, "first_batch_size", ">= 1", 0),
    (TrainingParams, "epochs", ">= 1", 0),
    (TrainingParams, "eval_batch_size", ">= 1", 0),
]
# The texts the issue asked for, as --help must show them.
EXPECTED_HELP = {
    "bdr.m1": "weight of the class-frequency term psi against the inverse-scatter "
    "term omega in the prior measured at the start of an experience",
    "bdr.m2": "weight of the class-frequency term psi against the inverse-scatter "
    "term omega in the per-step estimate of the prior",
    "bdr.momentum": "momentum with which the prior follows its per-step estimate",
    "bdr.tau": "exponent tau of the psi/omega mixture in the prior",
    "cwd.reject_threshold": "classes with at most this many samples in a batch "
    "are skipped",
    "cwd.coef": "weight eta of the CwD term, which is added in the first "
    "experience only",
    "lucir.lambda_base": "base weight of the less-forget term",
}
WRONG_HELP = [
    "prior weight of the old classes",
    "prior weight of the new classes",
    "momentum of the class statistics",
    "fewer samples",
]


def words(text: str) -> str:
    return " ".join(text.split())


def key_of(record: type[Params], name: str) -> str:
    """The config key of a field: flat for the training fields, else dotted."""
    return name if record is TrainingParams else f"{GROUP[record]}.{name}"


def record_fields() -> list[tuple[type[Params], str, HParam]]:
    return [(r, n, hp) for r in RECORDS for n, hp in hparams_of(r).items()]


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
        block = re.split(r"\n\s*\n", block)[0]  # not the epilog
        invocation, help = re.split(r"\s{2,}", block.strip(), maxsplit=1)
        entries.setdefault(invocation.split()[0], words(help))  # not the epilog
    return entries


def make_lucir(**kwargs) -> LUCIR:
    """LUCIR with its own training and evaluator defaults on a tiny CPU
    backbone, with ``kwargs`` overridden."""
    defaults = {"training": None, "evaluator": None}
    return make_tiny_lucir(in_channels=1, width=4, **{**defaults, **kwargs})


@pytest.mark.parametrize(
    ("record", "name", "hp"),
    record_fields(),
    ids=[f"{r.__name__}.{n}" for r, n, _ in record_fields()],
)
def test_every_field_has_help_and_a_default_in_range(record, name, hp):
    assert hp.help and not hp.help.endswith(".")
    assert hp.allows(hp.default)
    assert getattr(record(), name) == hp.check(name, hp.default)
    assert words(hp.help) in words(record.__doc__.split(f":param {name}: ")[1])


@pytest.mark.parametrize("plugin", list(PLUGINS), ids=lambda p: p.__name__)
def test_plugins_take_their_record_and_document_its_fields(plugin):
    """``PARAMS`` is the record; its fields are keyword arguments; the
    docstring has one ``:param`` line per field, with its help text."""
    record = PLUGINS[plugin]
    assert plugin.PARAMS is record
    assert plugin().params == record()
    given = record()
    assert plugin(given).params is given
    for name, hp in hparams_of(record).items():
        assert plugin.__doc__.count(f":param {name}:") == 1
        assert words(hp.help) in words(plugin.__doc__.split(f":param {name}: ")[1])
    with pytest.raises(TypeError, match="not both"):
        plugin(given, **{next(iter(hparams_of(record))): given})
    with pytest.raises(TypeError, match=f"unknown hyper-parameter.*{record.__name__}"):
        plugin(nonsense=1)


def test_lucir_takes_the_records():
    records = {
        "training": TrainingParams(epochs=3, lr=0.05),
        "lucir": LUCIRParams(k=1),
        "cwd": CwDParams(coef=0.1),
        "bdr": BDRParams(m1=0.3),
    }
    strategy = make_lucir(**records)
    assert strategy.training is records["training"]
    assert strategy.train_epochs == 3
    for name in ("lucir", "cwd", "bdr"):
        assert getattr(strategy, name).params is records[name]
    defaults = make_lucir(cwd=True, bdr=True)
    assert defaults.training == TrainingParams()
    assert defaults.cwd.params == CwDParams() and defaults.bdr.params == BDRParams()
    assert make_lucir().cwd is None and make_lucir().bdr is None


@pytest.mark.parametrize(
    ("record", "name", "bound", "bad"),
    BAD,
    ids=[f"{r[0].__name__}.{r[1]}" for r in BAD],
)
def test_out_of_range_values_state_the_range(record, name, bound, bad):
    """The record refuses an out-of-range value, stating the range, when the
    plugin or LUCIR is given it as a field, and the config refuses it too."""
    assert bound in hparams_of(record)[name].bound
    pattern = f"^{name} must be .*{re.escape(bound)}"
    with pytest.raises(ValueError, match=pattern):
        record(**{name: bad})
    plugin = {r: p for p, r in PLUGINS.items()}.get(record)
    if plugin is not None:
        with pytest.raises(ValueError, match=pattern):
            plugin(**{name: bad})
    if record is TrainingParams:
        with pytest.raises(
            ConfigError,
            match=f"^{name}={re.escape(repr(bad))} is not allowed; it must be ",
        ) as err:
            ExperimentConfig(**{name: bad})
        assert str(err.value).endswith(bound)


@pytest.mark.parametrize(
    ("record", "name"),
    [(r, n) for r, n, _ in record_fields() if r in GROUP or r is TrainingParams],
)
def test_help_is_the_record_help(record, name, run_help):
    hp = hparams_of(record)[name]
    assert words(hp.help) in run_help[key_of(record, name)]


@pytest.mark.parametrize("key", sorted(EXPECTED_HELP))
def test_help_says_what_the_code_does(key, run_help):
    assert run_help[key].startswith(EXPECTED_HELP[key]), run_help[key]


def test_no_wrong_help_left(run_help):
    text = " ".join(run_help.values())
    for wrong in WRONG_HELP:
        assert wrong not in text


def test_boundaries_are_accepted_everywhere():
    """The closed ends of the ranges pass the records, plugins and LUCIR."""
    assert BDRPlugin(m1=0, m2=1, momentum=1).params.momentum == 1
    assert CwDPlugin(coef=0, reject_threshold=1).params.coef == 0
    make_lucir(
        training=TrainingParams(milestones=[]),
        bdr=BDRParams(m1=0.0, momentum=1.0),
        cwd=CwDParams(coef=0.0),
    )
    ExperimentConfig(milestones=[])


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
    from bdr_avalanche.params import hparam

    @params
    class ThingParams(Params):
        """Its record."""

        a: float = hparam(0.5, "the a", "fraction")

    @document_hparams
    class Thing:
        """A thing.

        :param other: not a hyper-parameter.
        """

        PARAMS = ThingParams

    lines = Thing.__doc__.splitlines()
    assert lines[2] == ":param a: the a; default 0.5, must be in [0, 1]."
    assert lines[3] == ":param other: not a hyper-parameter."
    assert [f.name for f in fields(ThingParams)] == ["a"]


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
