"""One spec per dataset: the facts about a dataset that the config, the
command line, the checks and the stream builders read.

A :class:`DatasetSpec` holds a dataset's classes and the training images of
its smallest class (or how to count them), its default protocol
(``n_base``, ``n_phases``, backbone, resolution), its channels, whether its
images are held in memory, the function that builds its stream and its
augmentation :class:`Recipe`. Both input paths are derived from that one
recipe: the torchvision transforms of the DataLoader path
(:func:`~bdr_avalanche.benchmarks.transforms.torchvision_transforms`) and
the on-device :class:`~bdr_avalanche.training.augment.BatchAugment` of the fast path
(:meth:`~bdr_avalanche.training.augment.BatchAugment.from_recipe`). :func:`class_split`
is the one check that ``n_base`` and ``n_phases`` split a dataset's classes.

This module imports neither torch nor Avalanche, so that the config and the
command line's ``--help`` can read it: the stream builders and the class
counters are named here (:class:`Lazy`) and imported on first call.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._checks import check_positive_int

__all__ = [
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "DATASETS",
    "ICARL_SEED",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PIXELS",
    "DatasetSpec",
    "Lazy",
    "Recipe",
    "class_split",
    "defaults_text",
    "help_texts",
    "imagenet_recipe",
    "in_memory_datasets",
    "small_image_recipe",
]

ICARL_SEED = 1993
"""Seed of the iCaRL class order used by LUCIR, CwD and BDR."""

CIFAR100_MEAN = (0.5071, 0.4866, 0.4409)
CIFAR100_STD = (0.2009, 0.1984, 0.2023)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SMALL_BACKBONE, LARGE_BACKBONE, LARGE_FROM = "resnet18_cifar", "resnet18_imagenet", 128
"""The backbone of a dataset whose images are resized: the ImageNet ResNet-18
from ``LARGE_FROM`` pixels on, else the CIFAR one."""

PIXELS = {
    "pil": "PIL images: torchvision.transforms, then ToTensor and Normalize",
    "pil_uint8": "PIL images, made uint8 tensors first (v2.PILToTensor)",
    "uint8": "uint8 tensors: transforms.v2, then ToDtype(scale=True), Normalize",
    "standardised": "float tensors already normalised: the crop only",
}
"""What the torchvision transforms of a :class:`Recipe` receive."""


# ---------------------------------------------------------------- recipes


@dataclass(frozen=True)
class Recipe:
    """How a dataset's images are augmented for training and normalised.

    Training: ``RandomCrop(size, padding)`` when ``padding`` is set (zero
    padding), else ``RandomResizedCrop(size)``; a horizontal flip with
    probability ``flip`` (none at 0); then scaling to [0, 1] and
    ``Normalize(mean, std)``. Evaluation: the scaling and normalisation,
    after ``Resize(eval_resize)`` and ``CenterCrop(size)`` for the resized
    crop. ``pixels`` (a key of :data:`PIXELS`) says what the torchvision
    transforms receive; the fast path always gets the stacked tensors.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: int
    padding: int | None = None
    flip: float = 0.5
    pixels: str = "pil"

    def __post_init__(self) -> None:
        check_positive_int("size", self.size)
        if self.padding is not None:
            check_positive_int("padding", self.padding, minimum=0)
        if len(self.mean) != len(self.std):
            raise ValueError("mean and std need one value per channel each")
        if self.pixels not in PIXELS:
            raise ValueError(f"pixels must be one of {', '.join(PIXELS)}")

    @property
    def eval_resize(self) -> int | None:
        """Side the eval images are resized to before the centre crop (the
        resized crop only: 256 for 224)."""
        return None if self.padding is not None else round(self.size * 8 / 7)


def imagenet_recipe(resolution: int = 224) -> Recipe:
    """ImageNet's: RandomResizedCrop + flip; Resize(8/7) + CenterCrop."""
    check_positive_int("resolution", resolution)
    return Recipe(IMAGENET_MEAN, IMAGENET_STD, size=resolution)


