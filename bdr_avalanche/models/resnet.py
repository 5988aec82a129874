"""ResNet backbones that return penultimate features.

All backbones here map an image batch to ``(N, out_dim)`` features (no
classifier) and expose ``last_relu``: LUCIR removes the ReLU at the end of
the last residual block so that features, and hence cosine scores, can be
negative. The blocks are torchvision's, and so is the ImageNet ResNet-18.

- :func:`resnet18_cifar`: 3x3 stem, no max-pool, 512-d (the BDR paper's).
- :func:`resnet32`: the 3-stage CIFAR ResNet of He et al. (16/32/64 wide),
  64-d, used by LUCIR and CwD.
- :func:`resnet18_imagenet`: torchvision's ResNet-18, 512-d.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn
from torchvision.models import resnet as tv_resnet

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet18Backbone",
    "CifarResNet",
    "resnet18_cifar",
    "resnet18_imagenet",
    "resnet32",
]


class BasicBlock(tv_resnet.BasicBlock):
    """torchvision's basic block whose final ReLU can be switched off."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.apply_relu = True

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + identity
        return self.relu(out) if self.apply_relu else out


class Bottleneck(tv_resnet.Bottleneck):
    """torchvision's bottleneck block whose final ReLU can be switched off."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.apply_relu = True

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out)) + identity
        return self.relu(out) if self.apply_relu else out


class _LastReLUMixin:
    """``last_relu`` property forwarding to the last residual block."""

    def _last_block(self) -> BasicBlock:
        raise NotImplementedError

    @property
    def last_relu(self) -> bool:
        return self._last_block().apply_relu

    @last_relu.setter
    def last_relu(self, value: bool) -> None:
        self._last_block().apply_relu = bool(value)


class ResNet18Backbone(_LastReLUMixin, tv_resnet.ResNet):
    """torchvision's ResNet-18 without its classifier.

    :param cifar_stem: replace the 7x7/2 stem and the max-pool by a 3x3/1
        convolution, for 32x32 inputs.
    :param last_relu: keep the ReLU at the end of the last block.
    """

    def __init__(self, cifar_stem: bool = False, last_relu: bool = True) -> None:
        super().__init__(BasicBlock, [2, 2, 2, 2])
        if cifar_stem:
            self.conv1 = nn.Conv2d(
                3, 64, kernel_size=3, stride=1, padding=1, bias=False
            )
            nn.init.kaiming_normal_(
                self.conv1.weight, mode="fan_out", nonlinearity="relu"
            )
            self.maxpool = nn.Identity()
        self.fc = nn.Identity()
        self.out_dim = 512
        self.last_relu = last_relu

    def _last_block(self) -> BasicBlock:
        return self.layer4[-1]


class CifarResNet(_LastReLUMixin, nn.Module):
    """The CIFAR ResNet of He et al. (2016): depth ``6n + 2``, three stages of
    ``n`` basic blocks with 16, 32 and 64 channels, global average pooling.
    """

    def __init__(self, depth: int = 32, last_relu: bool = True) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n + 2 with n >= 1, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.inplanes = 16
        self.layer1 = self._make_stage(16, n, stride=1)
        self.layer2 = self._make_stage(32, n, stride=2)
        self.layer3 = self._make_stage(64, n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = 64
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(
                    module.weight, mode="fan_out", nonlinearity="relu"
                )
        self.last_relu = last_relu

    def _make_stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                tv_resnet.conv1x1(self.inplanes, planes, stride), nn.BatchNorm2d(planes)
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def _last_block(self) -> BasicBlock:
        return cast(BasicBlock, self.layer3[-1])  # _make_stage builds BasicBlocks

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return torch.flatten(self.avgpool(x), 1)


def resnet18_cifar(last_relu: bool = True) -> ResNet18Backbone:
    """ResNet-18 for 32x32 images (3x3 stem, no max-pool), 512-d features."""
    return ResNet18Backbone(cifar_stem=True, last_relu=last_relu)


def resnet18_imagenet(last_relu: bool = True) -> ResNet18Backbone:
    """torchvision's ResNet-18 (randomly initialised), 512-d features."""
    return ResNet18Backbone(cifar_stem=False, last_relu=last_relu)


def resnet32(last_relu: bool = True) -> CifarResNet:
    """ResNet-32 for 32x32 images, 64-d features."""
    return CifarResNet(depth=32, last_relu=last_relu)
