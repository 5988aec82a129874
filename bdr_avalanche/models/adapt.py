"""Third-party backbones as feature extractors for the cosine classifier.

:func:`strip_classifier` replaces the classifier of architectures whose
classifier sits in a known place (torchvision's ResNets: ``fc``;
Avalanche's slim ResNet-18: ``linear``) by ``nn.Identity`` and returns the
feature dimension; :func:`remove_last_relu` removes the ReLU that ends the
feature computation where it sits in a known place, so that features (and
cosine scores) can be negative, as LUCIR requires.

Known places of the last ReLU:

- a ``last_relu`` attribute (the backbones of :mod:`bdr_avalanche.models`):
  set to ``False``;
- torchvision's ResNets (``layer4[-1]`` a ``BasicBlock`` or ``Bottleneck``)
  and Avalanche's ``SlimResNet18`` (``layer4[-1]`` its ``BasicBlock``): the
  last block's final ReLU is skipped (the block's class is swapped for a
  subclass with an ``apply_relu`` switch; parameters and state-dict keys
  are unchanged);
- an ``nn.Sequential`` whose last module, after pooling, flattening and
  dropout layers, is an ``nn.ReLU`` (replaced by ``nn.Identity``) or a
  linear, convolution or normalisation layer (nothing to remove).
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.functional import relu
from torchvision.models import resnet as tv_resnet

from . import resnet

__all__ = ["remove_last_relu", "strip_classifier"]

try:  # Avalanche's slim ResNet-18 (GEM's), if Avalanche is importable
    from avalanche.models import slim_resnet18 as _slim
except ImportError:  # pragma: no cover - Avalanche is a dependency
    _slim = None


if _slim is not None:

    class _SlimBasicBlock(_slim.BasicBlock):
        """Avalanche's slim ResNet block whose final ReLU can be switched off."""

        apply_relu = True

        def forward(self, x: Tensor) -> Tensor:
            out = relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out)) + self.shortcut(x)
            return relu(out) if self.apply_relu else out


_SIGN_PRESERVING = (
    nn.Identity,
    nn.Flatten,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
"""Layers that keep non-negative inputs non-negative: a ReLU before them is
still the last operation that matters for the features' sign."""

_SIGNED = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.LayerNorm,
    nn.GroupNorm,
)
"""Layers whose output can be negative whatever their input."""


def _is_torchvision_resnet(module: nn.Module) -> bool:
    return isinstance(module, tv_resnet.ResNet)


def _is_slim_resnet(module: nn.Module) -> bool:
    return _slim is not None and isinstance(module, _slim.ResNet)


def strip_classifier(backbone: nn.Module, feature_dim: int | None = None) -> int:
    """Make ``backbone`` return its features and give their dimension.

    torchvision's ResNets (``fc``) and Avalanche's slim ResNet-18
    (``linear``) have their classifier replaced, in place, by
    ``nn.Identity``; their feature dimension is the classifier's
    ``in_features``. Any other backbone is left as it is: its dimension is
    ``feature_dim``, else its ``out_dim`` attribute.

    :param feature_dim: the dimension, if known; checked against the one
        found.
    :raises ValueError: no dimension can be found, or ``feature_dim``
        disagrees with the architecture.
    """
    found: int | None = None
    for known, attr in ((_is_torchvision_resnet, "fc"), (_is_slim_resnet, "linear")):
        if not known(backbone):
            continue
        head = getattr(backbone, attr)
        if isinstance(head, nn.Linear):
            found = head.in_features
            setattr(backbone, attr, nn.Identity())
        break
    if found is None:
        found = getattr(backbone, "out_dim", None)
    if feature_dim is not None:
        if found is not None and int(found) != feature_dim:
            raise ValueError(
                f"feature_dim={feature_dim} but {type(backbone).__name__} gives "
                f"{found}-dimensional features"
            )
        return feature_dim
    if found is None:
        raise ValueError(
            f"feature_dim is required: {type(backbone).__name__} has no `out_dim` "
            "attribute and is not an architecture whose feature dimension is "
            "known (torchvision's ResNets, Avalanche's SlimResNet18)"
        )
    return int(found)


def _swap_last_block(block: nn.Module) -> bool:
    """Switch off the final ReLU of a known residual block, in place."""
    kind = type(block)
    if isinstance(block, (resnet.BasicBlock, resnet.Bottleneck)):
        pass
    elif kind is tv_resnet.BasicBlock:
        block.__class__ = resnet.BasicBlock
    elif kind is tv_resnet.Bottleneck:
        block.__class__ = resnet.Bottleneck
    elif _slim is not None and isinstance(block, _SlimBasicBlock):
        pass
    elif _slim is not None and kind is _slim.BasicBlock:
        block.__class__ = _SlimBasicBlock
    else:
        return False
    # torch types the values of a module's attributes as Tensor | Module
    block.apply_relu = False  # type: ignore[assignment]
    return True


def _remove_in_sequential(seq: nn.Sequential) -> bool | None:
    """``True``: no ReLU ends ``seq`` (any was replaced); ``None``: unknown."""
    for index in range(len(seq) - 1, -1, -1):
        layer = seq[index]
        if isinstance(layer, _SIGN_PRESERVING):
            continue
        if type(layer) is nn.ReLU:
            seq[index] = nn.Identity()
            return True
        if isinstance(layer, _SIGNED):
            return True
        if isinstance(layer, nn.Sequential):
            return _remove_in_sequential(layer)
        return None
    return None


def remove_last_relu(backbone: nn.Module) -> bool:
    """Remove, in place, the ReLU that ends ``backbone``'s features.

    :return: ``True`` when the features' last operation is now known not to
        be a ReLU (it was removed, or there was none in a known place);
        ``False`` when the architecture is not one this function knows, and
        any final ReLU was kept.
    """
    if hasattr(backbone, "last_relu"):
        # torch types the values of a module's attributes as Tensor | Module
        backbone.last_relu = False  # type: ignore[assignment]
        return True
    if _is_torchvision_resnet(backbone) or _is_slim_resnet(backbone):
        layer4 = getattr(backbone, "layer4", None)
        if isinstance(layer4, nn.Sequential) and len(layer4) > 0:
            return _swap_last_block(layer4[-1])
        return False
    if isinstance(backbone, nn.Sequential):
        return bool(_remove_in_sequential(backbone))
    return False
