"""The in-memory, on-device input path gives what the DataLoader path gives;
mixed precision and channels-last switches of the LUCIR strategy."""

from __future__ import annotations

import fake_datasets as fake
import pytest
import torch
from avalanche.training.determinism.rng_manager import RNGManager
from helpers import make_tiny_lucir
from probe import Probe
from torch import nn
from torchvision.transforms import functional as TF

from bdr_avalanche import LUCIR
from bdr_avalanche.benchmarks import cifar100_transforms, split_cifar100
from bdr_avalanche.experiment.config import ExperimentConfig
from bdr_avalanche.experiment.factories import build_batch_augment, num_workers
from bdr_avalanche.plugins.guard import step_loss_terms
from bdr_avalanche.training import Speed
from bdr_avalanche.training.augment import BatchAugment
from bdr_avalanche.training.fast_input import DeviceBatchLoader, stack_untransformed


def test_every_sample_once_per_epoch():
    images = torch.arange(10, dtype=torch.float32).view(10, 1, 1, 1)
    labels = torch.arange(10)
    loader = DeviceBatchLoader(
        images, labels, torch.zeros(10, dtype=torch.long), 4, nn.Identity(), "cpu"
    )
    assert len(loader) == 3
    for _ in range(3):
        batches = list(loader)
        assert [len(b[1]) for b in batches] == [4, 4, 2]
        seen = torch.cat([b[1] for b in batches])
        assert sorted(seen.tolist()) == list(range(10))
        for x, y, t in batches:  # images stay with their labels
            assert torch.equal(x.view(-1), y.float())
            assert torch.equal(t, torch.zeros_like(t))
    orders = {tuple(torch.cat([b[1] for b in loader]).tolist()) for _ in range(5)}
    assert len(orders) > 1  # shuffled
    loader.drop_last = True
    assert len(loader) == len(list(loader)) == 2


def test_untransformed_cifar_images_are_the_stored_uint8_pixels(tmp_path):
    fake.write_cifar100(tmp_path, train_per_class=2, test_per_class=1)
    bench = split_cifar100(tmp_path, n_base=50, n_phases=5)
    dataset = bench.train_stream[0].dataset
    images, labels, tasks = stack_untransformed(dataset)
    assert images.dtype == torch.uint8 and images.shape == (100, 3, 32, 32)
    raw = dataset.replace_current_transform_group(None)
    for i in (0, 57, 99):
        image, label = raw[i][0], raw[i][1]
        assert torch.equal(images[i], TF.pil_to_tensor(image))
        assert labels[i] == label
    # with no randomness, the batch recipe equals the torchvision eval
    # transform of the same images
    _, evaluate = cifar100_transforms()
    expected = torch.stack([evaluate(raw[i][0]) for i in range(8)])
    augment = BatchAugment.cifar(padding=0)
    augment.flip = 0.0
    torch.testing.assert_close(augment(images[:8]), expected, atol=1e-5, rtol=1e-5)


def test_digits_recipe_crops_inside_the_padded_image(digits_benchmark):
    dataset = digits_benchmark.train_stream[0].dataset
    images, _, _ = stack_untransformed(dataset)
    assert images.dtype == torch.float32
    augment = build_batch_augment(
        ExperimentConfig(fast_input=True), torch.device("cpu")
    )
    out = augment(images)
    assert out.shape == images.shape
    # every output row is a one-pixel shift of its image, padded with 0
    padded = nn.functional.pad(images, (1, 1, 1, 1))
    shifts = [padded[..., i : i + 8, j : j + 8] for i in range(3) for j in range(3)]
    matches = torch.stack([(out == s).flatten(1).all(1) for s in shifts])
    assert matches.any(0).all()
    assert matches[4].float().mean() < 0.5  # not all unshifted


def make_lucir(speed: Speed | None = None, **kwargs) -> LUCIR:
    """A tiny LUCIR of 2 epochs, seeded with 0, that checks every step's loss."""
    RNGManager.set_random_seeds(0)
    return make_tiny_lucir(epochs=2, speed=speed, finite_check_every=1, **kwargs)


