"""BDR, CwD and LUCIR in every Avalanche strategy of the compatibility table.

For every (strategy family, plugin) of
:data:`bdr_avalanche.plugins.compat.COMPATIBILITY` (the table of
``docs/plugins.md``) one test builds the strategy on a tiny model and
stream and checks what the table says:

- **refused**: ``strategy.train`` raises
  :class:`~bdr_avalanche.plugins.compat.IncompatibleStrategyError`, naming
  the strategy and the table's reason, with zero training iterations done.
- **works**, by plugin, checked against what the test itself knows of the
  strategy's step (which inputs each forward pass saw, which loss it
  computes), not against the plugin's adapters:

  - BDR, over the second experience: the phase-start counts are the
    labels of each class that enter the loss in the epoch, recorded step
    by step (both of ER-ACE's forward passes; every memory here is drawn
    in whole passes, so the expected counts are exactly the recorded
    ones); every step's statistics are the blend of the previous ones with
    features recomputed from that step's own inputs and labels; every class
    in a loss has a finite prior, not the empty-class one; the strategy's
    loss equals its formula with the prior added to the logits, and differs
    from the formula without it.
  - CwD, in the first experience: the loss is the strategy's criterion
    plus ``coef`` times the CwD term of the step's features and labels.
  - LUCIR, in the second experience: the less-forget and margin-ranking
    terms are those of all the samples of the step (both of ER-ACE's
    passes), and the loss is the strategy's own plus these terms.

Tiny models (an MLP with 16 features), 2 experiences of 2 classes x 30
samples, 1 epoch, batches of 10, memories of 10 to 20 samples.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from avalanche.models import SimpleMLP
from avalanche.training import ACECriterion
from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin
from avalanche.training.supervised import (
    AGEM,
    DER,
    ER_ACE,
    EWC,
    BiC,
    GDumb,
    ICaRL,
    LwF,
    Naive,
    Replay,
)
from helpers import make_benchmark
from probe import Probe as Checks
from torch import Tensor, nn

from bdr_avalanche import LUCIR, BDRPlugin, ConcatReplayPlugin, CwDPlugin, LUCIRPlugin
from bdr_avalanche.functional import (
    PRIOR_EPS,
    bdr_log_prior,
    class_wise_decorrelation_loss,
    less_forget_loss,
    margin_ranking_loss,
    update_class_statistics,
)
from bdr_avalanche.models import CosineIncrementalNet
from bdr_avalanche.params import BDRParams, LUCIRParams, TrainingParams
from bdr_avalanche.plugins.compat import (
    COMPATIBILITY,
    PLUGINS,
    Family,
    IncompatibleStrategyError,
    markdown_table,
)
from bdr_avalanche.storage import HerdingBuffer

BATCH = 10
MARGIN = 1.5  # a margin that the tiny stream's old samples do not all clear


class TinyBackbone(nn.Module):
    """Flatten + linear (+ ReLU unless LUCIR removes it): 16 features."""

    out_dim = 16

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * 8 * 8, self.out_dim)
        self.last_relu = True

    def forward(self, x: Tensor) -> Tensor:
        h = self.linear(x.flatten(1))
        return F.relu(h) if self.last_relu else h


def mlp() -> SimpleMLP:
    return SimpleMLP(num_classes=6, input_size=3 * 8 * 8, hidden_size=16, drop_rate=0)


def features_of(model: nn.Module, x: Tensor) -> Tensor:
    """The feature vector, computed by the test from the inputs."""
    if hasattr(model, "backbone"):
        return model.backbone(x)
    if hasattr(model, "feature_extractor"):
        return model.feature_extractor(x)
    return model.features(x.flatten(1))


def passes(strategy) -> list[tuple[str, Tensor, Tensor, Tensor]]:
    """``(source, inputs, labels, outputs)`` of each forward pass of the
    current step, as the strategy's code runs them."""
    out = [("data", strategy.mb_x, strategy.mb_y, strategy.mb_output)]
    if isinstance(strategy, ER_ACE) and strategy.replay_loader is not None:
        out.append(
            (
                "buffer",
                strategy.mb_buffer_x,
                strategy.mb_buffer_y,
                strategy.mb_buffer_out,
            )
        )
    return out


def strategy_loss(strategy, offset: Tensor | float) -> Tensor:
    """The strategy's classification loss, written from its code, with
    ``offset`` added to the logits of its cross-entropies."""
    z, y = strategy.mb_output, strategy.mb_y
    if isinstance(strategy, ER_ACE) and strategy.replay_loader is not None:
        zb, yb = strategy.mb_buffer_out, strategy.mb_buffer_y
        return ACECriterion()(z + offset, y, zb + offset, yb)
    if isinstance(strategy, DER) and strategy.replay_loader is not None:
        m = strategy.batch_size_mem
        return (
            F.cross_entropy(z[m:] + offset, y[m:])
            + strategy.alpha * F.mse_loss(z[:m], strategy.batch_logits)
            + strategy.beta * F.cross_entropy(z[:m] + offset, y[:m])
        )
    return F.cross_entropy(z + offset, y)


