"""Avalanche baselines: end to end runs, memory budget, schedule, fixes,
and the registry whose hyper-parameter tables drive validation."""

from __future__ import annotations

import inspect
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from avalanche.models import NCMClassifier
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.losses import ICaRLLossPlugin
from avalanche.training.plugins import (
    AGEMPlugin,
    BiCPlugin,
    LwFPlugin,
    SupervisedPlugin,
)
from avalanche.training.storage_policy import ClassBalancedBuffer
from avalanche.training.supervised.icarl import _ICaRLPlugin
from helpers import make_benchmark

from bdr_avalanche.baselines import (
    BASELINES,
    DEFAULT_HPARAMS,
    MEMORY_MATCHING,
    GrowingMemoryBudget,
    exemplars_per_class,
    make_baseline,
    registry,
)
from bdr_avalanche.baselines.fixes import (
    _AGEMPlugin,
    _BiCPlugin,
    _EvalMaskedClassifier,
    _SeenClassesNCM,
)
from bdr_avalanche.baselines.registry import REGISTRY
from bdr_avalanche.models import SmallCNN
from bdr_avalanche.params import DERParams, LwFParams, TrainingParams
from bdr_avalanche.protocol import make_evaluator, train_and_evaluate

MEM = 5  # per class, with 30 training samples per class
LR, DECAY = 0.1, 0.1
MEMORY_BASELINES = ("replay", "icarl", "bic", "gdumb", "der", "er_ace", "agem")


class Recorder(SupervisedPlugin):
    """What each baseline does, recorded while it trains and evaluates."""

    def __init__(self, test_x: torch.Tensor) -> None:
        super().__init__()
        self.test_x = test_x
        self.lrs: list[list[float]] = []
        self.optimizer_state: list[int] = []
        self.teacher_training: list[bool] = []
        self.memory: list[dict[int, int]] = []
        self.predicted: list[set[int]] = []
        self.replaying: list[bool] = []
        self.adapting_memory: list[dict[int, int]] = []
        self.training_memory: list[dict[int, int]] = []
        self.agem_cosines: list[float] = []

    def before_train_dataset_adaptation(self, strategy, **kwargs):
        self.adapting_memory.append(exemplars_per_class(strategy))

    def before_training_exp(self, strategy, **kwargs):
        self.lrs.append([])

    def before_training_epoch(self, strategy, **kwargs):
        if not self.lrs[-1]:
            self.optimizer_state.append(len(strategy.optimizer.state))
            self.replaying.append(getattr(strategy, "replay_loader", None) is not None)
            self.training_memory.append(exemplars_per_class(strategy))
        self.lrs[-1].append(strategy.optimizer.param_groups[0]["lr"])

    def after_backward(self, strategy, **kwargs):
        # after A-GEM's projection (the caller's plugins run after the
        # baseline's): the step's gradient against the reference gradient
        agem = [p for p in strategy.plugins if isinstance(p, AGEMPlugin)]
        if agem and agem[0].buffers:
            grad = torch.cat(
                [
                    torch.zeros(p.numel()) if p.grad is None else p.grad.flatten()
                    for p in strategy.model.parameters()
                ]
            )
            ref = agem[0].reference_gradients
            self.agem_cosines.append(F.cosine_similarity(grad, ref, dim=0).item())

    def after_training_iteration(self, strategy, **kwargs):
        for plugin in strategy.plugins:
            if isinstance(plugin, LwFPlugin) and plugin.lwf.prev_model is not None:
                self.teacher_training.append(plugin.lwf.prev_model.training)
            if isinstance(plugin, ICaRLLossPlugin) and plugin.old_model is not None:
                old = plugin.old_model
                self.teacher_training.append(old.feature_extractor.training)
                assert old.training  # must answer with its training classifier

    def after_eval(self, strategy, **kwargs):
        self.memory.append(exemplars_per_class(strategy))
        model = strategy.model
        was_training = model.training
        model.eval()
        with torch.no_grad():
            preds = model(self.test_x.to(strategy.device)).argmax(1)
        model.train(was_training)
        self.predicted.append(set(preds.tolist()))


def _build(name: str, plugins=(), **kwargs):
    hparams = {"stage_2_epochs": 20} if name == "bic" else None
    return make_baseline(
        name,
        backbone=SmallCNN(in_channels=3, width=8),
        num_classes=6,
        training=TrainingParams(
            mem_per_class=MEM,
            lr=LR,
            milestones=[1],
            lr_decay=DECAY,
            batch_size=10,
            epochs=2,
            eval_batch_size=64,
        ),
        device="cpu",
        evaluator=make_evaluator(),
        plugins=plugins,
        hparams=hparams,
        **kwargs,
    )


