"""LUCIR where its assumptions do not hold: a stream whose experiences do
not list their classes (``benchmark_from_datasets``), a LUCIRPlugin moved
to a second strategy, and a cosine scale that training drives to zero or
below."""

from __future__ import annotations

import copy

import pytest
import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.scenarios.online import split_online_stream
from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
from avalanche.benchmarks.utils import AvalancheDataset
from avalanche.core import SupervisedPlugin
from avalanche.training import Naive
from avalanche.training.determinism.rng_manager import RNGManager
from helpers import make_benchmark, make_tiny_lucir
from probe import Probe
from torch import nn
from torch.utils.data import TensorDataset

from bdr_avalanche import LUCIR
from bdr_avalanche.experiment.cli import main
from bdr_avalanche.models import (
    CosineIncrementalClassifier,
    CosineIncrementalNet,
    SmallCNN,
)
from bdr_avalanche.plugins import (
    ConcatReplayPlugin,
    FiniteLossGuard,
    LUCIRPlugin,
    NonFiniteLossError,
    NonPositiveScaleError,
)
from bdr_avalanche.storage import HerdingBuffer


def make_lucir(*plugins, check_every: int = 20) -> LUCIR:
    return make_tiny_lucir(*plugins, evaluator=None, finite_check_every=check_every)


def from_datasets(benchmark, order=None):
    """The experiences of ``benchmark`` (in ``order``) as a
    ``benchmark_from_datasets`` stream: same datasets, no class lists."""
    order = range(len(benchmark.train_stream)) if order is None else order
    return benchmark_from_datasets(
        train=[benchmark.train_stream[i].dataset for i in order],
        test=[benchmark.test_stream[i].dataset for i in order],
    )


def test_datasets_stream_has_no_class_lists():
    """The premise: these experiences do not say which classes they hold."""
    stream = from_datasets(make_benchmark()).train_stream
    assert not hasattr(stream[0], "classes_in_this_experience")


def test_cosine_head_reads_the_classes_from_the_targets():
    head = CosineIncrementalClassifier(4)
    experience = from_datasets(make_benchmark(), order=[2]).train_stream[0]
    head.adaptation(experience)
    assert head.classes == [4, 5]
    assert head.num_outputs == 6


def accuracy_matrix(strategy: LUCIR, train_stream, test_stream) -> list[list[float]]:
    """After each training experience, the accuracy on each test experience,
    from the test data's own labels mapped to LUCIR's ids (a plain loop)."""
    rows = []
    for experience in train_stream:
        strategy.train(experience)
        strategy.model.eval()
        index = {c: i for i, c in enumerate(strategy.class_order)}
        row = []
        for test in test_stream:
            data = test.dataset.eval()
            x = torch.stack([data[i][0] for i in range(len(data))])
            y = [int(data[i][1]) for i in range(len(data))]
            with torch.no_grad():
                predicted = strategy.model(x).argmax(1).tolist()
            hits = [p == index.get(t, -1) for p, t in zip(predicted, y, strict=True)]
            row.append(sum(hits) / len(hits))
        rows.append(row)
    return rows


def test_lucir_on_benchmark_from_datasets_matches_nc_benchmark():
    """Same data, same seed: the stream without class lists gives exactly
    the accuracy matrix of the nc_benchmark it was taken from."""
    benchmark = make_benchmark()
    datasets = from_datasets(benchmark)
    results = []
    for bench in (benchmark, datasets):
        RNGManager.set_random_seeds(0)
        strategy = make_lucir()
        results.append(accuracy_matrix(strategy, bench.train_stream, bench.test_stream))
        assert strategy.class_order == [0, 1, 2, 3, 4, 5]
    assert results[0] == results[1]
    assert results[1][-1] != [0.0, 0.0, 0.0]


def test_lucir_relabels_a_datasets_stream_in_order_of_arrival():
    """Experiences holding classes {4, 5}, then {0, 1}, then {2, 3}: LUCIR
    numbers them 0..5 in that order (sorted within an experience), and the
    first experience trains on the labels mapped so."""
    benchmark = make_benchmark()
    datasets = from_datasets(benchmark, order=[2, 0, 1])
    targets = [int(t) for t in datasets.train_stream[0].dataset.targets]
    expected_order = []
    for experience in (benchmark.train_stream[i] for i in (2, 0, 1)):
        expected_order += sorted({int(t) for t in experience.dataset.targets})
    assert expected_order == [4, 5, 0, 1, 2, 3]
    mapping = {c: i for i, c in enumerate(expected_order)}

    labels: list[int] = []
    probe = Probe(
        before_forward=lambda s: (
            labels.extend(s.mb_y.tolist()) if s.clock.train_exp_counter == 0 else None
        )
    )
    results = []
    for bench in (datasets, with_classes_timeline(datasets)):
        RNGManager.set_random_seeds(0)
        strategy = make_lucir(probe)
        results.append(accuracy_matrix(strategy, bench.train_stream, bench.test_stream))
        assert strategy.class_order == expected_order
    assert labels[: len(targets)] == labels[len(targets) :]  # both runs alike
    assert sorted(labels[: len(targets)]) == sorted(mapping[t] for t in targets)
    assert results[0] == results[1]


