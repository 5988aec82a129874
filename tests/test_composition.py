"""Composed methods (``replay+bdr``): their names, the compatibility
matrix's refusals before anything trains, the family each base builds,
and the first experience that a base and its compositions share."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
import torch
from helpers import TINY_RUN

from bdr_avalanche.experiment.cli import main
from bdr_avalanche.experiment.composition import FAMILY, check_method, family
from bdr_avalanche.experiment.config import ConfigError, ExperimentConfig
from bdr_avalanche.experiment.factories import build_backbone, build_strategy
from bdr_avalanche.experiment.first_epochs import NOT_SHARED
from bdr_avalanche.experiment.runner import run_experiment
from bdr_avalanche.methods import BASES, PLUGINS, Method, MethodError, parse_method
from bdr_avalanche.plugins.compat import COMPATIBILITY, Family, identify
from bdr_avalanche.protocol import make_evaluator


# -- names ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "base", "plugins"),
    [
        ("replay", "replay", ()),
        ("replay+bdr", "replay", ("bdr",)),
        ("bdr+replay", "replay", ("bdr",)),
        ("der+bdr+cwd", "der", ("cwd", "bdr")),
        ("bdr + cwd + der", "der", ("cwd", "bdr")),
        ("lucir", "lucir", ()),
        ("lucir_cwd", "lucir", ("cwd",)),
        ("lucir_cwd_bdr", "lucir", ("cwd", "bdr")),
        ("bdr+lucir+cwd", "lucir", ("cwd", "bdr")),
        ("replay+lucir", "replay", ("lucir",)),
        ("lucir+er_ace", "er_ace", ("lucir",)),
    ],
)
def test_a_method_is_a_base_and_plugins_in_any_order(text, base, plugins):
    method = parse_method(text)
    assert (method.base, method.plugins) == (base, plugins)
    assert method.name == "+".join((base, *plugins))
    assert ExperimentConfig(method=text).method == text  # kept as given


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bdr", "has no base"),
        ("cwd+bdr", "has no base"),
        ("replay+der", "two bases (replay, der)"),
        ("replay+bdr+bdr", "adds 'bdr' twice"),
        ("lucir+lucir", "LUCIR's losses built in"),
        ("replay+herding", "unknown part 'herding'"),
        ("replay+", "unknown part ''"),
    ],
)
def test_a_name_that_does_not_parse_is_one_line(text, message):
    with pytest.raises(MethodError, match=re.escape(message)):
        parse_method(text)
    with pytest.raises(ConfigError) as err:
        ExperimentConfig(method=text)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert "replay+bdr" in str(err.value) or "twice" in message or "built" in message


# -- the compatibility matrix, every cell in both orders ---------------------
CELLS = [(b, p) for b in BASES for p in PLUGINS if (b, p) != ("lucir", "lucir")]


@pytest.mark.parametrize(("base", "plugin"), CELLS)
def test_every_cell_of_the_matrix_in_both_orders(base, plugin):
    support = COMPATIBILITY[FAMILY[base]][PLUGINS[plugin]]
    allowed = support.works
    for text in (f"{base}+{plugin}", f"{plugin}+{base}"):
        cfg = ExperimentConfig(method=text)
        if allowed:
            assert check_method(cfg) == Method(base, (plugin,))
            continue
        with pytest.raises(ConfigError) as err:
            check_method(cfg)
        message = str(err.value)
        assert "\n" not in message and repr(text) in message
        assert support.note in message


def test_der_with_beta_0_is_plain_der_and_refuses_bdr():
    cfg = ExperimentConfig(method="der+bdr", der={"beta": 0.0})
    assert family(cfg) is Family.DER
    with pytest.raises(ConfigError, match="use DER\\+\\+"):
        check_method(cfg)
    assert check_method(ExperimentConfig(method="der+bdr")).base == "der"


def test_every_plugin_combination_of_the_lucir_base_is_allowed():
    for n in range(3):
        for plugins in itertools.permutations(("cwd", "bdr"), n):
            text = "+".join(("lucir", *plugins))
            assert check_method(ExperimentConfig(method=text)).ours


@pytest.mark.parametrize("base", BASES)
def test_each_base_builds_the_family_it_is_checked_as(base):
    cfg = ExperimentConfig(**TINY_RUN, method=base).resolved()
    evaluator = make_evaluator([], [])
    strategy = build_strategy(
        cfg, build_backbone(cfg), 10, torch.device("cpu"), evaluator
    )
    assert identify(strategy) is FAMILY[base] is family(cfg)


def test_a_refused_composition_stops_the_command_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["run", "--method", "lwf+bdr", "--output_dir", str(tmp_path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bdr-avalanche: error: method 'lwf+bdr': BDRPlugin")
    assert "\n" not in err and "LwF keeps no memory" in err
    assert not any(tmp_path.iterdir())  # nothing written


# -- one first experience for a base and its compositions ---------------------
def _run(out: Path, name: str, method: str, **overrides) -> dict:
    cfg = ExperimentConfig(
        **{**TINY_RUN, "epochs": 1, "n_phases": 1},
        method=method,
        output_dir=str(out),
        name=name,
        **overrides,
    )
    return run_experiment(cfg)


def _weights(out: Path, name: str) -> dict[str, torch.Tensor]:
    return torch.load(out / name / "models" / "exp_01.pt", weights_only=True)


@pytest.mark.integration
@pytest.mark.parametrize("base", [b for b in BASES if b != "lucir"])
def test_a_baseline_and_its_bdr_version_train_the_first_experience_once(tmp_path, base):
    """``base`` stores its first experience's epochs; the method with BDR
    (where BDR applies; else ``base`` again) reuses them and ends as the
    same method trained without the cache: the same accuracy matrix and
    weights, to the bit."""
    bdr = COMPATIBILITY[FAMILY[base]]["BDRPlugin"].works
    method = f"{base}+bdr" if bdr else base
    alone = _run(tmp_path, "alone", method, reuse_base=False)
    stored = _run(tmp_path, "stored", base)
    reused = _run(tmp_path, "reused", method)
    if base in NOT_SHARED:  # trained every time
        assert stored["base_model"] == reused["base_model"] == alone["base_model"]
        assert reused["accuracy_matrix"] == alone["accuracy_matrix"]
        return
    assert alone["base_model"] == {"reused": False, "cache": None}
    assert stored["base_model"]["reused"] is False
    assert reused["base_model"]["reused"] is True
    assert reused["base_model"]["cache"] == stored["base_model"]["cache"]
    assert reused["accuracy_matrix"] == alone["accuracy_matrix"]
    assert reused["accuracy_matrix"][0] == stored["accuracy_matrix"][0]
    assert reused["memory_gradient_share"] == alone["memory_gradient_share"]
    a, b = _weights(tmp_path, "alone"), _weights(tmp_path, "reused")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    saved = json.loads((tmp_path / "reused" / "results.json").read_text())
    assert saved["base_model"]["stored_time_s"] > 0


@pytest.mark.integration
def test_cwd_and_a_baselines_own_settings_train_their_own_first_experience(
    tmp_path,
):
    first = _run(tmp_path, "der", "der")["base_model"]["cache"]
    for name, method, overrides in [
        ("cwd", "der+cwd", {}),
        ("alpha", "der", {"der": {"alpha": 0.3}}),
        ("replay", "replay", {}),
    ]:
        record = _run(tmp_path, name, method, **overrides)["base_model"]
        assert record["reused"] is False and record["cache"] != first, name


@pytest.mark.integration
@pytest.mark.parametrize("base", ["replay", "er_ace"])
def test_lucirs_plugin_gives_a_baseline_a_cosine_head(tmp_path, base):
    """``base+lucir+bdr`` trains a cosine head (its first experience is
    its own, not ``base``'s) with LUCIR's losses and BDR."""
    plain = _run(tmp_path, "plain", base)["base_model"]
    lucir = _run(tmp_path, "lucir", f"{base}+lucir+bdr")
    assert lucir["base_model"]["cache"] != plain["cache"]
    assert len(lucir["accuracy_matrix"]) == 2
    weights = _weights(tmp_path, "lucir")
    assert "classifier.sigma" in weights
    assert "classifier.sigma" not in _weights(tmp_path, "plain")