_RUNS: dict[str, tuple] = {}


def run(name: str):
    """(strategy, results, recorder) of one 3-experience run, cached."""
    if name not in _RUNS:
        RNGManager.set_random_seeds(0)
        benchmark = make_benchmark()
        test_x = torch.stack(
            [x for exp in benchmark.test_stream for x, *_ in exp.dataset.eval()]
        )
        recorder = Recorder(test_x)
        strategy = _build(name, plugins=[recorder])
        results = train_and_evaluate(strategy, benchmark)
        _RUNS[name] = (strategy, results, recorder)
    return _RUNS[name]


@pytest.mark.parametrize("name", BASELINES)
def test_runs_end_to_end(name):
    _, results, _ = run(name)
    a = results.accuracy_matrix
    assert a.shape == (3, 3)
    assert np.isfinite(a[np.tril_indices(3)]).all()
    assert np.isnan(a[np.triu_indices(3, k=1)]).all()
    assert all(0.0 <= v <= 1.0 for v in results.seen_accuracy)
    assert math.isfinite(results.average_incremental_accuracy)


@pytest.mark.parametrize("name", BASELINES)
def test_prediction_only_among_seen_classes(name):
    # After experience t the model is called directly on the test images of
    # all 6 classes, unseen ones included: the argmax stays among the seen.
    _, _, recorder = run(name)
    assert len(recorder.predicted) == 3
    for t, predicted in enumerate(recorder.predicted):
        assert predicted <= set(range(2 * (t + 1))), (t, predicted)


@pytest.mark.parametrize("name", BASELINES)
def test_old_new_breakdown_agrees_with_stream_accuracy(name):
    # The old/new breakdown comes from the eval pass that gives the stream
    # accuracy (for BiC: after its bias layer), so the two must agree.
    _, results, _ = run(name)
    for t in range(1, 3):
        mixed = (t * results.old_accuracy[t] + results.new_accuracy[t]) / (t + 1)
        assert mixed == pytest.approx(results.seen_accuracy[t], abs=1e-6)


@pytest.mark.parametrize("name", BASELINES)
def test_memory_per_seen_class(name):
    _, _, recorder = run(name)
    for t, memory in enumerate(recorder.memory):
        if name in MEMORY_BASELINES:
            assert memory == dict.fromkeys(range(2 * (t + 1)), MEM), (t, memory)
        else:
            assert memory == {}


@pytest.mark.parametrize("name", BASELINES)
def test_schedule_and_momentum_reset_per_experience(name):
    _, _, recorder = run(name)
    assert recorder.lrs == [pytest.approx([LR, LR * DECAY])] * 3
    assert recorder.optimizer_state == [0, 0, 0]


def test_der_replays_with_unmasked_logits():
    strategy, _, recorder = run("der")
    assert recorder.replaying == [False, True, True]
    logits = torch.stack([item[3] for item in strategy.storage_policy.buffer])
    assert logits.shape == (6 * MEM, 6)
    assert logits.abs().max() < 100  # no mask value (-1000) among the targets


def test_er_ace_memory_is_sized_before_its_update():
    # ER_ACE updates its buffer with the experience's data before any plugin
    # runs (the memory is already complete at before_train_dataset_adaptation),
    # so the budget must have grown by then: every seen class, the current
    # ones included, holds MEM exemplars while it trains
    _, _, recorder = run("er_ace")
    expected = [dict.fromkeys(range(2 * (t + 1)), MEM) for t in range(3)]
    assert recorder.adapting_memory == expected
    assert recorder.training_memory == expected
    assert recorder.replaying == [False, True, True]


def test_agem_projects_against_a_uniformly_drawn_memory():
    strategy, _, recorder = run("agem")
    agem = next(p for p in strategy.plugins if isinstance(p, AGEMPlugin))
    parts = [sorted(int(y) for y in part.targets) for part in agem.buffers]
    assert parts == [sorted([2 * t, 2 * t + 1] * MEM) for t in range(3)]
    # experiences 1 and 2: 2 epochs of 60 samples in batches of 10
    assert len(recorder.agem_cosines) == 2 * 2 * 6
    assert min(recorder.agem_cosines) > -1e-4  # projected where negative
    assert any(abs(c) < 1e-4 for c in recorder.agem_cosines)  # some were
    # reference batches of sample_size (= batch_size); each pass over the
    # memory (30 samples) draws all of it, in a new order
    passes = [
        torch.cat([agem.sample_from_memory()[1] for _ in range(3)]) for _ in range(2)
    ]
    assert [len(p) for p in passes] == [30, 30]
    assert all(sorted(p.tolist()) == sorted(sum(parts, [])) for p in passes)
    assert not torch.equal(passes[0], passes[1])


