"""Diagnostics of BDR's mechanism: the memory samples' share of the logit
gradient, BDR's prior trace and the last-layer analysis, as metrics of a
running strategy and as files of a run's results folder."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from avalanche.models import IncrementalClassifier
from avalanche.training import Naive
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import SupervisedPlugin
from helpers import ARRIVAL, make_benchmark, make_tiny_lucir, shuffled_benchmark
from probe import Probe
from reference.formulas import ref_gradient_share
from torch import nn

from bdr_avalanche.baselines import make_baseline
from bdr_avalanche.experiment.checkpoint import CHECKPOINT_FILE
from bdr_avalanche.experiment.compare import run_comparison
from bdr_avalanche.experiment.config import ExperimentConfig
from bdr_avalanche.experiment.runner import run_experiment
from bdr_avalanche.metrics import (
    DiagnosticMetrics,
    GradientShareAccumulator,
    LastLayerAnalysis,
    MemoryGradShare,
    PriorTrace,
    classifier_weight_norms,
    logit_gradient_mass,
    memory_gradient_share,
)
from bdr_avalanche.models import CosineIncrementalClassifier, SmallCNN
from bdr_avalanche.params import TrainingParams
from bdr_avalanche.protocol import make_evaluator, train_and_evaluate

SHARE_NAME = "MemoryGradShare_Epoch/train_phase/train_stream/Task000"


# ------------------------------------------------------------------- math


@pytest.mark.parametrize("with_prior", [False, True])
def test_gradient_share_matches_the_formula(with_prior):
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(64, 7, generator=gen)
    logits[:5] *= 10  # a few confident samples
    targets = torch.randint(0, 7, (64,), generator=gen)
    is_memory = targets < 3
    prior = torch.log(torch.rand(7, generator=gen)) if with_prior else None

    memory_mass, total_mass = ref_gradient_share(logits, targets, is_memory, prior)
    share = memory_gradient_share(logits, targets, is_memory, prior)
    assert share.dtype == torch.float32 and share.dim() == 0
    assert share.item() == pytest.approx(memory_mass / total_mass, rel=1e-5)

    # per sample: the L1 norm of the cross-entropy's gradient w.r.t. logits
    z = logits.clone().double().requires_grad_()
    adjusted = z if prior is None else z + prior.double()
    loss = nn.functional.cross_entropy(adjusted, targets, reduction="sum")
    (grad,) = torch.autograd.grad(loss, z)
    mass = logit_gradient_mass(logits, targets, prior)
    torch.testing.assert_close(mass.double(), grad.abs().sum(1), rtol=1e-5, atol=1e-6)

    # the accumulator over two batches is the share of their union
    acc = GradientShareAccumulator()
    memory_classes = torch.tensor([0, 1, 2])
    acc.update(logits[:40], targets[:40], memory_classes, prior)
    acc.update(logits[40:], targets[40:], memory_classes, prior)
    grad_share, sample_share = acc.values()
    assert grad_share == pytest.approx(memory_mass / total_mass, rel=1e-6)
    assert sample_share == pytest.approx(is_memory.double().mean().item())
    assert acc.result() == grad_share


def test_gradient_share_edge_cases():
    targets = torch.tensor([0, 1])
    logits = torch.tensor([[50.0, -50.0], [-50.0, 50.0]])  # no gradient left
    assert memory_gradient_share(logits, targets, targets == 0).item() == 0.0
    # a prior that hides the label's logit gives the sample almost all mass
    prior = torch.tensor([-200.0, 0.0])
    mass = logit_gradient_mass(logits, targets, prior)
    assert mass[0].item() == pytest.approx(2.0) and mass[1].item() < 1e-6
    acc = GradientShareAccumulator()
    assert acc.values() is None and acc.result() is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_host_sync_per_step():
    """Accumulating a batch and recording the prior never wait for the GPU."""
    device = torch.device("cuda")
    acc = GradientShareAccumulator()
    trace_prior = torch.randn(10, device=device)
    logits = torch.randn(32, 10, device=device)
    targets = torch.randint(0, 10, (32,), device=device)
    memory_classes = torch.arange(5, device=device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            acc.update(logits, targets, memory_classes, trace_prior)
            memory_gradient_share(logits, targets, targets < 5, trace_prior)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert 0.0 < acc.result() < 1.0


def test_classifier_weight_norms():
    cosine = CosineIncrementalClassifier(4)
    assert classifier_weight_norms(cosine) is None  # no class yet
    cosine.blocks.append(nn.Parameter(torch.full((3, 4), 2.0)))
    torch.testing.assert_close(classifier_weight_norms(cosine), torch.full((3,), 4.0))
    head = IncrementalClassifier(4, initial_out_features=5)
    net = nn.Sequential(nn.Linear(8, 4), head)  # the head wins over other Linears
    torch.testing.assert_close(
        classifier_weight_norms(net), head.classifier.weight.norm(dim=1)
    )
    plain = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(2, 6))
    assert classifier_weight_norms(plain).shape == (6,)
    assert classifier_weight_norms(nn.Conv2d(1, 2, 3)) is None


# ------------------------------------------------- metrics in a strategy run


class StepRecorder:
    """Per experience and epoch, the logits, labels and prior of every
    training step (from a Probe, after the plugins' after_forward)."""

    def __init__(self) -> None:
        self.steps: dict[int, list[list[tuple]]] = {}

    def epoch(self, strategy) -> None:
        t = strategy.clock.train_exp_counter
        self.steps.setdefault(t, []).append([])

    def step(self, strategy) -> None:
        t = strategy.clock.train_exp_counter
        output = strategy.mb_output.detach().clone()
        bdr = getattr(strategy, "bdr", None)
        prior = (
            None
            if bdr is None or bdr.prior is None
            else bdr.logit_adjustment(output.shape[1]).clone()
        )
        self.steps[t][-1].append((output, strategy.mb_y.clone(), prior))


@pytest.fixture(scope="module")
def bdr_run():
    """LUCIR+BDR for 2 epochs on 3 tiny experiences, with the diagnostics
    and a share metric that ignores the prior."""
    benchmark = make_benchmark()
    recorder = StepRecorder()
    probe = Probe(before_training_epoch=recorder.epoch, after_backward=recorder.step)
    diagnostics = DiagnosticMetrics()
    no_prior = MemoryGradShare(use_prior=False)
    sparse = PriorTrace(max_points=4)
    strategy = make_tiny_lucir(
        probe,
        lr=0.05,
        epochs=2,
        milestones=[5],
        eval_batch_size=32,
        bdr=True,
        evaluator=make_evaluator(
            extra_metrics=[*diagnostics.metrics, no_prior, sparse]
        ),
    )
    train_and_evaluate(strategy, benchmark)
    return strategy, benchmark, diagnostics, no_prior, sparse, recorder


def test_memory_gradient_share_in_a_run(bdr_run):
    strategy, _, diagnostics, no_prior, _, recorder = bdr_run
    history = diagnostics.grad_share.history
    assert [h["experience"] for h in history] == [0, 1, 2]
    assert all(len(h["gradient_share"]) == 2 for h in history)
    # no memory in the first experience; a share of the gradient later
    assert history[0]["gradient_share"] == [0.0, 0.0]
    assert history[0]["sample_share"] == [0.0, 0.0]
    for h in history[1:]:
        assert all(0.0 < v < 1.0 for v in h["gradient_share"])
        assert all(0.0 < v < 1.0 for v in h["sample_share"])
    # the share follows the formula on the logits, labels and prior of the
    # loss, memory samples being those of earlier experiences' classes
    for t, old in ((1, 2), (2, 4)):
        for epoch, steps in enumerate(recorder.steps[t]):
            memory = total = with_memory = samples = 0.0
            for logits, y, prior in steps:
                m, a = ref_gradient_share(logits, y, y < old, prior)
                memory, total = memory + m, total + a
                with_memory += float((y < old).sum())
                samples += len(y)
            assert history[t]["gradient_share"][epoch] == pytest.approx(
                memory / total, rel=1e-5
            )
            assert history[t]["sample_share"][epoch] == pytest.approx(
                with_memory / samples
            )
    # the value is logged through Avalanche's evaluator, once per epoch
    logged = strategy.evaluator.get_all_metrics()[SHARE_NAME][1]
    assert logged == [v for h in history for v in h["gradient_share"]]


def test_bdr_prior_changes_the_share(bdr_run):
    _, _, diagnostics, no_prior, _, _ = bdr_run
    with_prior = diagnostics.grad_share.history
    assert no_prior.history[0] == with_prior[0]  # no prior in experience 0
    for a, b in zip(with_prior[1:], no_prior.history[1:], strict=True):
        assert a["sample_share"] == b["sample_share"]
        for x, y in zip(a["gradient_share"], b["gradient_share"], strict=True):
            # the prior lowers the logits of the scarce old classes inside
            # the loss: their samples carry more of the gradient
            assert x > y


def test_prior_trace_shape_and_values(bdr_run):
    strategy, _, diagnostics, _, sparse, recorder = bdr_run
    records = diagnostics.prior_trace.records
    assert [r.experience for r in records] == [1, 2]  # no prior in experience 0
    for r, classes in zip(records, (4, 6), strict=True):
        t = r.experience
        steps = sum(len(epoch) for epoch in recorder.steps[t])
        assert r.steps.tolist() == list(range(steps + 1))
        assert r.prior.shape == (steps + 1, classes)
        assert r.prior.device.type == "cpu"
        assert r.old_classes == list(range(classes - 2))
        assert r.new_classes == [classes - 2, classes - 1]
        # step s holds the prior the loss of step s used
        flat = [prior for epoch in recorder.steps[t] for _, _, prior in epoch]
        for s, prior in enumerate(flat, start=1):
            torch.testing.assert_close(r.prior[s], prior[:classes])
        # old classes are scarce: lower prior than new ones
        assert r.prior[:, r.old_classes].max() < r.prior[:, r.new_classes].min()
    torch.testing.assert_close(records[-1].prior[-1], strategy.bdr.prior)
    # a bounded trace keeps evenly spaced steps of the full one
    for full, short in zip(records, sparse.records, strict=True):
        kept = short.steps.tolist()
        assert len(kept) <= 4 and kept[0] == 0
        stride = kept[1] - kept[0]
        assert stride > 1 and kept == list(range(0, stride * len(kept), stride))
        torch.testing.assert_close(short.prior, full.prior[short.steps])


def test_last_layer_analysis(bdr_run):
    strategy, benchmark, diagnostics, _, _, _ = bdr_run
    records = diagnostics.last_layer.records
    assert [r.experience for r in records] == [0, 1, 2]
    assert [r.classes for r in records] == [[0, 1], [0, 1, 2, 3], list(range(6))]
    last = records[-1]
    norms = strategy.model.head.weight.detach().norm(dim=1)
    assert last.weight_norm == pytest.approx(norms.tolist(), rel=1e-6)
    # the same means as a separate pass over the seen test images
    model = strategy.model.eval()
    with torch.no_grad():
        data = [exp.dataset.eval() for exp in benchmark.test_stream]
        x = torch.cat([torch.stack([d[i][0] for i in range(len(d))]) for d in data])
        y = torch.cat([torch.tensor([d[i][1] for i in range(len(d))]) for d in data])
        logits = model(x).double()
    assert last.mean_logit == pytest.approx(logits.mean(0).tolist(), rel=1e-5)
    own = [logits[y == c, c].mean().item() for c in range(6)]
    assert last.mean_target_logit == pytest.approx(own, rel=1e-5)
    # the old rows of LUCIR's cosine head are frozen: their norms stay
    assert records[1].weight_norm[:2] == pytest.approx(records[0].weight_norm)


def test_diagnostics_state_round_trip(bdr_run, tmp_path):
    _, _, diagnostics, _, _, _ = bdr_run
    path = tmp_path / "state.pt"
    torch.save(diagnostics.state_dict(), path)
    restored = DiagnosticMetrics()
    restored.load_state_dict(torch.load(path, weights_only=True))
    assert restored.summary() == diagnostics.summary()
    for a, b in zip(
        restored.prior_trace.records, diagnostics.prior_trace.records, strict=True
    ):
        assert torch.equal(a.prior, b.prior) and torch.equal(a.steps, b.steps)
    summary = diagnostics.summary()
    assert json.loads(json.dumps(summary)) == summary


def test_baseline_with_replay():
    """Avalanche's Replay (memory drawn as half of every batch) with a
    linear IncrementalClassifier."""
    diagnostics = DiagnosticMetrics()
    strategy = make_baseline(
        "replay",
        backbone=SmallCNN(in_channels=3, width=8),
        num_classes=6,
        training=TrainingParams(
            mem_per_class=5,
            lr=0.05,
            milestones=[5],
            batch_size=16,
            epochs=1,
            eval_batch_size=32,
        ),
        device="cpu",
        evaluator=make_evaluator(extra_metrics=diagnostics.metrics),
    )
    train_and_evaluate(strategy, make_benchmark(num_classes=4))
    summary = diagnostics.summary()
    assert summary["memory_gradient_share"][0] == [0.0]
    assert 0.0 < summary["memory_gradient_share"][1][0] < 1.0
    assert diagnostics.prior_trace.records == []  # no BDR
    last = summary["last_layer"][-1]
    norms = strategy.model.classifier.classifier.weight.detach().norm(dim=1)
    assert last["weight_norm"] == pytest.approx(norms.tolist(), rel=1e-6)
    assert len(last["mean_logit"]) == 4


def test_evaluations_during_training_are_ignored():
    """A periodic evaluation inside ``train`` does not replace the record
    of the previous experience."""
    benchmark = make_benchmark(num_classes=4)
    last_layer = LastLayerAnalysis()
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    strategy = Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        criterion=nn.CrossEntropyLoss(),
        train_mb_size=32,
        train_epochs=1,
        device="cpu",
        evaluator=make_evaluator(extra_metrics=[last_layer]),
        eval_every=1,
    )
    strategy.train(benchmark.train_stream[0], eval_streams=[benchmark.test_stream[0]])
    strategy.eval(benchmark.test_stream[:1])
    first = last_layer.records[0].mean_logit
    strategy.train(benchmark.train_stream[1], eval_streams=[benchmark.test_stream[0]])
    assert len(last_layer.records) == 1 and last_layer.records[0].mean_logit == first


