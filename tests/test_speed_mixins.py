"""The speed mixins (bdr_avalanche.training) on Avalanche's baselines: the
fast input path feeds what the DataLoader path feeds, replay's memory
reaches the device batches, autocast and channels-last reach the model,
and the baselines whose own loops prevent the fast path are refused."""

from __future__ import annotations

import pytest
import torch
from avalanche.training import Naive
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import ReplayPlugin, SupervisedPlugin
from probe import Probe
from torch import nn
from torch.utils.data import DataLoader

from bdr_avalanche.baselines import BASELINES, make_baseline
from bdr_avalanche.baselines.templates import FastNaive, with_speed
from bdr_avalanche.experiment.cli import main
from bdr_avalanche.experiment.config import ConfigError, ExperimentConfig
from bdr_avalanche.experiment.factories import (
    amp_dtype,
    build_batch_augment,
    validate,
)
from bdr_avalanche.models import SmallCNN
from bdr_avalanche.params import TrainingParams
from bdr_avalanche.protocol import make_evaluator
from bdr_avalanche.training import Speed, SpeedMixin
from bdr_avalanche.training.augment import BatchAugment
from bdr_avalanche.training.fast_input import (
    DeviceBatchLoader,
    DeviceMultiLoader,
    stack_untransformed,
)
from bdr_avalanche.training.support import UNSUPPORTED, unsupported

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def identity() -> BatchAugment:
    """No crop, no flip, mean 0, std 1: float input in, the same out."""
    return BatchAugment((0.0,) * 3, (1.0,) * 3)


def baseline(name: str, speed: Speed | None = None, plugins=(), **kwargs):
    RNGManager.set_random_seeds(0)
    return make_baseline(
        name,
        backbone=SmallCNN(in_channels=3, width=8),
        num_classes=6,
        training=TrainingParams(
            mem_per_class=5,
            lr=0.05,
            milestones=[100],
            batch_size=16,
            epochs=2,
            eval_batch_size=64,
        ),
        device="cpu",
        evaluator=make_evaluator(),
        plugins=plugins,
        speed=speed,
        **kwargs,
    )


def train(strategy, stream, **kwargs) -> None:
    """Train on ``stream`` in order, the generators re-seeded before each
    experience (a DataLoader draws a seed from the global generator at every
    epoch, which would give the next head rows other initial weights)."""
    for t, experience in enumerate(stream):
        RNGManager.set_random_seeds(t)
        strategy.train(experience, eval_streams=[], **kwargs)


def test_naive_trains_identically_on_both_input_paths(benchmark):
    """Without shuffling and with the identity augmentation, the device
    loader feeds the batches the DataLoader feeds: same weights."""
    plain = baseline("naive")
    assert type(plain) is Naive
    train(plain, benchmark.train_stream, shuffle=False)
    loaders = []
    probe = Probe(before_training_epoch=lambda s: loaders.append(type(s.dataloader)))
    fast = baseline("naive", Speed(batch_augment=identity()), plugins=[probe])
    assert isinstance(fast, FastNaive) and isinstance(fast, Naive)
    train(fast, benchmark.train_stream, shuffle=False)
    assert set(loaders) == {DeviceBatchLoader}
    for (name, a), b in zip(
        plain.model.state_dict().items(), fast.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)


