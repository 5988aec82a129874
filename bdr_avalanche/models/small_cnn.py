"""A small convolutional backbone for tests and the ``digits`` demo."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["SmallCNN"]


class SmallCNN(nn.Module):
    """Two 3x3 convolutions with batch norm, global average pooling.

    :param in_channels: image channels.
    :param width: channels of the first convolution; features are
        ``2 * width``-dimensional.
    :param last_relu: keep the ReLU after the last convolution (LUCIR turns
        it off so features can be negative).
    """

    def __init__(self, in_channels: int = 3, width: int = 16, last_relu: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.out_dim = 2 * width
        self.last_relu = last_relu

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        if self.last_relu:
            x = torch.relu(x)
        return x.mean(dim=(2, 3))
