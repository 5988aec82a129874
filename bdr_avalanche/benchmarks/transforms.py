"""Torchvision transforms of the DataLoader path, derived from the datasets'
augmentation recipes (:class:`~bdr_avalanche.benchmarks.specs.Recipe`),
the protocol of the LUCIR/CwD/BDR papers.

CIFAR-100: pad 4 + random 32 crop + horizontal flip for training and the
normalisation of the LUCIR/BDR code. ImageNet: RandomResizedCrop + flip for
training, Resize(8/7 of the size) + CenterCrop for evaluation, with the
usual ImageNet mean and std. Small ImageNet-derived images (Tiny-ImageNet
scaled to 32 or 64 pixels) get the CIFAR recipe instead, on uint8 tensors,
so the same transform serves images decoded on the fly and images decoded
once into memory. The fast path's
:meth:`~bdr_avalanche.training.augment.BatchAugment.from_recipe` reads the same
recipes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision import transforms
from torchvision.transforms import v2

from .specs import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    DATASETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Recipe,
    imagenet_recipe,
    small_image_recipe,
)

__all__ = [
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "cifar100_transforms",
    "imagenet_transforms",
    "small_image_transforms",
    "torchvision_transforms",
]


def torchvision_transforms(
    recipe: Recipe,
) -> tuple[Callable | None, Callable | None]:
    """``(train, eval)`` torchvision transforms of ``recipe``.

    PIL images (``pixels="pil"``) get ``torchvision.transforms`` ending in
    ``ToTensor`` and ``Normalize``; tensors get ``transforms.v2``, ending
    in ``ToDtype(float32, scale=True)`` and ``Normalize`` for uint8 (after
    ``PILToTensor`` for ``"pil_uint8"``), in nothing for standardised
    floats. A single step is returned bare, none as ``None``.
    """
    api = transforms if recipe.pixels == "pil" else v2
    if recipe.padding is not None:
        crop = [api.RandomCrop(recipe.size, padding=recipe.padding)]
        resize = []
    else:
        crop = [api.RandomResizedCrop(recipe.size)]
        resize = [api.Resize(recipe.eval_resize), api.CenterCrop(recipe.size)]
    flip = [api.RandomHorizontalFlip(recipe.flip)] if recipe.flip else []
    head, tail = [], []
    if recipe.pixels == "pil":
        tail = [transforms.ToTensor(), transforms.Normalize(recipe.mean, recipe.std)]
    elif recipe.pixels != "standardised":
        head = [v2.PILToTensor()] if recipe.pixels == "pil_uint8" else []
        tail = [
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(recipe.mean, recipe.std),
        ]
    compose = transforms.Compose if recipe.pixels == "pil" else v2.Compose
    train = [*head, *crop, *flip, *tail]
    evaluate = [*head, *resize, *tail]

    def pipeline(steps: list[Callable]) -> Callable | None:
        return None if not steps else steps[0] if len(steps) == 1 else compose(steps)

    return pipeline(train), pipeline(evaluate)


def _normalising(recipe: Recipe) -> tuple[Callable, Callable]:
    """:func:`torchvision_transforms` of a recipe whose images are scaled
    and normalised, so that both transforms have steps."""
    train, evaluate = torchvision_transforms(recipe)
    assert train is not None and evaluate is not None  # both end in Normalize
    return train, evaluate


def cifar100_transforms() -> tuple[Callable, Callable]:
    """``(train, eval)`` transforms of PIL images for CIFAR-100.

    Train: RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor,
    Normalize; eval: ToTensor, Normalize.
    """
    return _normalising(DATASETS["cifar100"].recipe())


def imagenet_transforms(resolution: int = 224) -> tuple[Callable, Callable]:
    """``(train, eval)`` transforms of PIL images for ImageNet.

    Train: RandomResizedCrop(resolution), RandomHorizontalFlip, ToTensor,
    Normalize; eval: Resize(round(resolution * 8 / 7)) (256 for 224),
    CenterCrop(resolution), ToTensor, Normalize.
    """
    return _normalising(imagenet_recipe(resolution))


def small_image_transforms(
    resolution: int, from_pil: bool = False
) -> tuple[Callable, Callable]:
    """``(train, eval)`` transforms of ``resolution``-square uint8 images.

    Train: RandomCrop(resolution, padding=resolution // 8) (4 for 32
    pixels, as for CIFAR), RandomHorizontalFlip, scaling to [0, 1] and the
    ImageNet normalisation; eval: the scaling and normalisation only. The
    inputs are (3, resolution, resolution) uint8 tensors, or PIL images of
    that size with ``from_pil`` (they are converted to such tensors first,
    so both kinds of input give identical results).
    """
    recipe = small_image_recipe(resolution, "pil_uint8" if from_pil else "uint8")
    return _normalising(recipe)