# ------------------------------------------- class ids not in arrival order


@pytest.fixture(scope="module")
def relabelled_runs():
    """LUCIR+BDR with the diagnostics, run alike on a stream whose class ids
    are not in arrival order (LUCIR relabels them: ``mb_y``, the logits and
    BDR's prior use its ids) and on the equivalent stream whose ids are in
    arrival order already (the same images, in the same order, with LUCIR's
    ids): the diagnostics, in the model's ids, must agree."""
    runs = {}
    for name, arrival_order in (("shuffled", False), ("arrival", True)):
        RNGManager.set_random_seeds(0)
        benchmark = shuffled_benchmark(arrival_order=arrival_order)
        diagnostics = DiagnosticMetrics()
        strategy = make_tiny_lucir(
            lr=0.05,
            epochs=2,
            milestones=[5],
            eval_batch_size=32,
            bdr=True,
            evaluator=make_evaluator(extra_metrics=diagnostics.metrics),
        )
        train_and_evaluate(strategy, benchmark)
        runs[name] = (strategy, diagnostics)
    assert runs["shuffled"][0].class_order == list(ARRIVAL)  # relabelled
    assert runs["arrival"][0].class_order == list(range(6))  # as they are
    return runs["shuffled"][1], runs["arrival"][1]


def test_memory_gradient_share_with_relabelled_ids(relabelled_runs):
    """Memory samples are those of the earlier experiences' classes in the
    ids of ``mb_y``, not in the benchmark's."""
    shuffled, arrival = relabelled_runs
    got, want = shuffled.grad_share.history, arrival.grad_share.history
    assert [h["experience"] for h in got] == [0, 1, 2]
    for g, w in zip(got, want, strict=True):
        assert g["sample_share"] == pytest.approx(w["sample_share"], rel=1e-9)
        assert g["gradient_share"] == pytest.approx(w["gradient_share"], rel=1e-5)
    # 5 exemplars of each old class next to 30 images of each new class
    assert got[1]["sample_share"] == pytest.approx([10 / 70] * 2)
    assert got[2]["sample_share"] == pytest.approx([20 / 80] * 2)
    assert all(0.0 < v < 1.0 for h in got[1:] for v in h["gradient_share"])


