"""Image transforms of the protocol of the LUCIR/CwD/BDR papers.

CIFAR-100: pad 4 + random 32 crop + horizontal flip for training and the
normalisation of the LUCIR/BDR code. ImageNet: RandomResizedCrop + flip for
training, Resize(8/7 of the size) + CenterCrop for evaluation, with the
usual ImageNet mean and std. Small ImageNet-derived images (Tiny-ImageNet
scaled to 32 or 64 pixels) get the CIFAR recipe instead, on uint8 tensors,
so the same transform serves images decoded on the fly and images decoded
once into memory.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision import transforms
from torchvision.transforms import v2

from .._utils import check_positive_int

__all__ = [
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "cifar100_transforms",
    "imagenet_transforms",
    "small_image_transforms",
]

CIFAR100_MEAN = (0.5071, 0.4866, 0.4409)
CIFAR100_STD = (0.2009, 0.1984, 0.2023)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def cifar100_transforms() -> tuple[Callable, Callable]:
    """``(train, eval)`` transforms of PIL images for CIFAR-100.

    Train: RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor,
    Normalize; eval: ToTensor, Normalize.
    """
    normalize = transforms.Normalize(CIFAR100_MEAN, CIFAR100_STD)
    train = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            normalize,
        ]
    )
    return train, transforms.Compose([transforms.ToTensor(), normalize])


def imagenet_transforms(resolution: int = 224) -> tuple[Callable, Callable]:
    """``(train, eval)`` transforms of PIL images for ImageNet.

    Train: RandomResizedCrop(resolution), RandomHorizontalFlip, ToTensor,
    Normalize; eval: Resize(round(resolution * 8 / 7)) (256 for 224),
    CenterCrop(resolution), ToTensor, Normalize.
    """
    check_positive_int("resolution", resolution)
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train = transforms.Compose(
        [
            transforms.RandomResizedCrop(resolution),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            normalize,
        ]
    )
    evaluate = transforms.Compose(
        [
            transforms.Resize(round(resolution * 8 / 7)),
            transforms.CenterCrop(resolution),
            transforms.ToTensor(),
            normalize,
        ]
    )
    return train, evaluate


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
    check_positive_int("resolution", resolution)
    head = [v2.PILToTensor()] if from_pil else []
    tail = [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]
    train = v2.Compose(
        [
            *head,
            v2.RandomCrop(resolution, padding=resolution // 8),
            v2.RandomHorizontalFlip(),
            *tail,
        ]
    )
    return train, v2.Compose([*head, *tail])
