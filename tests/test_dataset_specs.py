"""The dataset specs (:mod:`bdr_avalanche.benchmarks.specs`) are the one home
of the facts about each dataset: the config resolves its defaults from them,
the checks enforce them, the stream builders default to them, there is one
class-split check with one message, and both input paths (torchvision
transforms, on-device ``BatchAugment``) follow one augmentation recipe."""

from __future__ import annotations

import dataclasses
import inspect
import re
import subprocess
import sys
from pathlib import Path

import fake_datasets as fake
import pytest
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import v2

from bdr_avalanche.benchmarks import (
    digits_class_sizes,
    split_cifar100,
    split_digits,
    split_imagefolder,
    split_imagenet,
)
from bdr_avalanche.benchmarks.specs import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    DATASETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    class_split,
    defaults_text,
)
from bdr_avalanche.benchmarks.transforms import (
    cifar100_transforms,
    imagenet_transforms,
    small_image_transforms,
    torchvision_transforms,
)
from bdr_avalanche.experiment.config import (
    BACKBONES,
    ConfigError,
    ExperimentConfig,
    config_keys,
)
from bdr_avalanche.experiment.config import DATASETS as CONFIG_DATASETS
from bdr_avalanche.experiment.factories import (
    build_batch_augment,
    build_benchmark,
    validate,
)
from bdr_avalanche.training.augment import BatchAugment

PACKAGE = Path(__file__).resolve().parents[1] / "bdr_avalanche"
MISSING = "/nonexistent/dataset"  # the checks of fixed-size datasets read nothing
SPLIT_MESSAGE = re.compile(
    r"n_base=(\d+), (n_phases|increment)=(\d+) do not split the (\d+) classes"
    r" of (\w+): n_base \+ n_phases \* increment must equal \4, with 0 <= "
    r"n_base < \4"
)
CUDA, CPU = torch.device("cuda"), torch.device("cpu")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """An image-folder tree of 10 classes, 3 training images each."""
    root = tmp_path_factory.mktemp("tree")
    fake.write_imagefolder(root, num_classes=10, train_per_class=3, size=8)
    return root


def config(name: str, tree: Path | None = None, **values) -> ExperimentConfig:
    """The resolved config of dataset ``name`` (the image folder: ``tree``,
    split 4 + 3 x 2 at 8 pixels, 2 exemplars a class)."""
    if name == "imagefolder":
        fit = {"n_base": 4, "n_phases": 3, "resolution": 8, "mem_per_class": 2}
        values = {**fit, **values}
    root = None if name == "digits" else str(tree or MISSING)
    return ExperimentConfig(dataset=name, dataset_root=root, **values).resolved()


# ---------------------------------------------------------------- defaults


def test_one_registry_of_names():
    assert CONFIG_DATASETS == tuple(DATASETS)
    assert all(spec.name == name for name, spec in DATASETS.items())
    for spec in DATASETS.values():
        for resolution in (32, 224):
            assert spec.default_backbone(resolution) in BACKBONES
        assert len(spec.recipe().mean) == spec.channels


@pytest.mark.parametrize("name", list(DATASETS))
def test_config_resolves_to_the_spec(name):
    spec = DATASETS[name]
    cfg = ExperimentConfig(
        dataset=name, dataset_root=None if name == "digits" else "x"
    ).resolved()
    assert (cfg.n_base, cfg.n_phases) == (spec.n_base, spec.n_phases)
    assert cfg.resolution == spec.resolution
    assert cfg.backbone == spec.default_backbone(cfg.resolution)
    if spec.backbone is None:  # by resolution
        small = ExperimentConfig(dataset=name, dataset_root="x", resolution=32)
        assert small.resolved().backbone == spec.default_backbone(32)
        assert spec.default_backbone(32) != spec.default_backbone(224)