def test_prior_trace_with_relabelled_ids(relabelled_runs):
    """The old and new classes of a trace are columns of BDR's prior: the
    model's ids."""
    shuffled, arrival = relabelled_runs
    got, want = shuffled.prior_trace.records, arrival.prior_trace.records
    assert [r.experience for r in got] == [1, 2]
    for g, w in zip(got, want, strict=True):
        assert (g.old_classes, g.new_classes) == (w.old_classes, w.new_classes)
        assert torch.equal(g.steps, w.steps)
        torch.testing.assert_close(g.prior, w.prior, rtol=1e-5, atol=1e-6)
    assert (got[0].old_classes, got[0].new_classes) == ([0, 1], [2, 3])
    assert (got[1].old_classes, got[1].new_classes) == ([0, 1, 2, 3], [4, 5])
    for r in got:  # the scarce old classes have the lower prior
        assert r.prior[:, r.old_classes].max() < r.prior[:, r.new_classes].min()


def test_last_layer_analysis_with_relabelled_ids(relabelled_runs):
    """Classes, weight rows and logits are all indexed by the model's ids."""
    shuffled, arrival = relabelled_runs
    got, want = shuffled.last_layer.records, arrival.last_layer.records
    assert [r.classes for r in got] == [[0, 1], [0, 1, 2, 3], list(range(6))]
    for g, w in zip(got, want, strict=True):
        assert (g.experience, g.classes) == (w.experience, w.classes)
        for key in ("weight_norm", "mean_logit", "mean_target_logit"):
            assert getattr(g, key) == pytest.approx(getattr(w, key), rel=1e-5), key
    assert not any(math.isnan(v) for r in got for v in r.mean_target_logit)