class Batches(SupervisedPlugin):
    """Per step: the loader's type, the batch's size, the old-class rows."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[tuple[str, int, int]] = []
        self.old_rows: list[torch.Tensor] = []

    def before_forward(self, strategy, **kwargs):
        if strategy.clock.train_exp_counter == 0:
            return
        old = strategy.mb_y < 2  # experience 0's classes
        self.steps.append(
            (type(strategy.dataloader).__name__, len(strategy.mb_y), int(old.sum()))
        )
        self.old_rows.append(strategy.mb_x[old])


def test_replay_sees_its_memory_in_device_batches(benchmark):
    """Replay's loader (``train_mb_size`` new samples and ``batch_size_mem``
    memory samples per step) runs on the device: the same steps and batch
    composition as Avalanche's ReplayDataLoader, the memory rows being the
    buffer's images."""
    stream = benchmark.train_stream[:2]
    plain_steps, fast_steps = Batches(), Batches()
    plain = baseline("replay", plugins=[plain_steps])
    train(plain, stream)
    fast = baseline("replay", Speed(batch_augment=identity()), plugins=[fast_steps])
    train(fast, stream)
    assert {s[0] for s in plain_steps.steps} == {"ReplayDataLoader"}
    assert {s[0] for s in fast_steps.steps} == {"DeviceMultiLoader"}
    # 2 epochs x ceil(60 / 16) steps, each with the whole memory (10 < 16)
    assert [s[1:] for s in fast_steps.steps] == [s[1:] for s in plain_steps.steps]
    assert all(old == 10 for _, _, old in fast_steps.steps)
    replay = next(p for p in fast.plugins if isinstance(p, ReplayPlugin))
    stored, labels, _ = stack_untransformed(replay.storage_policy.buffer)
    memory = stored[labels < 2].flatten(1)
    for rows in fast_steps.old_rows:
        # every old-class row is one of the memory's images
        match = (rows.flatten(1)[:, None] == memory[None]).all(-1)
        assert match.any(1).all()


def test_device_multi_loader_cycles_the_smaller_loader():
    def loader(n, batch, start):
        images = torch.arange(start, start + n, dtype=torch.float32).view(n, 1, 1, 1)
        labels = torch.arange(start, start + n)
        tasks = torch.zeros(n, dtype=torch.long)
        return DeviceBatchLoader(images, labels, tasks, batch, nn.Identity(), "cpu")

    data, memory = loader(10, 4, 0), loader(3, 2, 100)
    multi = DeviceMultiLoader([data, memory], termination=0, oversample=True)
    batches = list(multi)
    assert len(multi) == len(batches) == 3
    assert sorted(torch.cat([b[1][b[1] < 100] for b in batches]).tolist()) == list(
        range(10)
    )
    assert [int((b[1] >= 100).sum()) for b in batches] == [2, 1, 2]
    for x, y, _ in batches:
        assert torch.equal(x.view(-1), y.float())
    once = list(DeviceMultiLoader([data, memory], oversample=False))
    assert [int((b[1] >= 100).sum()) for b in once] == [2, 1, 0]


def test_autocast_bf16_runs_the_forward_under_autocast(benchmark):
    dtypes: dict[str, set] = {"conv": set(), "logits": set(), "loss": set()}
    probe = Probe(
        after_forward=lambda s: dtypes["logits"].add(s.mb_output.dtype),
        before_backward=lambda s: dtypes["loss"].add(s.loss.dtype),
    )
    strategy = baseline("replay", Speed(amp_dtype=torch.bfloat16), plugins=[probe])
    conv = next(m for m in strategy.model.modules() if isinstance(m, nn.Conv2d))
    conv.register_forward_hook(lambda m, i, o: dtypes["conv"].add(o.dtype))
    train(strategy, benchmark.train_stream[:2])
    assert dtypes == {
        "conv": {torch.bfloat16},
        "logits": {torch.float32},
        "loss": {torch.float32},
    }
    dtypes["conv"].clear()
    strategy.eval(benchmark.test_stream[:1])
    assert dtypes["conv"] == {torch.bfloat16}