def test_help_names_the_spec_defaults():
    """``--help`` says what the specs hold (the texts written out before)."""
    help_ = {key: spec.hparam.help for key, spec in config_keys().items()}
    assert defaults_text("n_base") == "4 digits, 50 cifar100/imagefolder, 500 imagenet"
    assert defaults_text("n_phases") == "3 digits, else 5"
    assert help_["dataset"] == (
        "digits (embedded, no download), cifar100, imagenet (ImageNet-1k, "
        "torchvision layout) or imagefolder (root/train/<class>/, "
        "root/val/<class>/: ImageNet-Subset, Tiny-ImageNet)"
    )
    assert help_["n_base"].endswith(
        "not for digits (default: 4 digits, 50 cifar100/imagefolder, 500 imagenet)"
    )
    assert help_["n_phases"].endswith("(default: 3 digits, else 5)")
    assert help_["resolution"] == (
        "image side for imagenet/imagefolder (default 224; e.g. 32 or 64)"
    )
    assert help_["fast_input"].endswith(
        "(default: on CUDA for digits, cifar100 and in_memory imagefolder)"
    )


def test_stream_builders_default_to_the_spec():
    for name, build in (
        ("cifar100", split_cifar100),
        ("imagenet", split_imagenet),
        ("imagefolder", split_imagefolder),
    ):
        spec, params = DATASETS[name], inspect.signature(build).parameters
        assert params["n_base"].default == spec.n_base
        assert params["n_phases"].default == spec.n_phases
        if "resolution" in params:
            assert params["resolution"].default == spec.resolution
    digits, params = DATASETS["digits"], inspect.signature(split_digits).parameters
    assert params["n_base"].default == digits.n_base
    assert params["increment"].default == digits.increment == 2
    assert digits.n_base + digits.n_phases * digits.increment == digits.classes


# ---------------------------------------------------------------- sizes


def test_sizes_are_the_documented_facts_or_counted(tree):
    assert DATASETS["cifar100"].sizes() == (100, 500)
    assert DATASETS["imagenet"].sizes() == (1000, 732)
    for seed in (1993, 0):
        counts = digits_class_sizes(seed)
        assert DATASETS["digits"].sizes(seed=seed) == (10, min(counts))
    assert DATASETS["imagefolder"].sizes(tree) == (10, 3)


@pytest.mark.parametrize("name", list(DATASETS))
def test_validate_bounds_the_memory_by_the_smallest_class(name, tree):
    spec = DATASETS[name]
    cfg = config(name, tree)
    _, smallest = spec.sizes(cfg.dataset_root, cfg.class_order_seed)
    validate(dataclasses.replace(cfg, mem_per_class=smallest))
    with pytest.raises(ConfigError) as err:
        validate(dataclasses.replace(cfg, mem_per_class=smallest + 1))
    assert f"smallest class of {name} has {smallest} training images" in str(err.value)


def test_digits_needs_base_classes():
    cfg = dataclasses.replace(config("digits"), n_base=0, n_phases=5)
    message = "n_base=0 is not allowed for digits; it must be >= 1"
    for check in (validate, build_benchmark):
        with pytest.raises(ConfigError, match=message):
            check(cfg)


# ---------------------------------------------------------------- class split


def test_the_class_split_check_is_written_once():
    sources = [
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if "do not split the" in path.read_text(encoding="utf-8")
    ]
    assert sources == ["benchmarks/specs.py"]