# ------------------------------------------------------------- the runner

TINY = {
    "epochs": 1,
    "milestones": [1],
    "batch_size": 64,
    "width": 8,
    "mem_per_class": 5,
    "n_phases": 1,
    "interactive": False,
    "text_log": False,
    "csv_log": False,
    "save_models": False,
}


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    out = tmp_path_factory.mktemp("diagnostics")
    cfg = ExperimentConfig(output_dir=str(out), name="cmp", **TINY)
    runs = run_comparison(cfg, ["lucir_cwd_bdr", "lucir"])
    return cfg, out / "cmp", runs


@pytest.mark.integration
def test_results_folder_has_the_diagnostics(comparison):
    _, out, runs = comparison
    for method in ("lucir_cwd_bdr", "lucir"):
        run_dir = out / method
        for name in ("memory_gradient_share.png", "last_layer.png"):
            assert (run_dir / name).stat().st_size > 0, (method, name)
        summary = json.loads((run_dir / "results.json").read_text())
        assert summary == runs[method]
        shares = summary["memory_gradient_share"]
        assert len(shares) == 2 and shares[0] == [0.0]
        assert 0.0 < shares[1][0] < 1.0
        assert [len(s) for s in summary["memory_sample_share"]] == [1, 1]
        layers = summary["last_layer"]
        assert [r["experience"] for r in layers] == [0, 1]
        assert [len(r["classes"]) for r in layers] == [4, 10]
        assert all(v is not None for r in layers for v in r["weight_norm"])
    # BDR's prior trace only where BDR runs
    assert (out / "lucir_cwd_bdr" / "bdr_prior_trace.png").stat().st_size > 0
    trace = np.load(out / "lucir_cwd_bdr" / "prior_trace.npz")
    assert sorted(trace.files) == [
        "exp1_new_classes",
        "exp1_old_classes",
        "exp1_prior",
        "exp1_steps",
    ]
    assert trace["exp1_prior"].shape == (len(trace["exp1_steps"]), 10)
    assert trace["exp1_old_classes"].tolist() == [0, 1, 2, 3]
    assert not (out / "lucir" / "bdr_prior_trace.png").exists()
    # the comparison's figure of the shares
    assert (out / "memory_gradient_share.png").stat().st_size > 0