class Stop(Exception):
    """Ends a run once the checks have what they need."""


# -- the strategies ---------------------------------------------------------


def _common(checks: Checks, plugin: SupervisedPlugin | None) -> dict:
    return {
        "train_mb_size": BATCH,
        "train_epochs": 1,
        "eval_mb_size": 60,
        "device": "cpu",
        "plugins": [p for p in (plugin, checks) if p is not None],
        "evaluator": EvaluationPlugin(loggers=[]),
    }


def _sgd(model: nn.Module) -> dict:
    return {
        "model": model,
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.05),
        "criterion": nn.CrossEntropyLoss(),
    }


def _model_for(name: str) -> tuple[nn.Module, str]:
    """A model with a cosine head for LUCIRPlugin, else the MLP."""
    if name == "LUCIRPlugin":
        return CosineIncrementalNet(TinyBackbone()), "backbone"
    return mlp(), "features"


def _plugin(name: str, layer: str, **kwargs) -> SupervisedPlugin:
    if name == "BDRPlugin":
        return BDRPlugin(feature_layer=layer, momentum=0.5, **kwargs)
    if name == "CwDPlugin":
        return CwDPlugin(feature_layer=layer, **kwargs)
    return LUCIRPlugin(feature_layer=layer, margin=MARGIN, **kwargs)


def build(family: Family, name: str, checks: Checks):
    """The strategy of ``family`` with the plugin ``name``; returns both."""
    if family is Family.LUCIR:
        strategy = LUCIR(
            backbone=TinyBackbone(),
            training=TrainingParams(
                batch_size=BATCH, epochs=1, eval_batch_size=60, mem_per_class=5
            ),
            lucir=LUCIRParams(margin=MARGIN),
            cwd=name == "CwDPlugin",
            bdr=BDRParams(momentum=0.5) if name == "BDRPlugin" else False,
            device="cpu",
            plugins=[checks],
            evaluator=EvaluationPlugin(loggers=[]),
        )
        plugin = {"BDRPlugin": "bdr", "CwDPlugin": "cwd", "LUCIRPlugin": "lucir"}
        return strategy, getattr(strategy, plugin[name])
    if family is Family.ICARL:
        extractor, classifier = TinyBackbone(), nn.Linear(16, 6)
        plugin = _plugin(name, "feature_extractor")
        params = [*extractor.parameters(), *classifier.parameters()]
        strategy = ICaRL(
            feature_extractor=extractor,
            classifier=classifier,
            optimizer=torch.optim.SGD(params, lr=0.05),
            memory_size=20,
            buffer_transform=None,
            fixed_memory=True,
            **_common(checks, plugin),
        )
        return strategy, plugin
    model, layer = _model_for(name)
    plugin = _plugin(name, layer)
    args = {**_sgd(model), **_common(checks, plugin)}
    if family is Family.NAIVE_CONCAT:
        memory = HerdingBuffer(mem_per_class=5, feature_layer=layer)
        args["plugins"].insert(0, ConcatReplayPlugin(memory))
        return Naive(**args), plugin
    if family is Family.NAIVE_REPLAY:
        memory = HerdingBuffer(mem_per_class=5, feature_layer=layer)
        replay = ReplayPlugin(mem_size=memory.max_size, storage_policy=memory)
        args["plugins"].insert(0, replay)
        return Naive(**args), plugin
    strategies = {
        # the strategy's own plugin comes after the user's plugins
        Family.REPLAY: lambda: Replay(mem_size=20, **args),
        Family.GDUMB: lambda: GDumb(mem_size=20, **args),
        Family.AGEM: lambda: AGEM(patterns_per_exp=10, sample_size=10, **args),
        # buffers of 20 in batches of 10: 6 steps draw 3 whole passes
        Family.ER_ACE: lambda: ER_ACE(mem_size=20, batch_size_mem=10, **args),
        Family.DER_PP: lambda: DER(mem_size=20, batch_size_mem=10, beta=0.5, **args),
        Family.DER: lambda: DER(mem_size=20, batch_size_mem=10, beta=0.0, **args),
        Family.BIC: lambda: BiC(mem_size=20, stage_2_epochs=1, **args),
        Family.NAIVE: lambda: Naive(**args),
        Family.LWF: lambda: LwF(alpha=1.0, temperature=2.0, **args),
        Family.OTHER: lambda: EWC(ewc_lambda=1.0, **args),
    }
    return strategies[family](), plugin