def test_agem_projects_the_gradients_of_a_channels_last_model():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    grads = [torch.randn_like(p) for p in conv.parameters()]
    for p, g in zip(conv.parameters(), grads, strict=True):
        p.grad = g.clone()
    assert not conv.weight.grad.is_contiguous()  # channels-last, like the weight
    g = torch.cat([g.flatten() for g in grads])
    ref = -g + 0.1 * torch.randn_like(g)  # against the step's gradient
    strategy = type("Strategy", (), {"model": conv, "device": torch.device("cpu")})
    plugin = _AGEMPlugin(patterns_per_experience=1, sample_size=1)
    plugin.buffers, plugin.reference_gradients = [None], ref
    with pytest.raises(RuntimeError, match="view"):  # Avalanche 0.6's flatten
        AGEMPlugin.after_backward(plugin, strategy)
    plugin.after_backward(strategy)
    projected = torch.cat([p.grad.flatten() for p in conv.parameters()])
    expected = g - (g @ ref) / (ref @ ref) * ref
    assert torch.allclose(projected, expected, atol=1e-6)
    assert abs(projected @ ref) < 1e-4


@pytest.mark.parametrize("name", ["lwf", "icarl"])
def test_teacher_in_eval_mode(name):
    _, _, recorder = run(name)
    assert recorder.teacher_training  # a teacher existed after experience 0
    assert not any(recorder.teacher_training)


def test_bic_memory_split_and_bias_layer_in_eval():
    strategy, _, _ = run("bic")
    bic = next(p for p in strategy.plugins if isinstance(p, BiCPlugin))
    val = {c: len(b.buffer) for c, b in bic.val_buffer.items()}
    assert val == dict.fromkeys(range(6), 1)
    replay = [int(y) for y in bic.storage_policy.buffer.targets]
    assert sorted(replay) == sorted(list(range(6)) * (MEM - 1))
    layer = bic.bias_layer
    assert layer.clss.tolist() == [4, 5]
    assert (layer.alpha.item(), layer.beta.item()) != (1.0, 0.0)
    # Avalanche's eval loop hands the metrics the corrected outputs
    batches = []

    class Capture(SupervisedPlugin):
        def after_eval_iteration(self, strategy, **kwargs):
            batches.append((strategy.mb_x.clone(), strategy.mb_output.clone()))

    # the cached run's Recorder is left out: the other tests read what it
    # recorded during the run, whichever order they run in
    plugins = list(strategy.plugins)
    strategy.plugins[:] = [p for p in plugins if not isinstance(p, Recorder)]
    strategy.plugins.append(Capture())
    try:
        strategy.eval(make_benchmark().test_stream)
    finally:
        strategy.plugins[:] = plugins
    x = torch.cat([b[0] for b in batches])
    corrected = torch.cat([b[1] for b in batches])
    with torch.no_grad():
        raw = strategy.model.eval()(x)
    assert torch.allclose(corrected, layer(raw))
    assert not torch.allclose(corrected, raw)


def test_bic_distillation_is_over_classes():
    torch.manual_seed(0)
    new, old = torch.randn(5, 4), torch.randn(5, 4)
    plugin = _BiCPlugin(val_per_class=1, T=3)
    expected = -(F.softmax(old / 3, 1) * F.log_softmax(new / 3, 1)).sum(1).mean()
    assert plugin.cross_entropy(new, old) == pytest.approx(expected.item())
    # Avalanche 0.6's version takes the softmax over the batch, at T=2.
    assert BiCPlugin().cross_entropy(new, old) != pytest.approx(expected.item())