def test_a_dataset_without_targets_is_refused_naming_with_classes_timeline():
    x, y = torch.randn(8, 3, 8, 8), torch.tensor([0, 1] * 4)
    stream = benchmark_from_datasets(
        train=[AvalancheDataset([TensorDataset(x, y)])]
    ).train_stream
    strategy = make_lucir()
    with pytest.raises(ValueError, match="with_classes_timeline") as info:
        strategy.train(stream[0])
    assert len(str(info.value).splitlines()) == 1
    assert strategy.clock.train_iterations == 0


def test_lucir_plugin_on_naive_reads_the_classes_from_the_targets():
    """Naive with the plugin, the cosine net and a herding memory trains on
    a datasets stream; the plugin's distillation is on after the first."""
    RNGManager.set_random_seeds(0)
    datasets = from_datasets(make_benchmark())
    model = CosineIncrementalNet(SmallCNN(in_channels=3, width=8))
    plugin = LUCIRPlugin(k=2)
    strategy = naive(model, plugin)
    for experience in datasets.train_stream:
        strategy.train(experience)
    assert model.head.classes == [0, 1, 2, 3, 4, 5]
    assert plugin.num_old_classes == 6
    assert set(plugin.last_losses) == {"less_forget", "margin_ranking"}


@pytest.mark.parametrize("boundaries", [True, False])
def test_lucir_plugin_refuses_an_online_stream(boundaries):
    """Its previous model is taken at the end of each experience: on
    mini-experiences it would distil from the model of a few steps ago."""
    online = split_online_stream(
        make_benchmark().train_stream,
        experience_size=13,
        access_task_boundaries=boundaries,
        seed=0,
    )
    model = fresh_net()
    before = copy.deepcopy(model.backbone.state_dict())
    strategy = naive(model, LUCIRPlugin(k=1))
    with pytest.raises(ValueError, match="does not train on online streams") as err:
        strategy.train(next(iter(online)))
    assert "\n" not in str(err.value)
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no step


def test_our_evaluator_on_a_datasets_stream_counts_old_and_new_classes():
    """The old/new metric reads an experience's classes as the models do:
    Naive with make_evaluator() evaluates a datasets stream, and its
    new-class accuracy equals the accuracy on the experience just trained."""
    from avalanche.models import SimpleMLP

    from bdr_avalanche.protocol import make_evaluator

    RNGManager.set_random_seeds(0)
    bench = from_datasets(make_benchmark())
    model = SimpleMLP(num_classes=6, input_size=3 * 8 * 8, hidden_size=16)
    strategy = Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
        train_mb_size=16,
        train_epochs=1,
        device="cpu",
        evaluator=make_evaluator(),
    )
    strategy.train(bench.train_stream[0])
    results = strategy.eval(bench.test_stream[:1])
    new = [v for k, v in results.items() if "New" in k or "new" in k]
    mine = [v for k, v in results.items() if k.startswith("Top1_Acc_Exp/")]
    assert new and mine
    assert new[0] == pytest.approx(mine[0])


# -- one plugin, two strategies -------------------------------------------
def naive(model: nn.Module, *plugins, memory: bool = True) -> Naive:
    own = [ConcatReplayPlugin(HerdingBuffer(mem_per_class=5))] if memory else []
    return Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        train_mb_size=16,
        train_epochs=1,
        device="cpu",
        plugins=own + list(plugins),
        evaluator=None,
    )


def fresh_net() -> CosineIncrementalNet:
    return CosineIncrementalNet(SmallCNN(in_channels=3, width=8))