CASES = [(family, name) for family in COMPATIBILITY for name in PLUGINS]


def _id(case) -> str:
    family, name = case
    return f"{family.name}-{name}"


@pytest.fixture
def stream():
    torch.manual_seed(0)
    return make_benchmark(num_classes=4).train_stream


def _train(strategy, experience) -> None:
    try:
        strategy.train(experience)
    except Stop:
        pass


# -- the checks, by plugin --------------------------------------------------


def check_refused(family: Family, name: str, stream) -> None:
    strategy, _ = build(family, name, Checks())
    note = COMPATIBILITY[family][name].note
    with pytest.raises(IncompatibleStrategyError) as error:
        strategy.train(stream[0])
    message = str(error.value)
    assert message.startswith(f"{name} does not apply to {type(strategy).__name__}")
    assert family.value in message and note in message
    assert strategy.clock.train_iterations == 0


def check_bdr(family: Family, stream) -> None:
    state: dict = {"labels": [], "steps": 0, "classes_in_loss": set()}
    empty = math.log(PRIOR_EPS)

    def at_start(strategy):  # the first epoch (the only one)
        if strategy.clock.train_exp_counter == 1:
            state["counts"] = plugin.phase_counts.clone()

    def before_forward(strategy):
        if plugin.prior is not None:
            state["previous"] = [
                t.clone() for t in (plugin.centres, plugin.scatters, plugin.prior)
            ]

    def after_forward(strategy):
        if plugin.prior is None:
            return
        steps = passes(strategy)
        for _, _, y, _ in steps:
            state["labels"] += y.tolist()
        x = torch.cat([p[1] for p in steps])
        y = torch.cat([p[2] for p in steps])
        with torch.no_grad():
            f = features_of(strategy.model, x)
        centres, scatters, prior = state["previous"]
        centres, scatters = update_class_statistics(
            state["counts"], centres, scatters, f, y
        )
        estimate = bdr_log_prior(
            state["counts"], scatters, plugin.params.m2, plugin.params.tau
        )
        torch.testing.assert_close(plugin.centres, centres)
        torch.testing.assert_close(plugin.scatters, scatters)
        torch.testing.assert_close(plugin.prior, torch.lerp(estimate, prior, 0.5))
        in_loss = plugin.prior[y]
        assert torch.isfinite(in_loss).all() and (in_loss > empty + 1).all()
        state["classes_in_loss"].update(y.tolist())

    def before_backward(strategy):
        if plugin.prior is None:
            return
        offset = plugin.logit_adjustment(strategy.mb_output.shape[1])
        loss = strategy.loss.sum()
        if family is Family.LUCIR:  # its own plugins came first
            loss = loss - sum(strategy.lucir.last_losses.values())
        with_prior = strategy_loss(strategy, offset)
        torch.testing.assert_close(loss, with_prior)
        assert abs(with_prior - strategy_loss(strategy, 0.0)) > 1e-3
        state["steps"] += 1

    def at_epoch_end(strategy):
        if strategy.clock.train_exp_counter == 1:
            raise Stop  # before BiC's bias stage, which fails on current torch

    checks = Checks(
        before_training_epoch=at_start,
        before_forward=before_forward,
        after_forward=after_forward,
        before_backward=before_backward,
        after_training_epoch=at_epoch_end,
    )
    strategy, plugin = build(family, "BDRPlugin", checks)
    _train(strategy, stream[0])
    _train(strategy, stream[1])

    assert state["steps"] >= 2  # GDumb: its 20 exemplars, 2 batches
    in_loss = torch.zeros_like(state["counts"])
    for label in state["labels"]:
        in_loss[label] += 1
    torch.testing.assert_close(state["counts"], in_loss)
    assert state["classes_in_loss"] == {0, 1, 2, 3}  # memory and new data


def check_cwd(family: Family, stream) -> None:
    state = {"steps": 0}

    def before_backward(strategy):
        base = strategy._criterion(strategy.mb_output, strategy.mb_y)
        with torch.no_grad():
            f = features_of(strategy.model, strategy.mb_x)
        term = plugin.params.coef * class_wise_decorrelation_loss(
            f, strategy.mb_y, plugin.params.reject_threshold
        )
        assert term > 1e-4
        torch.testing.assert_close(plugin.last_loss, term)
        torch.testing.assert_close(strategy.loss.sum(), base + term)
        state["steps"] += 1
        if state["steps"] == 2:
            raise Stop

    strategy, plugin = build(
        family, "CwDPlugin", Checks(before_backward=before_backward)
    )
    _train(strategy, stream[0])
    assert state["steps"] == 2 and plugin.active


