"""Class-incremental streams of an image-folder tree: ImageNet-Subset,
Tiny-ImageNet and the like.

The layout is ``<root>/train/<class>/<image>`` and
``<root>/val/<class>/<image>`` with the same class folders (the layout of
the 100-class ImageNet-Subset of the class-incremental literature, and of
the Tiny-ImageNet-100 archive of this project); ``root`` may also be a
``.zip`` holding one top folder with that layout, extracted once to a cache.
Images are read with torchvision's ``ImageFolder``, so label ``i`` is the
``i``-th class folder in sorted order (WordNet ids for ImageNet data) and
the iCaRL order is applied to those labels.

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

import numpy as np
import torch
from avalanche.benchmarks.scenarios.deprecated.new_classes import NCScenario
from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset
from avalanche.benchmarks.utils.classification_dataset import (
    TaskAwareSupervisedClassificationDataset,
)
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.transforms import functional as F
from tqdm.auto import tqdm

from .._utils import check_positive_int
from ._archive import extracted_root
from ._common import (
    ICARL_SEED,
    DatasetError,
    class_folders,
    make_stream,
    stream_layout,
)
from .transforms import imagenet_transforms, small_image_transforms

__all__ = ["ImageLoader", "split_imagefolder"]

logger = logging.getLogger(__name__)

FULL_RESOLUTION = 224
"""From this resolution on, images get the ImageNet crops and are not
shrunk when loaded."""

LAYOUT = (
    "<root>/train/<class>/<image> and <root>/val/<class>/<image> with the same "
    "class folders (the ImageNet-Subset / Tiny-ImageNet-100 layout), or a .zip "
    "holding one top folder with that layout"
)

_CHUNK = 256


class ImageLoader:
    """Opens an image file as an RGB PIL image, shrunk to ``resolution``.

    With a ``resolution``, the shorter side is resized to it (bilinear,
    after letting the JPEG decoder downscale by a power of two where that
    stays at least as large) and the centre square is kept; images already
    of that size are left as they are. Unreadable files raise
    :class:`DatasetError` naming the file.
    """

    def __init__(self, resolution: int | None = None) -> None:
        self.resolution = resolution

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
                f"cannot read image {path} ({err}); every file under the "
                "class folders must be a readable image (JPEG, PNG, ...)"
            ) from err
        if size is not None and image.size != (size, size):
            image = F.center_crop(F.resize(image, size), size)
        return image


def split_imagefolder(
    dataset_root: str | os.PathLike,
    *,
    n_base: int = 50,
    n_phases: int = 5,
    seed: int = ICARL_SEED,
    resolution: int = FULL_RESOLUTION,
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

    :raises DatasetError: the tree is missing, not in the expected layout,
        or (``in_memory``) holds an unreadable image.
    """
    check_positive_int("resolution", resolution)
    check_positive_int("n_base", n_base, minimum=0)
    check_positive_int("n_phases", n_phases)
    if in_memory and resolution >= FULL_RESOLUTION:
        raise ValueError(
            f"in_memory=True needs resolution < {FULL_RESOLUTION} (images are "
            f"stored shrunk to resolution x resolution); got resolution={resolution}"
        )
    root = _resolve_root(dataset_root)
    classes = _check_tree(root)
    stream_layout(len(classes), n_base, n_phases)
    small = resolution < FULL_RESOLUTION
    loader = ImageLoader(resolution if small else None)
    train_set = _image_folder(root / "train", loader)
    test_set = _image_folder(root / "val", loader)
    logger.info(
        "%s: %d classes, %d training and %d validation images",
        root,
        len(classes),
        len(train_set),
        len(test_set),
    )
    if in_memory:
        train_set = _decode_all(train_set, loader, resolution)
        test_set = _decode_all(test_set, loader, resolution)
        train_transform, eval_transform = small_image_transforms(resolution)
    elif small:
        train_transform, eval_transform = small_image_transforms(
            resolution, from_pil=True
        )
    else:
        train_transform, eval_transform = imagenet_transforms(resolution)
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
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            raise DatasetError(
                f"{folder} lacks {len(names)} class folder(s) that {other} has "
                f"({shown}); expected {LAYOUT}"
            )
    return train


def _image_folder(folder: Path, loader: ImageLoader) -> ImageFolder:
    try:
        return ImageFolder(str(folder), loader=loader)
    except (FileNotFoundError, ValueError) as err:
        raise DatasetError(f"{folder}: {err}; expected {LAYOUT}") from err


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