def test_a_plugin_moved_to_a_new_strategy_starts_afresh(benchmark):
    """A second strategy that reuses the plugin trains exactly as one with a
    plugin of its own."""
    shared = LUCIRPlugin()
    first = naive(fresh_net(), shared)
    for experience in benchmark.train_stream:
        first.train(experience)
    assert shared.num_old_classes == 6

    models = []
    for plugin in (shared, LUCIRPlugin()):
        RNGManager.set_random_seeds(1)
        model = fresh_net()
        strategy = naive(model, plugin)
        for experience in benchmark.train_stream:
            strategy.train(experience)
        models.append(model)
    assert plugin.num_old_classes == shared.num_old_classes == 6
    for a, b in zip(
        models[0].state_dict().values(), models[1].state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_plugin_shared_by_two_running_trainings_is_refused(benchmark):
    """Strategy A's second experience would distil from B's model: refused
    in one line, before A trains on it."""
    shared = LUCIRPlugin()
    a, b = naive(fresh_net(), shared), naive(fresh_net(), shared)
    a.train(benchmark.train_stream[0])
    b.train(benchmark.train_stream[0])
    iterations = a.clock.train_iterations
    with pytest.raises(ValueError, match="another strategy") as info:
        a.train(benchmark.train_stream[1])
    assert len(str(info.value).splitlines()) == 1
    assert a.clock.train_iterations == iterations


def test_a_loaded_plugin_state_is_kept_by_the_strategy_that_trains_next(benchmark):
    """load_state_dict hands the state to the next strategy: resuming a run
    in a new strategy goes on from the loaded previous model, with a new
    plugin or with the one that took the state."""
    trained = LUCIRPlugin()
    model = fresh_net()
    naive(model, trained).train(benchmark.train_stream[0])
    state = trained.state_dict()

    for plugin in (LUCIRPlugin(), trained):
        resumed = copy.deepcopy(model)
        plugin.load_state_dict(state, resumed)
        naive(resumed, plugin).train(benchmark.train_stream[1])
        assert plugin.num_old_classes == 4
        assert set(plugin.last_losses) == {"less_forget", "margin_ranking"}


# -- the cosine scale -------------------------------------------------------
class SetScale(SupervisedPlugin):
    """Sets the cosine head's sigma after the ``at``-th update of experience
    ``exp``, as a too-large step would."""

    def __init__(self, value: float, exp: int, at: int = 1) -> None:
        super().__init__()
        self.value, self.exp, self.at = value, exp, at

    def after_update(self, strategy, **kwargs):
        clock = strategy.clock
        if (
            clock.train_exp_counter == self.exp
            and clock.train_epoch_iterations + 1 == self.at
        ):
            with torch.no_grad():
                strategy.model.head.sigma.fill_(self.value)


@pytest.mark.parametrize("check_every", [1, 1000])
def test_a_non_positive_scale_stops_lucir_naming_experience_and_value(
    benchmark, check_every
):
    strategy = make_lucir(SetScale(-0.354, exp=1), check_every=check_every)
    strategy.train(benchmark.train_stream[0])
    with pytest.raises(NonPositiveScaleError) as info:
        strategy.train(benchmark.train_stream[1])
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert "experience 1" in message
    assert "sigma" in message
    assert "learning rate" in message
    # the CLI and callers that stop on a diverged loss stop on it too
    assert isinstance(info.value, NonFiniteLossError)
    sigma = strategy.model.head.sigma.item()
    assert sigma < 0
    assert f"fell to {sigma:.4g} " in message  # the value when it stopped
    if check_every == 1:  # stopped after the step that set it
        assert "fell to -0.354 " in message
        assert strategy.clock.train_epoch_iterations == 0
    else:  # at the end of the epoch
        assert strategy.clock.train_epoch_iterations > 1


def test_a_zero_scale_is_refused_too(benchmark):
    strategy = make_lucir(SetScale(0.0, exp=0, at=2), check_every=1)
    with pytest.raises(NonPositiveScaleError, match="experience 0"):
        strategy.train(benchmark.train_stream[0])


def test_the_guard_checks_a_cosine_head_on_an_avalanche_strategy(benchmark):
    model = fresh_net()
    strategy = naive(model, FiniteLossGuard(check_every=3), SetScale(-2.0, exp=0))
    with pytest.raises(NonPositiveScaleError, match=r"sigma.*-2\.0.*experience 0"):
        strategy.train(benchmark.train_stream[0])


def test_a_positive_scale_is_not_stopped(benchmark):
    strategy = make_lucir(SetScale(0.05, exp=1), check_every=1)
    for experience in benchmark.train_stream:
        strategy.train(experience)
    assert strategy.model.head.sigma.item() > 0


def test_cli_reports_a_non_positive_scale_in_one_line(tmp_path, capsys, monkeypatch):
    """The scale starts at -1 (as if a step had flipped it): the run stops
    in experience 0 with exit status 1 and one line."""
    init = CosineIncrementalClassifier.__init__

    def negative_scale(self, *args, **kwargs):
        init(self, *args, **kwargs)
        with torch.no_grad():
            self.sigma.fill_(-1.0)

    monkeypatch.setattr(CosineIncrementalClassifier, "__init__", negative_scale)
    out = tmp_path / "results"
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--epochs", "1", "--width", "8", "--output_dir", str(out),
              "--interactive", "false"])  # fmt: skip
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    line = err[-1]
    assert line.startswith("bdr-avalanche: error: ")
    assert "sigma" in line
    assert "experience 0" in line