def test_lucir_trains_identically_on_both_input_paths(benchmark):
    """Without shuffling and with the identity augmentation (the benchmark's
    transform is the identity), the device loader feeds the same batches:
    memory included, the trained weights are the same. (The generators are
    re-seeded before each experience because a DataLoader draws a seed from
    the global generator at every epoch, shuffled or not, which would give
    the next experience's new head rows another initialisation.)"""
    identity = BatchAugment((0.0,) * 3, (1.0,) * 3)  # float input: x * 1 + 0
    plain = make_lucir(cwd=True, bdr=True)
    for t, experience in enumerate(benchmark.train_stream):
        RNGManager.set_random_seeds(t)
        plain.train(experience, shuffle=False)
    loaders = []
    probe = Probe(before_training_epoch=lambda s: loaders.append(type(s.dataloader)))
    fast = make_lucir(
        Speed(batch_augment=identity), cwd=True, bdr=True, plugins=[probe]
    )
    for t, experience in enumerate(benchmark.train_stream):
        RNGManager.set_random_seeds(t)
        fast.train(experience, shuffle=False)
    assert set(loaders) == {DeviceBatchLoader}
    for (name, a), b in zip(
        plain.model.state_dict().items(), fast.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)
    for cls in plain.storage_policy.seen_classes:
        assert torch.equal(
            plain.storage_policy.class_indices[cls],
            fast.storage_policy.class_indices[cls],
        )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_amp_forward_gives_float32_logits(benchmark, dtype):
    dtypes = set()

    def record(strategy):
        dtypes.add(strategy.mb_output.dtype)
        dtypes.add(strategy.model.backbone(strategy.mb_x).dtype)

    def record_under_autocast(strategy):
        with strategy.autocast():
            record(strategy)

    probe = Probe(after_forward=record_under_autocast)
    strategy = make_lucir(Speed(amp_dtype=dtype), cwd=True, bdr=True, plugins=[probe])
    for experience in benchmark.train_stream:
        strategy.train(experience)
    assert dtypes == {torch.float32, dtype}  # half features, float32 logits
    terms = step_loss_terms(strategy).values()
    assert all(torch.isfinite(t).all() for t in terms)


def test_channels_last_model_and_batches(benchmark):
    identity = BatchAugment((0.0,) * 3, (1.0,) * 3)
    formats = []
    probe = Probe(
        before_forward=lambda s: formats.append(
            s.mb_x.is_contiguous(memory_format=torch.channels_last)
        )
    )
    strategy = make_lucir(
        Speed(channels_last=True, batch_augment=identity), plugins=[probe]
    )
    strategy.train(benchmark.train_stream[0])
    conv = next(m for m in strategy.model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert formats and all(formats)


def test_amp_dtype_must_be_floating():
    with pytest.raises(ValueError, match="amp_dtype"):
        make_lucir(Speed(amp_dtype=torch.int8))


def test_fast_input_default_is_cuda_with_in_memory_data():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert build_batch_augment(ExperimentConfig(), cpu) is None
    assert build_batch_augment(ExperimentConfig(), cuda) is not None
    cifar = ExperimentConfig(dataset="cifar100", dataset_root="x").resolved()
    assert build_batch_augment(cifar, cuda).padding == 4
    lazy = ExperimentConfig(dataset="imagefolder", dataset_root="x").resolved()
    assert build_batch_augment(lazy, cuda) is None
    small = ExperimentConfig(
        dataset="imagefolder", dataset_root="x", resolution=64, in_memory=True
    ).resolved()
    assert build_batch_augment(small, cuda).padding == 8


def test_worker_default_feeds_a_gpu_only_on_the_dataloader_path(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    auto = ExperimentConfig()
    assert num_workers(auto, cuda, fast=False) == 8
    assert num_workers(auto, cuda, fast=True) == 0
    assert num_workers(auto, cpu, fast=False) == 0
    assert num_workers(ExperimentConfig(num_workers=3), cuda, fast=True) == 3
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert num_workers(auto, cuda, fast=False) == 2
    monkeypatch.setattr("os.cpu_count", lambda: 24)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun, 4 processes a node
    assert num_workers(auto, cuda, fast=False) == 6