def small_image_recipe(resolution: int, pixels: str = "uint8") -> Recipe:
    """Small ImageNet-derived images (Tiny-ImageNet at 32 or 64 pixels):
    the CIFAR recipe, padding ``resolution // 8``, ImageNet's normalisation."""
    check_positive_int("resolution", resolution)
    return Recipe(
        IMAGENET_MEAN,
        IMAGENET_STD,
        size=resolution,
        padding=resolution // 8,
        pixels=pixels,
    )


def _digits_recipe(resolution: int | None, in_memory: bool) -> Recipe:
    # standardised floats shifted by up to one pixel; digits are not flipped
    return Recipe((0.0,), (1.0,), 8, padding=1, flip=0.0, pixels="standardised")


def _cifar100_recipe(resolution: int | None, in_memory: bool) -> Recipe:
    return Recipe(CIFAR100_MEAN, CIFAR100_STD, 32, padding=4)  # LUCIR/BDR's


def _imagenet_recipe(resolution: int, in_memory: bool) -> Recipe:
    return imagenet_recipe(resolution)


def _imagefolder_recipe(resolution: int, in_memory: bool) -> Recipe:
    shrink_below = DATASETS["imagefolder"].shrink_below
    assert shrink_below is not None  # its spec below sets it
    if resolution >= shrink_below:
        return imagenet_recipe(resolution)
    return small_image_recipe(resolution, "uint8" if in_memory else "pil_uint8")


# ---------------------------------------------------------------- specs


@dataclass(frozen=True)
class Lazy:
    """A function of a module of this package (``".digits:split_digits"``),
    imported on first call, and the keyword options it takes: a call passes
    those of the options offered."""

    target: str
    options: tuple[str, ...]

    def __call__(self, **offered: Any) -> Any:
        module, name = self.target.split(":")
        function = getattr(importlib.import_module(module, __package__), name)
        return function(**{key: offered[key] for key in self.options})


@dataclass(frozen=True)
class DatasetSpec:
    """The facts about one dataset (see the module)."""

    name: str
    about: str
    """What ``--help`` says of it, after its name ("" for nothing)."""
    classes: int | None
    """Number of classes; ``None``: counted from the tree."""
    smallest_class: int | None
    """Training images of the smallest class; ``None``: counted."""
    n_base: int
    n_phases: int
    backbone: str | None
    """Default backbone; ``None``: by resolution (:meth:`default_backbone`)."""
    channels: int
    resolution: int | None
    """Default image side; ``None``: fixed, ``resolution`` does not apply."""
    in_memory: bool | None
    """Held in memory: always, never, or ``None``: with ``in_memory=true``."""
    stream: Lazy
    """Builds the stream, offered ``dataset_root``, ``n_base``,
    ``n_phases``, ``increment``, ``seed``, ``resolution``, ``in_memory``
    and ``download``."""
    augmentation: Callable[[Any, bool], Recipe]
    """``(resolution, in_memory) -> Recipe``; see :meth:`recipe`."""
    class_sizes: Lazy | None = None
    """Training images per class (a list or a dict), offered
    ``dataset_root`` and ``seed``; for the sizes that are counted."""
    shrink_below: int | None = None
    """Below this resolution images are shrunk when loaded and augmented
    like CIFAR's, and may be held in memory (``None``: not resized)."""
    min_n_base: int = 0
    """The fewest base classes its stream builder takes (digits: 1, no B0)."""
    builtin: bool = False
    """Shipped with the package: needs no ``dataset_root``."""

    @property
    def increment(self) -> int | None:
        """Classes per phase of the default split (``None``: counted)."""
        if self.classes is None:
            return None
        return class_split(self.classes, self.n_base, self.n_phases)[1]

    def recipe(self, resolution: int | None = None, in_memory: bool = False) -> Recipe:
        """The augmentation at ``resolution`` (default: :attr:`resolution`)."""
        if resolution is None:
            resolution = self.resolution
        return self.augmentation(resolution, in_memory)

    def fits_in_memory(self, in_memory: bool = False) -> bool:
        """Whether the images are held in memory, given ``in_memory``."""
        return in_memory if self.in_memory is None else self.in_memory

    def default_backbone(self, resolution: int | None = None) -> str:
        """The backbone a config gets by default at ``resolution``."""
        if self.backbone is not None:
            return self.backbone
        if resolution is None:
            resolution = self.resolution
        # a spec without a default backbone has a default resolution
        assert resolution is not None
        return LARGE_BACKBONE if resolution >= LARGE_FROM else SMALL_BACKBONE

    def sizes(
        self, dataset_root: Any = None, seed: int = ICARL_SEED
    ) -> tuple[int, int]:
        """``(classes, training images of the smallest class)``: the
        documented facts, or counted (from the tree at ``dataset_root``, or
        from the split that ``seed`` draws) without loading any image."""
        if self.smallest_class is not None and self.classes is not None:
            return self.classes, self.smallest_class
        assert self.class_sizes is not None  # a spec that counts names a counter
        counts = self.class_sizes(dataset_root=dataset_root, seed=seed)
        counts = list(counts.values() if isinstance(counts, dict) else counts)
        return len(counts), min(counts)

    def split(self, n_base: int, n_phases: int, classes: int | None = None) -> int:
        """The classes per phase; raises :func:`class_split`'s ``ValueError``."""
        if classes is None:
            classes = self.classes
        if classes is None:
            raise TypeError(
                f"{self.name}'s classes are counted: pass classes (from sizes())"
            )
        return class_split(classes, n_base, n_phases, dataset=self.name)[1]

    def check_n_base(self, n_base: int) -> None:
        """``ValueError`` if the dataset needs more base classes."""
        if n_base < self.min_n_base:
            raise ValueError(
                f"n_base={n_base} is not allowed for {self.name}; it must be "
                f">= {self.min_n_base}"
            )


