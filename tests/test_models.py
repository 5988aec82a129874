"""Shape and behaviour checks of the backbones and the cosine classifier."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from bdr_avalanche.models import (
    CifarResNet,
    CosineIncrementalClassifier,
    CosineIncrementalNet,
    SmallCNN,
    resnet18_cifar,
    resnet18_imagenet,
    resnet32,
)


def fake_experience(classes):
    """A stand-in for an Avalanche experience, with only its class ids."""
    return types.SimpleNamespace(classes_in_this_experience=list(classes))


def features_of(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Eval-mode features of ``x``, without gradients."""
    backbone.eval()
    with torch.no_grad():
        return backbone(x)


# ---------------------------------------------------------------------------
# Backbones
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "size", "out_dim"),
    [(resnet18_cifar, 32, 512), (resnet32, 32, 64), (resnet18_imagenet, 64, 512)],
    ids=["resnet18_cifar", "resnet32", "resnet18_imagenet"],
)
def test_resnet_feature_shape(factory, size, out_dim):
    """Each ResNet maps a batch of 2 RGB images to ``(2, out_dim)`` features."""
    torch.manual_seed(0)
    backbone = factory()
    assert backbone.out_dim == out_dim
    out = backbone(torch.randn(2, 3, size, size))
    assert out.shape == (2, out_dim)


def test_small_cnn_feature_shape():
    """SmallCNN with one input channel maps 8x8 images to ``2 * width`` features."""
    torch.manual_seed(0)
    backbone = SmallCNN(in_channels=1, width=4)
    assert backbone.out_dim == 8
    assert backbone(torch.randn(2, 1, 8, 8)).shape == (2, 8)


@pytest.mark.parametrize(
    ("factory", "shape"),
    [
        (resnet18_cifar, (2, 3, 32, 32)),
        (resnet32, (2, 3, 32, 32)),
        (resnet18_imagenet, (2, 3, 64, 64)),
        (lambda last_relu: SmallCNN(in_channels=1, last_relu=last_relu), (2, 1, 8, 8)),
    ],
    ids=["resnet18_cifar", "resnet32", "resnet18_imagenet", "small_cnn"],
)
def test_last_relu_controls_feature_sign(factory, shape):
    """With ``last_relu`` features are >= 0; switching it off lets some go negative."""
    torch.manual_seed(0)
    backbone = factory(last_relu=True)
    x = torch.randn(*shape)
    assert backbone.last_relu is True
    assert (features_of(backbone, x) >= 0).all()
    backbone.last_relu = False
    assert backbone.last_relu is False
    assert (features_of(backbone, x) < 0).any()


@pytest.mark.parametrize(
    ("factory", "last_block"),
    [
        (resnet18_cifar, lambda b: b.layer4[-1]),
        (resnet18_imagenet, lambda b: b.layer4[-1]),
        (resnet32, lambda b: b.layer3[-1]),
    ],
    ids=["resnet18_cifar", "resnet18_imagenet", "resnet32"],
)
def test_last_relu_property_reflects_last_block(factory, last_block):
    """``last_relu`` reads and writes the last block's ``apply_relu`` only."""
    backbone = factory(last_relu=False)
    block = last_block(backbone)
    assert block.apply_relu is False
    others = [
        m for m in backbone.modules() if hasattr(m, "apply_relu") and m is not block
    ]
    assert others and all(m.apply_relu for m in others)
    block.apply_relu = True
    assert backbone.last_relu is True
    backbone.last_relu = False
    assert block.apply_relu is False


@pytest.mark.parametrize(("depth", "blocks"), [(8, 1), (14, 2)])
def test_cifar_resnet_valid_depth(depth, blocks):
    """CifarResNet of depth ``6n + 2`` has ``n`` blocks per stage, 64-d features."""
    torch.manual_seed(0)
    backbone = CifarResNet(depth=depth)
    assert (
        len(backbone.layer1) == len(backbone.layer2) == len(backbone.layer3) == blocks
    )
    assert backbone(torch.randn(2, 3, 16, 16)).shape == (2, 64)


@pytest.mark.parametrize("depth", [2, 9, 10])
def test_cifar_resnet_invalid_depth(depth):
    """CifarResNet rejects depths that are not ``6n + 2`` with ``n >= 1``."""
    with pytest.raises(ValueError, match=r"depth must be 6n \+ 2"):
        CifarResNet(depth=depth)


