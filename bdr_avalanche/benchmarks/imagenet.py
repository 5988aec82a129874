"""Class-incremental stream of full ImageNet-1k, as Avalanche's
``SplitImageNet`` builds it.

The data must be in torchvision's ImageNet layout: ``<root>/train/<wnid>/``
and ``<root>/val/<wnid>/`` image folders (1000 WordNet ids) and
``<root>/meta.bin`` (or the devkit ``ILSVRC2012_devkit_t12.tar.gz`` from
which torchvision writes it on first use). The layout is checked before
Avalanche and torchvision are called, so a wrong path gives a
:class:`DatasetError` rather than a traceback from inside them. The class
order is ``class_order(1000, seed)`` (54, 7, 894, 512, ... for seed 1993)
over the sorted WordNet ids.

The datasets are Avalanche's ``ImageNet`` (the ones ``SplitImageNet``
reads) and the stream is the same ``nc_benchmark`` call, made by
:func:`~bdr_avalanche.benchmarks._common.make_stream`. Two things differ:
the image loader, :class:`~bdr_avalanche.benchmarks.imagefolder.ImageLoader`,
so that an image that cannot be decoded raises :class:`DatasetError`
naming the file when it is loaded; and the walk of the folders,
:class:`~bdr_avalanche.benchmarks.folders.FolderTree`, which follows links
out of the tree but not back into it (skipped with a warning naming the
link) and counts each image once.
"""

from __future__ import annotations

import logging
import os
import pickle
import tarfile
from pathlib import Path

from avalanche.benchmarks.datasets.imagenet.imagenet import AvalancheImageNet
from avalanche.benchmarks.scenarios.deprecated.new_classes import NCScenario
from torchvision.datasets import ImageFolder

from ._common import (
    DatasetError,
    error_reason,
    make_stream,
    stream_layout,
)
from .folders import LinkSafeFolder, class_folders
from .imagefolder import ImageLoader
from .specs import DATASETS, ICARL_SEED
from .transforms import torchvision_transforms

__all__ = ["split_imagenet"]

logger = logging.getLogger(__name__)

SPEC = DATASETS["imagenet"]
assert SPEC.classes is not None and SPEC.resolution is not None  # given by its spec
NUM_CLASSES = SPEC.classes

LAYOUT = (
    "torchvision's ImageNet layout: <root>/train/<wnid>/*.JPEG and "
    "<root>/val/<wnid>/*.JPEG for the 1000 WordNet ids, plus <root>/meta.bin "
    "or the devkit archive <root>/ILSVRC2012_devkit_t12.tar.gz"
)
_DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"


def split_imagenet(
    dataset_root: str | os.PathLike,
    *,
    n_base: int = SPEC.n_base,
    n_phases: int = SPEC.n_phases,
    seed: int = ICARL_SEED,
    resolution: int = SPEC.resolution,
) -> NCScenario:
    """ImageNet-1k: ``n_base`` classes, then ``n_phases`` equal experiences
    (``n_base=0``: ``n_phases`` equal experiences from the start).

    Built as Avalanche's ``SplitImageNet`` builds it, with the iCaRL order
    ``class_order(1000, seed)``, class ids remapped to arrival order and
    :func:`~bdr_avalanche.benchmarks.imagenet_transforms` at
    ``resolution`` (RandomResizedCrop + flip; Resize 256 + CenterCrop 224).

    :raises DatasetError: ``dataset_root`` is not in torchvision's ImageNet
        layout; also when a sample is loaded, if its image cannot be decoded.
    """
    recipe = SPEC.recipe(resolution)  # checks resolution
    stream_layout(NUM_CLASSES, n_base, n_phases, SPEC.name)
    root = Path(dataset_root).expanduser()
    _check_layout(root)
    train_set, test_set = (_imagenet_split(root, split) for split in ("train", "val"))
    train_transform, eval_transform = torchvision_transforms(recipe)
    return make_stream(
        train_set,
        test_set,
        num_classes=NUM_CLASSES,
        n_base=n_base,
        n_phases=n_phases,
        seed=seed,
        train_transform=train_transform,
        eval_transform=eval_transform,
    )


class _ImageNet(LinkSafeFolder, AvalancheImageNet):
    """Avalanche's ``ImageNet`` (what its ``ImageNet()`` returns), its
    folders walked by :class:`~bdr_avalanche.benchmarks.folders.FolderTree`:
    links are followed out of the tree but not back into it, and each image
    counts once."""


def _imagenet_split(root: Path, split: str) -> ImageFolder:
    """The ``split`` of ImageNet as ``SplitImageNet`` reads it (Avalanche's
    ``ImageNet``, an ``ImageFolder``), with an :class:`ImageLoader` so that a
    corrupt image raises :class:`DatasetError`."""
    try:
        return _ImageNet(str(root), split=split, loader=ImageLoader())
    except DatasetError:
        raise
    except KeyError as err:  # a class folder missing from meta.bin
        raise DatasetError(
            f"{root / 'meta.bin'} does not name the class folder {err}; expected "
            f"the meta.bin of the same ImageNet release ({LAYOUT})"
        ) from err
    except (
        OSError,  # with "Found no valid file for the classes ...": empty folders
        RuntimeError,
        ValueError,
        EOFError,
        pickle.UnpicklingError,
        tarfile.TarError,
    ) as err:
        raise DatasetError(
            f"cannot read ImageNet from {root / split}: {error_reason(err)}; "
            f"expected {LAYOUT}"
        ) from err


def _check_layout(root: Path) -> None:
    """Raise :class:`DatasetError` unless ``root`` looks like ImageNet-1k."""
    if not root.is_dir():
        raise DatasetError(f"{root} is not an existing folder; expected {LAYOUT}")
    if not (root / "meta.bin").is_file() and not (root / _DEVKIT).is_file():
        raise DatasetError(
            f"{root} has neither meta.bin nor {_DEVKIT}; expected {LAYOUT}"
        )
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DatasetError(f"{root} has no '{split}' folder; expected {LAYOUT}")
    found = {split: class_folders(root / split) for split in ("train", "val")}
    for split, classes in found.items():
        if len(classes) != NUM_CLASSES:
            raise DatasetError(
                f"{root / split} has {len(classes)} class folders, not "
                f"{NUM_CLASSES}; expected {LAYOUT}"
            )
    if found["train"] != found["val"]:
        missing = sorted(set(found["train"]) ^ set(found["val"]))
        raise DatasetError(
            f"{root / 'train'} and {root / 'val'} have different class folders "
            f"(e.g. {', '.join(missing[:10])}); expected {LAYOUT}"
        )
    logger.info("%s: ImageNet layout found", root)
