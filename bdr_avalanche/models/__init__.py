"""Backbones and the cosine incremental classifier."""

from .adapt import remove_last_relu, strip_classifier
from .cosine import CosineIncrementalClassifier, CosineIncrementalNet
from .resnet import (
    CifarResNet,
    ResNet18Backbone,
    resnet18_cifar,
    resnet18_imagenet,
    resnet32,
)
from .small_cnn import SmallCNN

__all__ = [
    "CifarResNet",
    "CosineIncrementalClassifier",
    "CosineIncrementalNet",
    "ResNet18Backbone",
    "SmallCNN",
    "remove_last_relu",
    "resnet18_cifar",
    "resnet18_imagenet",
    "resnet32",
    "strip_classifier",
]