def test_icarl_ncm_never_predicts_classes_without_a_mean():
    means = {0: torch.tensor([1.0, 0, 0]), 1: torch.tensor([0, 1.0, 0])}
    means[2] = torch.zeros(3)  # what iCaRL stores for a class not seen yet
    x = torch.tensor([[0.1, 0.0, 1.0], [0.0, 0.2, 1.0]])
    plain, masked = NCMClassifier(), _SeenClassesNCM()
    for ncm in (plain, masked):
        ncm.replace_class_means_dict(means)
    assert plain(x).argmax(1).tolist() == [2, 2]  # the Avalanche bug
    assert masked(x).argmax(1).tolist() == [0, 1]
    strategy, _, _ = run("icarl")
    assert isinstance(strategy.model.eval_classifier, _SeenClassesNCM)


def test_der_head_masks_unseen_classes_only_in_eval():
    head = _EvalMaskedClassifier(4, initial_out_features=6)
    head.active_units[:2] = 1
    x = torch.randn(3, 4)
    assert (head.train()(x) > -100).all()
    out = head.eval()(x)
    assert (out[:, 2:] == head.mask_value).all()
    assert (out[:, :2] > -100).all()


def test_growing_budget_needs_an_adaptive_buffer():
    fixed = ClassBalancedBuffer(10, adaptive_size=False, total_num_classes=2)
    strategy = _build("naive", plugins=[GrowingMemoryBudget(MEM, fixed)])
    with pytest.raises(ValueError, match="adaptive_size=True"):
        strategy.train(make_benchmark().train_stream[0], eval_streams=[])


def test_unknown_baseline_and_bad_arguments():
    with pytest.raises(ValueError, match="choose one of .*naive.*der"):
        _build("ewc")
    with pytest.raises(ValueError, match="unknown hyper-parameters"):
        make_baseline("lwf", backbone=SmallCNN(3, 8), num_classes=6, hparams={"x": 1})
    with pytest.raises(ValueError, match="out_dim"):
        make_baseline("naive", backbone=torch.nn.Linear(3, 3), num_classes=6)
    with pytest.raises(ValueError, match="mem_per_class must be >= 2"):
        make_baseline(
            "bic",
            backbone=SmallCNN(3, 8),
            num_classes=6,
            training=TrainingParams(mem_per_class=1),
        )
    with pytest.raises(ValueError, match="lr"):
        TrainingParams(lr=0.0)
    for first in ({"first_lr": 0.5}, {"first_batch_size": 4}):
        with pytest.raises(ValueError, match=f"cannot take {next(iter(first))}"):
            make_baseline(
                "naive",
                backbone=SmallCNN(3, 8),
                num_classes=6,
                training=TrainingParams(**first),
            )
    with pytest.raises(ValueError, match="takes LwFParams, not a DERParams"):
        make_baseline(
            "lwf", backbone=SmallCNN(3, 8), num_classes=6, hparams=DERParams()
        )


def test_tables_cover_every_baseline():
    assert set(MEMORY_MATCHING) == set(BASELINES) == set(DEFAULT_HPARAMS)
    backbone = SmallCNN(3, 8, last_relu=False)
    make_baseline("naive", backbone=backbone, num_classes=6, device="cpu")
    assert backbone.last_relu


# -- the registry and its hyper-parameter tables ---------------------------

# (baseline, key) for every hyper-parameter of every table
HPARAM_ROWS = [(n, k) for n in BASELINES for k in REGISTRY[n].hparams]
# (baseline, key) for those with a range
RANGED_ROWS = [(n, k) for n, k in HPARAM_ROWS if REGISTRY[n].hparams[k].kind]
# an out-of-range value per kind of range
OUT_OF_RANGE = {
    "fraction": 1.5,
    "positive": 0.0,
    "non_negative": -1.0,
    "positive_int": 0,
}
# a valid value other than the default, per (baseline, key)
OTHER_VALUES = {
    ("icarl", "buffer_transform"): torch.nn.Identity(),
    ("lwf", "alpha"): 0.3,
    ("lwf", "temperature"): 3.0,
    ("bic", "val_percentage"): 0.4,
    ("bic", "T"): 3.0,
    ("bic", "stage_2_epochs"): 7,
    ("bic", "stage_2_lr"): 0.05,
    ("der", "alpha"): 0.2,
    ("der", "beta"): 0.7,
    ("der", "batch_size_mem"): 4,
    ("er_ace", "batch_size_mem"): 4,
    ("agem", "sample_size"): 4,
}