# ---------------------------------------------------------------------------
# Cosine classifier
# ---------------------------------------------------------------------------


def test_cosine_classifier_first_adaptation():
    """Adapting to the first experience creates one row per class."""
    head = CosineIncrementalClassifier(in_features=4).train()
    assert head.num_classes == 0
    head.adaptation(fake_experience([0, 1, 2]))
    assert head.num_classes == 3
    assert head.weight.shape == (3, 4)


def test_cosine_classifier_grows_and_freezes_old_rows():
    """A second experience adds a trainable block and freezes the first one."""
    head = CosineIncrementalClassifier(in_features=4).train()
    head.adaptation(fake_experience([0, 1, 2]))
    head.adaptation(fake_experience([3, 4]))
    assert head.num_classes == 5
    assert len(head.blocks) == 2
    assert head.blocks[0].requires_grad is False
    assert head.blocks[1].requires_grad is True
    assert head.blocks[1].shape == (2, 4)


def test_cosine_classifier_does_not_grow_in_eval_mode():
    """Adaptation in eval mode (test experiences) adds no rows."""
    head = CosineIncrementalClassifier(in_features=4).train()
    head.adaptation(fake_experience([0, 1, 2]))
    head.adaptation(fake_experience([3, 4]))
    head.eval()
    head.adaptation(fake_experience([5, 6]))
    assert head.num_classes == 5


def test_cosine_classifier_any_class_ids():
    """Logit ``c`` is class ``c``'s whatever the ids; untrained ids are masked."""
    torch.manual_seed(0)
    head = CosineIncrementalClassifier(in_features=4).train()
    head.adaptation(fake_experience([5, 2]))
    head.adaptation(fake_experience([7]))
    assert head.num_classes == 3 and head.classes == [2, 5, 7]
    features = torch.randn(3, 4)
    out = head(features)
    assert out.shape == (3, 8)
    assert_close(out[:, [2, 5, 7]], head.sigma * head.cosine(features))
    assert (out[:, [0, 1, 3, 4, 6]] == head.mask_value).all()


def test_cosine_classifier_forward_is_scaled_cosine():
    """forward returns ``sigma * cos(features, rows)`` for every class."""
    torch.manual_seed(0)
    head = CosineIncrementalClassifier(in_features=4).train()
    head.adaptation(fake_experience([0, 1, 2]))
    head.adaptation(fake_experience([3, 4]))
    with torch.no_grad():
        head.sigma.fill_(2.5)
    features = torch.randn(6, 4)
    weight = torch.cat([block.detach() for block in head.blocks])
    expected = 2.5 * F.cosine_similarity(
        features[:, None, :], weight[None, :, :], dim=2
    )
    out = head(features)
    assert out.shape == (6, 5)
    assert_close(out, expected)


def test_cosine_classifier_single_shared_sigma():
    """``sigma`` is one scalar parameter, shared by all classes, initialised to 1."""
    head = CosineIncrementalClassifier(in_features=4).train()
    head.adaptation(fake_experience([0, 1, 2]))
    head.adaptation(fake_experience([3, 4]))
    assert isinstance(head.sigma, nn.Parameter)
    assert head.sigma.shape == ()
    assert head.sigma.item() == 1.0
    sigmas = [name for name, _ in head.named_parameters() if "sigma" in name]
    assert sigmas == ["sigma"]


def test_cosine_classifier_forward_without_classes():
    """Calling the classifier before any adaptation raises RuntimeError."""
    head = CosineIncrementalClassifier(in_features=4)
    with pytest.raises(RuntimeError, match="no class"):
        head(torch.randn(2, 4))


def test_cosine_net_needs_feature_dim():
    """CosineIncrementalNet needs ``feature_dim`` when the backbone has no out_dim."""
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    with pytest.raises(ValueError, match="feature_dim"):
        CosineIncrementalNet(backbone)
    net = CosineIncrementalNet(backbone, feature_dim=4)
    assert net.head.in_features == 4


def test_cosine_net_uses_backbone_out_dim():
    """CosineIncrementalNet takes its head's width from the backbone's out_dim."""
    torch.manual_seed(0)
    net = CosineIncrementalNet(SmallCNN(in_channels=1, width=4)).train()
    assert net.head.in_features == 8
    net.head.adaptation(fake_experience([0, 1]))
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 2)