@pytest.mark.integration
def test_resume_keeps_the_diagnostics(comparison, tmp_path, monkeypatch):
    """A run stopped after its first experience and resumed reports the
    same diagnostics as the uninterrupted run; so does one resumed from a
    checkpoint written before the diagnostics existed (without history
    for the experience before the checkpoint)."""
    import bdr_avalanche.experiment.runner as runner

    cfg, _, runs = comparison
    saved = runner.save_checkpoint

    def save_then_stop(path, state):
        saved(path, state)
        raise KeyboardInterrupt

    def stopped(name):
        # each trains its first experience (no entry stored by the other)
        sub = ExperimentConfig(
            **{**cfg.to_dict(), "output_dir": str(tmp_path), "name": name,
               "reuse_base": False}
        )  # fmt: skip
        monkeypatch.setattr(runner, "save_checkpoint", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            run_experiment(sub)
        monkeypatch.undo()
        return sub

    full = runs["lucir_cwd_bdr"]
    resumed = run_experiment(stopped("new"))
    for key in ("memory_gradient_share", "memory_sample_share", "last_layer"):
        assert resumed[key] == full[key], key

    sub = stopped("old")
    path = tmp_path / "old" / CHECKPOINT_FILE
    state = torch.load(path, weights_only=True)
    del state["diagnostics"]
    state["evaluator"] = state["evaluator"][: -len(DiagnosticMetrics().metrics)]
    torch.save(state, path)
    resumed = run_experiment(sub)
    assert resumed["memory_gradient_share"] == [[], full["memory_gradient_share"][1]]
    assert resumed["last_layer"] == full["last_layer"][1:]


class _ACEBatches(SupervisedPlugin):
    """Records ER-ACE's two batches of every step after the first experience."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[tuple[torch.Tensor, ...]] = []

    def after_training_iteration(self, strategy, **kwargs):
        if strategy.replay_loader is not None:
            self.steps.append(
                tuple(
                    t.detach().clone()
                    for t in (
                        strategy.mb_output,
                        strategy.mb_y,
                        strategy.mb_buffer_out,
                        strategy.mb_buffer_y,
                    )
                )
            )


def test_gradient_share_of_er_ace_counts_both_of_its_cross_entropies():
    """ER-ACE's new batch enters a cross-entropy over its own classes, its
    memory batch (a forward pass of its own) one over all outputs: the
    metric's epoch value is the reference share of both, in float64."""
    RNGManager.set_random_seeds(0)
    benchmark = make_benchmark(num_classes=4, per_exp=2)
    metric = MemoryGradShare()
    batches = _ACEBatches()
    strategy = make_baseline(
        "er_ace",
        backbone=SmallCNN(in_channels=3, width=8),
        num_classes=4,
        training=TrainingParams(mem_per_class=5, batch_size=10, epochs=1),
        device="cpu",
        evaluator=make_evaluator([], [metric]),
        plugins=[batches],
    )
    for experience in benchmark.train_stream:
        strategy.train(experience)
    assert batches.steps  # the memory batch was drawn
    old = {int(c) for c in benchmark.train_stream[0].classes_in_this_experience}
    memory_mass = total_mass = 0.0
    for out, y, buffer_out, buffer_y in batches.steps:
        current = sorted({int(c) for c in y})
        m, t = ref_gradient_share(
            out[:, current], [current.index(int(c)) for c in y], [False] * len(y)
        )
        memory_mass, total_mass = memory_mass + m, total_mass + t
        m, t = ref_gradient_share(
            buffer_out, buffer_y, [int(c) in old for c in buffer_y]
        )
        memory_mass, total_mass = memory_mass + m, total_mass + t
    (epoch,) = metric.history[1]["gradient_share"]
    assert 0.0 < epoch < 1.0
    assert epoch == pytest.approx(memory_mass / total_mass, rel=1e-5)
