"""Class-incremental benchmark streams.

CIFAR-100 (:func:`split_cifar100`), ImageNet-1k (:func:`split_imagenet`)
and image-folder trees such as ImageNet-Subset or Tiny-ImageNet
(:func:`split_imagefolder`) follow the protocol of the LUCIR/CwD/BDR
papers: ``n_base`` classes in the first experience then ``n_phases`` equal
ones, the iCaRL class order (:func:`class_order`), class ids remapped to
arrival order. :func:`split_digits` is a tiny CPU benchmark. The facts
about each dataset are its :class:`DatasetSpec` in :data:`DATASETS`.

The names are imported on first use (PEP 562), so that the torch-free
:mod:`~bdr_avalanche.benchmarks.specs` (which the config and ``--help``
read) imports neither torch nor Avalanche.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:
    from ._common import DatasetError, class_order
    from .cifar import split_cifar100
    from .digits import digits_class_sizes, split_digits
    from .imagefolder import split_imagefolder
    from .imagenet import split_imagenet
    from .specs import DATASETS, ICARL_SEED, DatasetSpec, Recipe, class_split
    from .transforms import (
        cifar100_transforms,
        imagenet_transforms,
        torchvision_transforms,
    )

__all__ = [
    "DATASETS",
    "ICARL_SEED",
    "DatasetError",
    "DatasetSpec",
    "Recipe",
    "class_order",
    "class_split",
    "cifar100_transforms",
    "digits_class_sizes",
    "imagenet_transforms",
    "split_cifar100",
    "split_digits",
    "split_imagefolder",
    "split_imagenet",
    "torchvision_transforms",
]

# name -> the module that defines it
_LAZY = {
    "DATASETS": ".specs",
    "ICARL_SEED": ".specs",
    "DatasetSpec": ".specs",
    "Recipe": ".specs",
    "class_split": ".specs",
    "DatasetError": "._common",
    "class_order": "._common",
    "split_cifar100": ".cifar",
    "digits_class_sizes": ".digits",
    "split_digits": ".digits",
    "split_imagefolder": ".imagefolder",
    "split_imagenet": ".imagenet",
    "cifar100_transforms": ".transforms",
    "imagenet_transforms": ".transforms",
    "torchvision_transforms": ".transforms",
}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