def _used_hparams(name: str, strategy) -> dict:
    """The hyper-parameters as the built Avalanche objects hold them."""

    def plugin(kind):
        return next(p for p in strategy.plugins if isinstance(p, kind))

    if name == "icarl":
        return {"buffer_transform": plugin(_ICaRLPlugin).buffer_transform}
    if name == "lwf":
        lwf = plugin(LwFPlugin).lwf
        return {"alpha": lwf.alpha, "temperature": lwf.temperature}
    if name == "bic":
        bic = plugin(BiCPlugin)
        used = {"val_percentage": bic.val_percentage, "T": bic.T}
        return used | {"stage_2_epochs": bic.stage_2_epochs, "stage_2_lr": bic.lr}
    if name == "der":
        batch_size_mem = strategy.batch_size_mem
        if batch_size_mem == strategy.train_mb_size:  # what None stands for
            batch_size_mem = None
        return {
            "alpha": strategy.alpha,
            "beta": strategy.beta,
            "batch_size_mem": batch_size_mem,
        }
    if name == "er_ace":
        size = strategy.batch_size_mem
        return {"batch_size_mem": None if size == strategy.train_mb_size else size}
    if name == "agem":
        size = plugin(AGEMPlugin).sample_size
        return {"sample_size": None if size == strategy.train_mb_size else size}
    return {}


def _quick(name: str, hparams=None, **kwargs):
    """A baseline built (not trained) with small arguments."""
    return make_baseline(
        name,
        backbone=SmallCNN(3, 8),
        num_classes=6,
        training=TrainingParams(mem_per_class=MEM, batch_size=10),
        device="cpu",
        evaluator=make_evaluator(),
        hparams=hparams,
        **kwargs,
    )


def test_registry_lists_exactly_the_baselines():
    names = (
        *("naive", "replay", "icarl", "lwf", "bic", "gdumb", "der"),
        *("er_ace", "agem"),
    )
    assert tuple(REGISTRY) == BASELINES == names
    for name, baseline in REGISTRY.items():
        assert baseline.name == name
        assert baseline.factory is getattr(registry, name)
    assert set(MEMORY_MATCHING) == set(BASELINES)
    assert DEFAULT_HPARAMS == {
        name: {key: hp.default for key, hp in baseline.hparams.items()}
        for name, baseline in REGISTRY.items()
    }
    assert set(OTHER_VALUES) == set(HPARAM_ROWS)


@pytest.mark.parametrize("row", RANGED_ROWS, ids=["-".join(r) for r in RANGED_ROWS])
def test_out_of_range_hparam_is_refused_with_the_table_range(row):
    name, key = row
    hp = REGISTRY[name].hparams[key]
    bad = OUT_OF_RANGE[hp.kind]
    assert not hp.allows(bad)
    with pytest.raises(ValueError, match=f"^{key} must be .*{re.escape(hp.bound)}"):
        _quick(name, hparams={key: bad})


@pytest.mark.parametrize("name", BASELINES)
def test_unknown_hparam_lists_the_allowed_ones(name):
    allowed = sorted(REGISTRY[name].hparams) or "none"
    with pytest.raises(
        ValueError,
        match=re.escape(f"unknown hyper-parameters ['nope'] for baseline {name!r}; ")
        + re.escape(f"it accepts {allowed}"),
    ):
        _quick(name, hparams={"nope": 1})


@pytest.mark.parametrize("name", BASELINES)
def test_documented_defaults_are_the_defaults_used(name):
    baseline = REGISTRY[name]
    table = baseline.hparams
    # the factory takes the record (when the baseline has one)
    params = list(inspect.signature(baseline.factory).parameters)[1:]
    assert params == ([] if baseline.record is None else ["params"])
    # its docstring states the table's help, default and range
    doc = " ".join((baseline.factory.__doc__ or "").split())
    for key, hp in table.items():
        assert f":param {key}: {' '.join(hp.doc().split())}" in doc
    # the strategy built without hparams uses the table's defaults,
    # and one built with other values uses those
    assert _used_hparams(name, _quick(name)) == DEFAULT_HPARAMS[name]
    others = {key: OTHER_VALUES[name, key] for key in table}
    assert _used_hparams(name, _quick(name, hparams=others)) == others


def test_unranged_hparam_is_passed_unchecked():
    icarl = REGISTRY["icarl"]
    assert icarl.hparams["buffer_transform"].kind is None
    transform = torch.nn.Identity()
    checked = icarl.check_hparams({"buffer_transform": transform})
    assert checked.buffer_transform is transform


def test_a_record_is_taken_as_it_is():
    strategy = _quick("lwf", hparams=LwFParams(alpha=0.3, temperature=3.0))
    assert _used_hparams("lwf", strategy) == {"alpha": 0.3, "temperature": 3.0}