def _message(call, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as err:
        call(*args, **kwargs)
    return str(err.value)


def test_one_class_split_message(tree):
    """The config's checks, the factory and the stream builders give the same
    message for a split that does not tile the classes."""
    digits = dataclasses.replace(config("digits"), n_phases=4)
    cifar = dataclasses.replace(config("cifar100"), n_phases=7)
    imagenet = dataclasses.replace(config("imagenet"), n_phases=3)
    folder = dataclasses.replace(config("imagefolder", tree), n_base=5)
    expected = {
        "digits": _message(class_split, 10, 4, 4, dataset="digits"),
        "cifar100": _message(split_cifar100, MISSING, n_base=50, n_phases=7),
        "imagenet": _message(split_imagenet, MISSING, n_base=500, n_phases=3),
        "imagefolder": _message(split_imagefolder, tree, n_base=5, n_phases=3),
    }
    for cfg in (digits, cifar, imagenet, folder):
        assert _message(validate, cfg) == expected[cfg.dataset]
        if cfg.dataset != "imagefolder":  # counted when the tree is read
            assert _message(build_benchmark, cfg) == expected[cfg.dataset]
    increment = _message(split_digits, n_base=5, increment=3)
    for message in (*expected.values(), increment):
        assert SPLIT_MESSAGE.fullmatch(message), message
    assert (
        "n_base=4, n_phases=4 do not split the 10 classes of digits"
        in (expected["digits"])
    )
    assert increment.startswith("n_base=5, increment=3 do not split the 10 classes")


def test_class_split_gives_phases_and_increment():
    assert class_split(100, 50, 5) == (5, 10)
    assert class_split(100, 0, 10) == (10, 10)
    assert class_split(10, 4, increment=2) == (3, 2)
    with pytest.raises(ValueError, match="n_phases must be an integer >= 1"):
        class_split(100, 50, 0)
    with pytest.raises(ValueError, match="n_base must be an integer >= 0"):
        class_split(100, -1, 5)


# ---------------------------------------------------------------- memory


@pytest.mark.parametrize("name", list(DATASETS))
@pytest.mark.parametrize("in_memory", [False, True])
def test_fast_input_where_the_spec_holds_the_images(name, in_memory, tree):
    spec = DATASETS[name]
    fits = spec.fits_in_memory(in_memory)
    assert fits == (spec.in_memory if spec.in_memory is not None else in_memory)
    cfg = config(name, tree, in_memory=in_memory)
    assert (build_batch_augment(cfg, CUDA) is not None) == fits
    assert build_batch_augment(cfg, CPU) is None
    fast = dataclasses.replace(cfg, fast_input=True)
    if fits:
        validate(fast)
    else:
        with pytest.raises(ConfigError) as err:
            validate(fast)
        assert (
            "fast_input=true needs the images in memory: dataset cifar100, "
            "digits, or imagefolder with in_memory=true" in str(err.value)
        )


# ---------------------------------------------------------------- recipes


def test_transforms_are_those_of_the_papers():
    """The transforms derived from the recipes are those written out before
    the recipes existed (same steps, same arguments)."""
    normalize = transforms.Normalize(CIFAR100_MEAN, CIFAR100_STD)
    cifar = (
        transforms.Compose(
            [
                transforms.RandomCrop(32, padding=4),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                normalize,
            ]
        ),
        transforms.Compose([transforms.ToTensor(), normalize]),
    )
    assert repr(cifar100_transforms()) == repr(cifar)
    assert repr(torchvision_transforms(DATASETS["cifar100"].recipe())) == repr(cifar)
    for size in (224, 64):
        normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
        imagenet = (
            transforms.Compose(
                [
                    transforms.RandomResizedCrop(size),
                    transforms.RandomHorizontalFlip(),
                    transforms.ToTensor(),
                    normalize,
                ]
            ),
            transforms.Compose(
                [
                    transforms.Resize(round(size * 8 / 7)),
                    transforms.CenterCrop(size),
                    transforms.ToTensor(),
                    normalize,
                ]
            ),
        )
        assert repr(imagenet_transforms(size)) == repr(imagenet)
        assert repr(torchvision_transforms(DATASETS["imagenet"].recipe(size))) == (
            repr(imagenet)
        )
    assert repr(torchvision_transforms(DATASETS["imagefolder"].recipe(224))) == (
        repr(imagenet_transforms(224))
    )
    for size, from_pil in ((32, False), (64, True)):
        head = [v2.PILToTensor()] if from_pil else []
        tail = [
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
        crop = [v2.RandomCrop(size, padding=size // 8), v2.RandomHorizontalFlip()]
        small = (v2.Compose([*head, *crop, *tail]), v2.Compose([*head, *tail]))
        assert repr(small_image_transforms(size, from_pil)) == repr(small)
        recipe = DATASETS["imagefolder"].recipe(size, in_memory=not from_pil)
        assert repr(torchvision_transforms(recipe)) == repr(small)
    digits = (v2.RandomCrop(8, padding=1), None)
    assert repr(torchvision_transforms(DATASETS["digits"].recipe())) == repr(digits)


# the in-memory datasets: (name, resolution, what a pixel value spans)
IN_MEMORY = [
    ("digits", None, 1.0),
    ("cifar100", None, 255.0),
    ("imagefolder", 16, 255.0),
]


def _image(recipe) -> torch.Tensor:
    """A fixed image: uint8, or integer-valued floats for standardised data."""
    gen = torch.Generator().manual_seed(7)
    shape = (len(recipe.mean), recipe.size, recipe.size)
    if recipe.pixels == "standardised":
        return torch.randint(-60, 60, shape, generator=gen).float()
    return torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)


def _source(image: torch.Tensor, recipe):
    """``image`` as the torchvision transforms of ``recipe`` receive it."""
    if recipe.pixels in ("pil", "pil_uint8"):
        return Image.fromarray(image.permute(1, 2, 0).numpy())
    return image


def _pixels(out: torch.Tensor, recipe, span: float) -> torch.Tensor:
    """Normalised images back to (exact, integer) pixel values."""
    mean = torch.tensor(recipe.mean).view(-1, 1, 1)
    std = torch.tensor(recipe.std).view(-1, 1, 1)
    return ((out * std + mean) * span).round().long()


@pytest.mark.parametrize(("name", "resolution", "span"), IN_MEMORY)
def test_both_input_paths_normalise_alike(name, resolution, span):
    """Without the random crop and flip, the fast path's augmentation and
    the torchvision train and eval transforms give the same tensor."""
    spec = DATASETS[name]
    cfg = config(name, resolution=resolution, in_memory=True, fast_input=True)
    recipe = spec.recipe(cfg.resolution, in_memory=True)
    fast = build_batch_augment(cfg, CPU)
    reference = BatchAugment.from_recipe(recipe)
    assert (fast.padding, fast.resized_crop, fast.flip) == (
        reference.padding,
        reference.resized_crop,
        reference.flip,
    )
    assert torch.equal(fast.norm_scale, reference.norm_scale)
    assert torch.equal(fast.norm_shift, reference.norm_shift)
    image = _image(recipe)
    still = dataclasses.replace(recipe, padding=0, flip=0.0)
    train, _ = torchvision_transforms(still)
    expected = train(_source(image, still))
    out = BatchAugment.from_recipe(still)(image[None])[0]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    _, evaluate = torchvision_transforms(recipe)
    expected = image if evaluate is None else evaluate(_source(image, recipe))
    out = BatchAugment.from_recipe(recipe, train=False)(image[None])[0]
    torch.testing.assert_close(out, expected.float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("name", "resolution", "span"), IN_MEMORY)
def test_both_input_paths_draw_the_same_crops_and_flips(name, resolution, span):
    """Over many draws, the fast path and the torchvision train transform
    give the same set of images: every padded crop offset, flipped or not
    as the recipe says, and nothing else."""
    recipe = DATASETS[name].recipe(resolution, in_memory=True)
    image = _image(recipe)
    flips = 2 if recipe.flip else 1
    outcomes = (2 * recipe.padding + 1) ** 2 * flips
    draws = 25 * outcomes
    fast = BatchAugment.from_recipe(recipe, generator=torch.Generator().manual_seed(0))
    batch = image[None].expand(draws, *image.shape).contiguous()
    ours = {tuple(_pixels(x, recipe, span).flatten().tolist()) for x in fast(batch)}
    train, _ = torchvision_transforms(recipe)
    source = _source(image, recipe)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = {
            tuple(_pixels(train(source).float(), recipe, span).flatten().tolist())
            for _ in range(draws)
        }
    assert len(ours) == len(theirs) == outcomes
    assert ours == theirs


# ---------------------------------------------------------------- imports


@pytest.mark.system
def test_specs_import_neither_torch_nor_avalanche():
    code = (
        "import sys, bdr_avalanche.benchmarks, bdr_avalanche.benchmarks.specs\n"
        "print(','.join(m for m in ('torch', 'avalanche') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == ""