def test_channels_last_model_and_device_batches(benchmark):
    formats = set()
    probe = Probe(
        before_forward=lambda s: formats.add(
            s.mb_x.is_contiguous(memory_format=torch.channels_last)
        )
    )
    speed = Speed(batch_augment=identity(), channels_last=True)
    strategy = baseline("replay", speed, plugins=[probe])
    convs = [m for m in strategy.model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    train(strategy, benchmark.train_stream[:2])  # memory batches in experience 1
    assert formats == {True}
    # the optimizer still holds the model's parameters
    params = {id(p) for g in strategy.optimizer.param_groups for p in g["params"]}
    assert {id(p) for p in strategy.model.parameters()} <= params


def _speed_for(name: str) -> Speed:
    """Every switch the baseline takes (compile aside: slow on CPU)."""
    fast = unsupported(name, "fast_input") is None
    amp = unsupported(name, "amp") is None
    return Speed(
        batch_augment=identity() if fast else None,
        amp_dtype=torch.bfloat16 if amp else None,
        channels_last=True,
    )


@pytest.mark.parametrize("name", BASELINES)
def test_every_baseline_trains_with_the_switches_it_takes(benchmark, name):
    hparams = {"stage_2_epochs": 2} if name == "bic" else None
    loaders = set()
    probe = Probe(before_training_epoch=lambda s: loaders.add(type(s.dataloader)))
    strategy = baseline(name, _speed_for(name), plugins=[probe], hparams=hparams)
    assert isinstance(strategy, SpeedMixin)
    train(strategy, benchmark.train_stream[:2])
    results = strategy.eval(benchmark.test_stream[:2])
    accuracy = results["Top1_Acc_Stream/eval_phase/test_stream/Task000"]
    assert 0.0 <= accuracy <= 1.0
    on_device = loaders <= {DeviceBatchLoader, DeviceMultiLoader}
    assert on_device == (name not in UNSUPPORTED)


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_fast_input_refused_where_the_baseline_loop_prevents_it(name):
    reason = UNSUPPORTED[name]["fast_input"]
    with pytest.raises(ValueError, match="cannot take fast_input") as err:
        baseline(name, Speed(batch_augment=identity()))
    assert reason in str(err.value)
    # explicit in a config: one line naming the method and the reason
    with pytest.raises(ConfigError) as err:
        validate(ExperimentConfig(method=name, fast_input=True).resolved())
    message = str(err.value)
    assert "\n" not in message and repr(name) in message and reason in message
    # left to auto: the DataLoader path (and full precision for BiC)
    auto = ExperimentConfig(method=name).resolved()
    assert build_batch_augment(auto, CUDA) is None
    takes_amp = "amp" not in UNSUPPORTED[name]
    assert amp_dtype(auto, CUDA) == (torch.bfloat16 if takes_amp else None)


def test_bic_refuses_autocast():
    reason = UNSUPPORTED["bic"]["amp"]
    with pytest.raises(ValueError, match="cannot take amp"):
        baseline("bic", Speed(amp_dtype=torch.bfloat16))
    with pytest.raises(ConfigError, match="amp=bf16 is not available") as err:
        validate(ExperimentConfig(method="bic", amp="bf16").resolved())
    assert reason in str(err.value)


@pytest.mark.parametrize("name", ["naive", "replay", "lwf", "gdumb"])
def test_fast_input_by_default_on_cuda_for_the_baselines_that_take_it(name):
    cfg = ExperimentConfig(method=name).resolved()
    validate(ExperimentConfig(method=name, fast_input=True).resolved())
    assert build_batch_augment(cfg, CUDA) is not None
    assert build_batch_augment(cfg, CPU) is None


def test_a_plugin_swapping_in_another_loader_is_refused(benchmark):
    class PlainLoader(SupervisedPlugin):
        def before_training_exp(self, strategy, **kwargs):
            strategy.dataloader = DataLoader(strategy.adapted_dataset, batch_size=4)

    strategy = baseline("naive", Speed(batch_augment=identity()), [PlainLoader()])
    with pytest.raises(TypeError, match="DataLoader, whose batches would bypass"):
        strategy.train(benchmark.train_stream[0])


def test_with_speed_names_the_mixin_for_other_templates():
    assert with_speed(Naive) is FastNaive
    with pytest.raises(ValueError, match="SpeedMixin"):
        with_speed(SpeedMixin)


@pytest.mark.integration
def test_cli_naive_with_fast_input_and_bf16(tmp_path):
    status = main(
        [
            "run",
            "--method",
            "naive",
            "--fast_input",
            "true",
            "--amp",
            "bf16",
            "--epochs",
            "1",
            "--batch_size",
            "64",
            "--width",
            "8",
            "--output_dir",
            str(tmp_path),
            "--name",
            "fast_naive",
            "--interactive",
            "false",
            "--save_models",
            "false",
        ]
    )
    assert status == 0
    assert (tmp_path / "fast_naive" / "results.json").is_file()