def class_split(
    num_classes: int,
    n_base: int,
    n_phases: int | None = None,
    *,
    increment: int | None = None,
    dataset: str | None = None,
) -> tuple[int, int]:
    """``(n_phases, increment)`` of ``n_base`` classes then ``n_phases``
    phases of ``increment`` classes that add up to ``num_classes``; give
    ``n_phases`` or ``increment``. ``n_base=0`` (the "B0" protocol) is
    ``n_phases`` equal phases from the start.

    The one check of a class split: every stream builder and the config's
    checks call it. Raises ``ValueError`` with one message, naming the
    values given and ``dataset`` when given.
    """
    check_positive_int("n_base", n_base, minimum=0)
    if (n_phases is None) == (increment is None):
        raise TypeError("give n_phases or increment")
    given, step = (
        ("n_phases", n_phases) if increment is None else ("increment", increment)
    )
    assert step is not None  # exactly one of the two is given (checked above)
    check_positive_int(given, step)
    rest = num_classes - n_base
    if rest <= 0 or rest % step:
        of = f" of {dataset}" if dataset else ""
        raise ValueError(
            f"n_base={n_base}, {given}={step} do not split the {num_classes} "
            f"classes{of}: n_base + n_phases * increment must equal {num_classes}, "
            f"with 0 <= n_base < {num_classes}"
        )
    return (step, rest // step) if increment is None else (rest // step, step)


_STREAM = ("dataset_root", "n_base", "n_phases", "seed")

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="digits",
            about="embedded, no download",
            builtin=True,
            classes=10,
            smallest_class=None,  # counted from the split its seed draws
            n_base=4,
            n_phases=3,
            backbone="small_cnn",
            channels=1,
            resolution=None,  # 8x8
            in_memory=True,
            stream=Lazy(".digits:split_digits", ("n_base", "increment", "seed")),
            augmentation=_digits_recipe,
            class_sizes=Lazy(".digits:digits_class_sizes", ("seed",)),
            min_n_base=1,
        ),
        DatasetSpec(
            name="cifar100",
            about="",
            classes=100,
            smallest_class=500,
            n_base=50,
            n_phases=5,
            backbone="resnet18_cifar",
            channels=3,
            resolution=None,  # 32x32
            in_memory=True,
            stream=Lazy(".cifar:split_cifar100", (*_STREAM, "download")),
            augmentation=_cifar100_recipe,
        ),
        DatasetSpec(
            name="imagenet",
            about="ImageNet-1k, torchvision layout",
            classes=1000,
            smallest_class=732,  # ImageNet-1k's classes have 732 to 1300 images
            n_base=500,
            n_phases=5,
            backbone="resnet18_imagenet",
            channels=3,
            resolution=224,
            in_memory=False,
            stream=Lazy(".imagenet:split_imagenet", (*_STREAM, "resolution")),
            augmentation=_imagenet_recipe,
        ),
        DatasetSpec(
            name="imagefolder",
            about="root/train/<class>/, root/val/<class>/: ImageNet-Subset, "
            "Tiny-ImageNet",
            classes=None,
            smallest_class=None,
            n_base=50,
            n_phases=5,
            backbone=None,
            channels=3,
            resolution=224,
            in_memory=None,
            stream=Lazy(
                ".imagefolder:split_imagefolder", (*_STREAM, "resolution", "in_memory")
            ),
            augmentation=_imagefolder_recipe,
            class_sizes=Lazy(".imagefolder:imagefolder_class_sizes", ("dataset_root",)),
            shrink_below=224,
        ),
    )
}
"""The datasets, by name, in the order ``--help`` lists them."""


