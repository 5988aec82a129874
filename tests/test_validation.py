"""Hyper-parameter checks: bad values raise ValueError naming the parameter."""

from __future__ import annotations

import pytest
from helpers import make_tiny_lucir
from torch import nn

from bdr_avalanche import LUCIR
from bdr_avalanche.params import BDRParams, CwDParams, TrainingParams
from bdr_avalanche.plugins import BDRPlugin, CwDPlugin, LUCIRPlugin
from bdr_avalanche.storage import HerdingBuffer

FRACTION = r"must be in \[0, 1\]"
POSITIVE = r"must be a finite number > 0"
NON_NEGATIVE = r"must be a finite number >= 0"
INT_GE_1 = r"must be an integer >= 1"


def make_lucir(**kwargs) -> LUCIR:
    """LUCIR with its own training and evaluator defaults on a tiny CPU
    backbone, with ``kwargs`` overridden."""
    defaults = {"training": None, "evaluator": None}
    return make_tiny_lucir(in_channels=1, width=4, **{**defaults, **kwargs})


# ---------------------------------------------------------------------------
# Plugins and storage
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"m1": 1.5}, "m1 " + FRACTION),
        ({"m2": -0.1}, "m2 " + FRACTION),
        ({"momentum": 2}, "momentum " + FRACTION),
        ({"tau": 0}, "tau " + POSITIVE),
    ],
    ids=["m1", "m2", "momentum", "tau"],
)
def test_bdr_plugin_rejects(kwargs, match):
    """BDRPlugin rejects out-of-range m1, m2, momentum and tau."""
    with pytest.raises(ValueError, match=match):
        BDRPlugin(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"m1": 0}, {"m1": 1}, {"m2": 0}, {"m2": 1}, {"momentum": 0}, {"momentum": 1}],
    ids=["m1=0", "m1=1", "m2=0", "m2=1", "momentum=0", "momentum=1"],
)
def test_bdr_plugin_accepts_boundaries(kwargs):
    """BDRPlugin accepts the closed ends of the [0, 1] ranges."""
    plugin = BDRPlugin(**kwargs)
    ((name, value),) = kwargs.items()
    assert getattr(plugin.params, name) == value


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"coef": -1}, "coef " + NON_NEGATIVE),
        ({"reject_threshold": 0}, "reject_threshold " + INT_GE_1),
    ],
    ids=["coef", "reject_threshold"],
)
def test_cwd_plugin_rejects(kwargs, match):
    """CwDPlugin rejects a negative coef and a reject_threshold below 1."""
    with pytest.raises(ValueError, match=match):
        CwDPlugin(**kwargs)


def test_cwd_plugin_accepts_zero_coef():
    """CwDPlugin accepts coef = 0 (the term switched off)."""
    assert CwDPlugin(coef=0).params.coef == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lambda_base": -1}, "lambda_base " + NON_NEGATIVE),
        ({"margin": -0.5}, "margin " + NON_NEGATIVE),
        ({"k": 0}, "k " + INT_GE_1),
        ({"mr_weight": -2}, "mr_weight " + NON_NEGATIVE),
    ],
    ids=["lambda_base", "margin", "k", "mr_weight"],
)
def test_lucir_plugin_rejects(kwargs, match):
    """LUCIRPlugin rejects negative weights/margin and k below 1."""
    with pytest.raises(ValueError, match=match):
        LUCIRPlugin(**kwargs)


@pytest.mark.parametrize(
    "mem_per_class", [0, -5, 2.5], ids=["zero", "negative", "float"]
)
def test_herding_buffer_rejects(mem_per_class):
    """HerdingBuffer needs a positive integer mem_per_class."""
    with pytest.raises(ValueError, match="mem_per_class " + INT_GE_1):
        HerdingBuffer(mem_per_class=mem_per_class)


def test_herding_buffer_accepts_one():
    """HerdingBuffer accepts mem_per_class = 1 and starts empty."""
    buffer = HerdingBuffer(mem_per_class=1)
    assert buffer.mem_per_class == 1
    assert buffer.max_size == 0


# ---------------------------------------------------------------------------
# LUCIR strategy
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "kwargs", "match"),
    [
        (TrainingParams, {"lr": 0}, "lr " + POSITIVE),
        (TrainingParams, {"momentum": 1.5}, "momentum " + FRACTION),
        (TrainingParams, {"weight_decay": -1}, "weight_decay " + NON_NEGATIVE),
        (TrainingParams, {"epochs": 0}, "epochs " + INT_GE_1),
        (TrainingParams, {"mem_per_class": 0}, "mem_per_class " + INT_GE_1),
        (TrainingParams, {"first_lr": -1}, "first_lr " + POSITIVE),
        (BDRParams, {"m1": 2}, "m1 " + FRACTION),
        (CwDParams, {"coef": -1}, "coef " + NON_NEGATIVE),
    ],
    ids=[
        "lr",
        "momentum",
        "weight_decay",
        "epochs",
        "mem_per_class",
        "first_lr",
        "m1",
        "coef",
    ],
)
def test_lucir_records_reject(record, kwargs, match):
    """The records LUCIR takes reject every out-of-range hyper-parameter,
    naming it, before a strategy is built."""
    with pytest.raises(ValueError, match=match):
        make_lucir(**{_ARGUMENT[record]: record(**kwargs)})


_ARGUMENT = {TrainingParams: "training", BDRParams: "bdr", CwDParams: "cwd"}


def test_lucir_warns_when_it_cannot_remove_the_last_relu():
    """A backbone whose last ReLU LUCIR cannot locate is kept, with a warning
    that names ``last_relu``."""

    class Backbone(nn.Module):
        out_dim = 8

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 8)

        def forward(self, x):
            return self.fc(x.flatten(1)).relu()

    with pytest.warns(UserWarning, match="last_relu"):
        LUCIR(backbone=Backbone(), device="cpu")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"training": TrainingParams(momentum=0)},
        {"bdr": BDRParams(m1=0)},
        {"bdr": BDRParams(m1=1)},
    ],
    ids=["momentum=0", "m1=0", "m1=1"],
)
def test_lucir_accepts_boundaries(kwargs):
    """LUCIR accepts the closed ends of its [0, 1] ranges and drops the last ReLU."""
    strategy = make_lucir(**kwargs)
    assert strategy.model.backbone.last_relu is False
    if "training" in kwargs:
        assert strategy.training.momentum == 0.0
        assert strategy.optimizer.param_groups[0]["momentum"] == 0.0
    else:
        assert strategy.bdr.params.m1 == kwargs["bdr"].m1