def check_lucir(family: Family, stream) -> None:
    state = {"steps": 0, "ranked": 0.0}

    def before_backward(strategy):
        if plugin.old_model is None:
            return
        steps = passes(strategy)
        x = torch.cat([p[1] for p in steps])
        y = torch.cat([p[2] for p in steps])
        z = torch.cat([p[3] for p in steps])
        with torch.no_grad():
            f_old = plugin.old_model.backbone(x)
        f = strategy.model.backbone(x)
        head = strategy.model.head
        lf = plugin.lambda_ * less_forget_loss(f, f_old)
        mr = plugin.params.mr_weight * margin_ranking_loss(
            z / head.sigma,
            y,
            plugin.num_old_classes,
            plugin.params.margin,
            plugin.params.k,
        )
        torch.testing.assert_close(plugin.last_losses["less_forget"], lf.detach())
        torch.testing.assert_close(plugin.last_losses["margin_ranking"], mr.detach())
        torch.testing.assert_close(
            strategy.loss.sum(), strategy_loss(strategy, 0.0) + lf + mr
        )
        state["ranked"] += float(mr.detach())
        state["steps"] += 1
        if state["steps"] == 2:
            raise Stop

    strategy, plugin = build(
        family, "LUCIRPlugin", Checks(before_backward=before_backward)
    )
    _train(strategy, stream[0])
    _train(strategy, stream[1])
    assert state["steps"] == 2
    assert state["ranked"] > 0  # old-class samples of the memory were ranked


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_matrix(case, stream):
    family, name = case
    if not COMPATIBILITY[family][name].works:
        check_refused(family, name, stream)
    elif name == "BDRPlugin":
        check_bdr(family, stream)
    elif name == "CwDPlugin":
        check_cwd(family, stream)
    else:
        check_lucir(family, stream)


# -- the table and the other errors before training ---------------------------


def test_every_family_and_plugin_is_in_the_table():
    assert set(COMPATIBILITY) == set(Family)
    assert all(set(row) == set(PLUGINS) for row in COMPATIBILITY.values())


def test_plugin_guide_shows_the_table():
    guide = (Path(__file__).parents[1] / "docs" / "plugins.md").read_text()
    assert markdown_table() in guide


def _raises_before_training(strategy, experience, error, match) -> None:
    with pytest.raises(error, match=match):
        strategy.train(experience)
    assert strategy.clock.train_iterations == 0


@pytest.mark.parametrize("name", ["BDRPlugin", "CwDPlugin"])
def test_missing_feature_layer(name, stream):
    """SimpleMLP has no ``backbone`` (the default feature_layer)."""
    plugin = BDRPlugin() if name == "BDRPlugin" else CwDPlugin()
    model = mlp()
    strategy = Replay(mem_size=20, **_sgd(model), **_common(Checks(), plugin))
    _raises_before_training(
        strategy, stream[0], ValueError, rf"{name}: feature_layer 'backbone'.*features"
    )


def test_lucir_needs_a_cosine_head(stream):
    model = mlp()
    plugin = LUCIRPlugin(feature_layer="features", head_layer="classifier")
    strategy = Replay(mem_size=20, **_sgd(model), **_common(Checks(), plugin))
    _raises_before_training(strategy, stream[0], TypeError, "cosine head with `sigma`")


def test_lucir_k_larger_than_a_later_experience(stream):
    plugin = LUCIRPlugin(k=3)
    model = CosineIncrementalNet(TinyBackbone())
    memory = HerdingBuffer(mem_per_class=5)
    plugins = [ConcatReplayPlugin(memory), plugin]
    strategy = Naive(**_sgd(model), **{**_common(Checks(), None), "plugins": plugins})
    _raises_before_training(
        strategy, stream[0], ValueError, r"k must be in \[1, 2\].*experience 1"
    )


def test_lucir_class_ids_out_of_arrival_order():
    """A stream whose second experience skips ids 2 and 3 is refused at the
    start of the first."""
    torch.manual_seed(0)
    stream = make_benchmark(num_classes=6).train_stream
    stream = stream[[0, 2]]
    model = CosineIncrementalNet(TinyBackbone())
    plugins = [ConcatReplayPlugin(HerdingBuffer(mem_per_class=5)), LUCIRPlugin()]
    strategy = Naive(**_sgd(model), **{**_common(Checks(), None), "plugins": plugins})
    _raises_before_training(
        strategy, stream[0], ValueError, r"order of arrival.*brings \[4, 5\] after 2"
    )