# ---------------------------------------------------------------- texts


def defaults_text(key: str) -> str:
    """The datasets' defaults of the attribute ``key``, for ``--help``:
    ``"4 digits, 50 cifar100/imagefolder, 500 imagenet"``; a value shared by
    more than half the datasets comes last, as ``else``."""
    groups: dict[Any, list[str]] = {}
    for spec in DATASETS.values():
        groups.setdefault(getattr(spec, key), []).append(spec.name)
    common = max(groups, key=lambda value: len(groups[value]))
    rest = len(groups) > 1 and 2 * len(groups[common]) > len(DATASETS)
    parts = [
        f"{value} {'/'.join(names)}"
        for value, names in groups.items()
        if not (rest and value == common)
    ]
    return ", ".join([*parts, f"else {common}"] if rest else parts)


def help_texts() -> dict[str, str]:
    """The facts ``--help`` names, as text: ``datasets`` (each with its
    :attr:`~DatasetSpec.about`), ``n_base`` and ``n_phases`` (their
    :func:`defaults_text`), ``no_b0`` (those that need ``n_base >= 1``),
    ``resized`` and ``resolution`` (the datasets whose images are resized,
    and their default side), ``in_memory`` (those held in memory)."""
    named = [
        f"{spec.name} ({spec.about})" if spec.about else spec.name
        for spec in DATASETS.values()
    ]
    resized = [spec for spec in DATASETS.values() if spec.resolution is not None]
    always, optional = in_memory_datasets()
    return {
        "datasets": ", ".join(named[:-1]) + " or " + named[-1],
        "n_base": defaults_text("n_base"),
        "n_phases": defaults_text("n_phases"),
        "no_b0": "/".join(s.name for s in DATASETS.values() if s.min_n_base > 0),
        "resized": "/".join(spec.name for spec in resized),
        "resolution": "/".join(sorted({str(spec.resolution) for spec in resized})),
        "in_memory": ", ".join(always)
        + "".join(f" and in_memory {name}" for name in optional),
    }


def in_memory_datasets() -> tuple[list[str], list[str]]:
    """The datasets always held in memory, and those held with ``in_memory``."""
    always = [name for name, spec in DATASETS.items() if spec.in_memory]
    optional = [name for name, spec in DATASETS.items() if spec.in_memory is None]
    return always, optional
