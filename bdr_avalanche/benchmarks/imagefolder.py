"""Class-incremental streams of an image-folder tree: ImageNet-Subset,
Tiny-ImageNet and the like.

The layout is ``<root>/train/<class>/<image>`` and
``<root>/val/<class>/<image>`` with the same class folders (the layout of
the 100-class ImageNet-Subset of the class-incremental literature, and of
the Tiny-ImageNet-100 archive of this project); ``root`` may also be a
``.zip`` holding one top folder with that layout, extracted once to a cache.
A ``<root>/wnids.txt`` (as in Tiny-ImageNet), if present, must list exactly
the class folders.
Images are read with torchvision's ``ImageFolder``, so label ``i`` is the
``i``-th class folder in sorted order (WordNet ids for ImageNet data) and
the iCaRL order is applied to those labels. The folders are walked by
:class:`~bdr_avalanche.benchmarks.folders.FolderTree` rather than
``os.walk(followlinks=True)``: symbolic links to folders and images
elsewhere are followed, but a link to a folder that leads back into the
tree (``train/c0/loop -> ..``), or above it, is skipped with a warning
naming it, and each folder and each image counts once. The class sizes of
:func:`imagefolder_class_sizes`, the datasets and the images decoded with
``in_memory`` all come from that one walk.

Below 224 pixels every image is decoded, shrunk (shorter side to
``resolution`` then a centre square) and augmented like CIFAR. With
``in_memory`` that decoding happens once, into one uint8 tensor, instead of
at every epoch: on a CPU, decoding 55,000 JPEGs per epoch would cost more
than training a small network on them.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeAlias

import numpy as np
import torch
from avalanche.benchmarks.scenarios.deprecated.new_classes import NCScenario
from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset
from avalanche.benchmarks.utils.classification_dataset import (
    TaskAwareSupervisedClassificationDataset,
)
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import functional as F
from tqdm.auto import tqdm

from .._utils import check_positive_int
from ._archive import extracted_root
from ._common import (
    DatasetError,
    error_reason,
    make_stream,
    stream_layout,
)
from .folders import LinkSafeFolder, class_folders, folder_samples
from .specs import DATASETS, ICARL_SEED
from .transforms import torchvision_transforms

__all__ = ["ImageLoader", "imagefolder_class_sizes", "split_imagefolder"]

#: The private Avalanche names this module relies on, checked against the
#: installed Avalanche by ``tests/test_avalanche_private.py``
#: (``Class()._name``: an instance attribute). The images decoded
#: ``in_memory`` become a dataset through Avalanche's own private factory.
AVALANCHE_PRIVATE = (
    "avalanche.benchmarks.utils._make_taskaware_tensor_classification_dataset",
)

logger = logging.getLogger(__name__)

SPEC = DATASETS["imagefolder"]
assert SPEC.shrink_below is not None and SPEC.resolution is not None  # by its spec
FULL_RESOLUTION = SPEC.shrink_below
"""From this resolution on, images get the ImageNet crops and are not
shrunk when loaded."""

LAYOUT = (
    "<root>/train/<class>/<image> and <root>/val/<class>/<image> with the same "
    "class folders (the ImageNet-Subset / Tiny-ImageNet-100 layout), or a .zip "
    "holding one top folder with that layout"
)

_CHUNK = 256

_Split: TypeAlias = ImageFolder | TaskAwareSupervisedClassificationDataset
"""A split as loaded: read from the files, or decoded into memory."""


class ImageLoader:
    """Opens an image file as an RGB PIL image, shrunk to ``resolution``.

    With a ``resolution``, the shorter side is resized to it (bilinear,
    after letting the JPEG decoder downscale by a power of two where that
    stays at least as large) and the centre square is kept; images already
    of that size are left as they are. Unreadable files raise
    :class:`DatasetError` naming the file, and the member of ``archive``
    it was extracted from when ``archive`` (a zip extracted into
    ``archive_dir``) is given. A module-level class, so it pickles into
    ``DataLoader`` worker processes.
    """

    def __init__(
        self,
        resolution: int | None = None,
        *,
        archive: str | os.PathLike | None = None,
        archive_dir: str | os.PathLike | None = None,
    ) -> None:
        self.resolution = resolution
        self.archive = archive
        self.archive_dir = archive_dir

    def __repr__(self) -> str:
        return f"{type(self).__name__}(resolution={self.resolution})"

    def __call__(self, path: str) -> Image.Image:
        size = self.resolution
        try:
            with Image.open(path) as image:
                if size is not None:
                    image.draft("RGB", (size, size))
                image = image.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise DatasetError(
                f"{path}: cannot decode image ({error_reason(err)}); remove or "
                f"replace {self._source(path)}"
            ) from err
        if size is not None and image.size != (size, size):
            image = F.center_crop(F.resize(image, size), size)
        return image

    def _source(self, path: str) -> str:
        """``the file``, or which member of which zip it was extracted from."""
        if self.archive is None or self.archive_dir is None:
            return "the file"
        try:
            member = Path(path).relative_to(self.archive_dir).as_posix()
        except ValueError:
            return "the file"
        return f"{member} in {self.archive}"


def split_imagefolder(
    dataset_root: str | os.PathLike,
    *,
    n_base: int = SPEC.n_base,
    n_phases: int = SPEC.n_phases,
    seed: int = ICARL_SEED,
    resolution: int = SPEC.resolution,
    in_memory: bool = False,
) -> NCScenario:
    """Class-incremental stream of an image-folder tree (see the module).

    ``n_base`` classes in the first experience, then ``n_phases`` equal
    experiences (``n_base=0``: ``n_phases`` equal experiences). Class order
    ``class_order(num_classes, seed)`` over the sorted class folders, class
    ids remapped to arrival order.

    ``resolution >= 224``: the ImageNet transforms
    (:func:`~bdr_avalanche.benchmarks.imagenet_transforms`). Smaller: images
    are shrunk to ``resolution`` squares when loaded, then
    :func:`~bdr_avalanche.benchmarks.transforms.small_image_transforms`
    (random crop with ``resolution // 8`` padding and flip for training).
    ``in_memory`` (only below 224 pixels) decodes every image once into a
    uint8 tensor; samples are then identical to the on-the-fly ones.

    Links are followed out of the tree but not back into it (see the
    module and :class:`~bdr_avalanche.benchmarks.folders.FolderTree`): a
    skipped link is logged as a warning naming it, and each image counts
    once however many links lead to it.

    :raises DatasetError: the tree (or zip) is missing, unreadable or not in
        the expected layout: a class folder missing from a split or from
        ``<root>/wnids.txt`` (when there is one), or with no image files; a
        folder that cannot be listed, or a link to an image that leads
        nowhere. An image that cannot be decoded raises it too, naming the
        file: here with ``in_memory``, else when the sample is loaded.
    """
    check_positive_int("resolution", resolution)
    check_positive_int("n_base", n_base, minimum=0)
    check_positive_int("n_phases", n_phases)
    if in_memory and resolution >= FULL_RESOLUTION:
        raise ValueError(
            f"in_memory=True needs resolution < {FULL_RESOLUTION} (images are "
            f"stored shrunk to resolution x resolution); got resolution={resolution}"
        )
    classes, train_set, test_set = _read_tree(
        Path(dataset_root).expanduser(), n_base, n_phases, resolution, in_memory
    )
    train_transform, eval_transform = torchvision_transforms(
        SPEC.recipe(resolution, in_memory)
    )
    return make_stream(
        train_set,
        test_set,
        num_classes=len(classes),
        n_base=n_base,
        n_phases=n_phases,
        seed=seed,
        train_transform=train_transform,
        eval_transform=eval_transform,
    )


def _read_tree(
    path: Path, n_base: int, n_phases: int, resolution: int, in_memory: bool
) -> tuple[list[str], _Split, _Split]:
    """The class folders and the two splits of the tree (or ``.zip``)
    ``path``, after checking its layout and that its classes split into
    ``n_base`` and ``n_phases``; a :class:`DatasetError` about a tree
    extracted from a zip names the zip."""
    archive = path if path.suffix.lower() == ".zip" else None
    root = _resolve_root(path)
    try:
        classes = _check_tree(root)
        stream_layout(len(classes), n_base, n_phases, SPEC.name)
        return classes, *_load_splits(root, archive, resolution, in_memory)
    except DatasetError as err:
        if archive is None or str(archive) in str(err):
            raise
        raise DatasetError(f"{err} (the tree was extracted from {archive})") from err


def _load_splits(
    root: Path, archive: Path | None, resolution: int, in_memory: bool
) -> tuple[_Split, _Split]:
    """The training and validation sets of the checked tree ``root``
    (extracted from ``archive``, if not ``None``), decoded into memory when
    ``in_memory``."""
    loader = ImageLoader(
        resolution if resolution < FULL_RESOLUTION else None,
        archive=archive,
        archive_dir=None if archive is None else root.parent,
    )
    train_set = _image_folder(root / "train", loader)
    test_set = _image_folder(root / "val", loader)
    logger.info(
        "%s: %d classes, %d training and %d validation images",
        root,
        len(train_set.classes),
        len(train_set),
        len(test_set),
    )
    if in_memory:
        train_set = _decode_all(train_set, loader, resolution)
        test_set = _decode_all(test_set, loader, resolution)
    return train_set, test_set


def imagefolder_class_sizes(dataset_root: str | os.PathLike) -> dict[str, int]:
    """Training images per class folder of a tree (or ``.zip``, extracted
    to the cache as by :func:`split_imagefolder`), counted from the file
    names without decoding any image, after the checks of the layout.

    The images counted are those :func:`split_imagefolder` loads (the same
    walk of the tree: sub-folders included, links followed out of the tree
    but not back into it, each image once); a class without images counts 0.

    :raises DatasetError: as :func:`split_imagefolder` for the layout.
    """
    root = _resolve_root(dataset_root)
    classes = _check_tree(root)
    samples = folder_samples(
        root / "train",
        {name: index for index, name in enumerate(classes)},
        IMG_EXTENSIONS,
        allow_empty=True,
    )
    counts = [0] * len(classes)
    for _, index in samples:
        counts[index] += 1
    return dict(zip(classes, counts, strict=True))


def _resolve_root(dataset_root: str | os.PathLike) -> Path:
    """The tree's root folder; a ``.zip`` is extracted to the cache first."""
    path = Path(dataset_root).expanduser()
    if path.suffix.lower() != ".zip":
        return path
    if not path.is_file():
        raise DatasetError(f"{path} does not exist; expected {LAYOUT}")
    return extracted_root(path, "train/<class>/<image> and val/<class>/<image>")


def _check_tree(root: Path) -> list[str]:
    """The sorted class folders, after checking the layout of ``root``."""
    if not root.is_dir():
        raise DatasetError(f"{root} is not an existing folder; expected {LAYOUT}")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DatasetError(f"{root} has no '{split}' folder; expected {LAYOUT}")
    train, val = class_folders(root / "train"), class_folders(root / "val")
    if not train:
        raise DatasetError(f"{root / 'train'} has no class folders; expected {LAYOUT}")
    for folder, other, names in (
        (root / "val", root / "train", sorted(set(train) - set(val))),
        (root / "train", root / "val", sorted(set(val) - set(train))),
    ):
        if names:
            raise DatasetError(
                f"{folder} lacks {len(names)} class folder(s) that {other} has "
                f"({_shown(names)}); expected {LAYOUT}"
            )
    _check_wnids(root, train)
    return train


def _check_wnids(root: Path, classes: list[str]) -> None:
    """If ``root`` has a ``wnids.txt`` (Tiny-ImageNet), it must list exactly
    the class folders."""
    path = root / "wnids.txt"
    if not path.is_file():
        return
    try:
        listed = set(path.read_text(encoding="utf-8").split())
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(
            f"{path}: cannot read the class list ({error_reason(err)}); expected "
            "one WordNet id a line, one per class folder"
        ) from err
    missing = sorted(listed - set(classes))
    if missing:
        raise DatasetError(
            f"{path} lists {len(missing)} class(es) with no folder in "
            f"{root / 'train'} and {root / 'val'} ({_shown(missing)}); add their "
            "folders, or remove them from the list"
        )
    unlisted = sorted(set(classes) - listed)
    if unlisted:
        raise DatasetError(
            f"{root / 'train'} has {len(unlisted)} class folder(s) that {path} "
            f"does not list ({_shown(unlisted)}); it must list exactly the "
            "class folders, one a line"
        )


def _shown(names: list[str]) -> str:
    """The first ten ``names``, comma-separated."""
    return ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")


class _ImageFolder(LinkSafeFolder, ImageFolder):
    """torchvision's ``ImageFolder``, its folders walked by
    :class:`~bdr_avalanche.benchmarks.folders.FolderTree`."""


def _image_folder(folder: Path, loader: ImageLoader) -> ImageFolder:
    try:
        return _ImageFolder(str(folder), loader=loader)
    except DatasetError:
        raise
    except (FileNotFoundError, ValueError) as err:
        # e.g. "Found no valid file for the classes n01443537. Supported ..."
        raise DatasetError(
            f"{folder}: {' '.join(str(err).split())}; every class folder needs "
            f"image files; expected {LAYOUT}"
        ) from err


def _decode_all(
    dataset: ImageFolder, loader: ImageLoader, resolution: int
) -> TaskAwareSupervisedClassificationDataset:
    """Every image of ``dataset``, decoded with ``loader``, as one tensor
    dataset: uint8 images (N, 3, resolution, resolution) and their labels."""
    paths = [path for path, _ in dataset.samples]
    pixels = np.empty((len(paths), resolution, resolution, 3), dtype=np.uint8)

    def decode(start: int) -> int:
        stop = min(start + _CHUNK, len(paths))
        for i in range(start, stop):
            pixels[i] = np.asarray(loader(paths[i]))
        return stop - start

    start_time = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
    try:
        with tqdm(
            total=len(paths),
            desc=f"decoding {dataset.root}",
            unit="img",
            leave=False,
            disable=None,
        ) as bar:
            for done in pool.map(decode, range(0, len(paths), _CHUNK)):
                bar.update(done)
    finally:
        pool.shutdown(cancel_futures=True)
    logger.info(
        "decoded %d images of %s to %dx%d in %.1f s",
        len(paths),
        dataset.root,
        resolution,
        resolution,
        time.perf_counter() - start_time,
    )
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor(dataset.targets, dtype=torch.long)
    return _make_taskaware_tensor_classification_dataset(
        x, y, targets=y.tolist(), task_labels=0
    )
