"""Class-incremental benchmark streams.

CIFAR-100 (:func:`split_cifar100`), ImageNet-1k (:func:`split_imagenet`)
and image-folder trees such as ImageNet-Subset or Tiny-ImageNet
(:func:`split_imagefolder`) follow the protocol of the LUCIR/CwD/BDR
papers: ``n_base`` classes in the first experience then ``n_phases`` equal
ones, the iCaRL class order (:func:`class_order`), class ids remapped to
arrival order. :func:`split_digits` is a tiny CPU benchmark.
"""

from ._common import ICARL_SEED, DatasetError, class_order
from .cifar import split_cifar100
from .digits import digits_class_sizes, split_digits
from .imagefolder import split_imagefolder
from .imagenet import split_imagenet
from .transforms import cifar100_transforms, imagenet_transforms

__all__ = [
    "ICARL_SEED",
    "DatasetError",
    "class_order",
    "cifar100_transforms",
    "digits_class_sizes",
    "imagenet_transforms",
    "split_cifar100",
    "split_digits",
    "split_imagefolder",
    "split_imagenet",
]
