"""Backbones and the cosine incremental classifier."""

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
    "resnet18_cifar",
    "resnet18_imagenet",
    "resnet32",
]
