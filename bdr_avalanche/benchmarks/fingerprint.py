"""Fingerprints of the data a stream is built from.

A run's first experience can be shared with later runs (the base-model
cache of :mod:`bdr_avalanche.experiment.base_cache`): that is only right
when they read the same data. The path of the data is not enough, since a
tree can change in place, so :func:`data_fingerprint` summarises what the
stream builder of each dataset reads:

- an image-folder tree (``imagefolder``, ``imagenet``): every image file of
  ``train/`` and ``val/`` that the builder loads (the same walk, see
  :class:`~bdr_avalanche.benchmarks.folders.FolderTree`), as its path in
  the split, its label, its size and its modification time;
- a ``.zip`` (``imagefolder``): its size and its members' names, sizes and
  CRC-32s (the stamp its extraction keeps, see
  :mod:`~bdr_avalanche.benchmarks._archive`);
- CIFAR-100: the size and modification time of its three pickles;
- ``digits``: a hash of the images and labels bundled with scikit-learn.

The files are not read, only listed and ``stat``-ed (a zip's members are
listed from its central directory), so a fingerprint of ImageNet costs
one walk of the tree, not a pass over 150 GB. An image replaced by another
of the same size with its modification time set back would go unnoticed;
any ordinary write (a copy, an edit, a new extraction) changes it.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["FINGERPRINTS", "data_fingerprint"]


def data_fingerprint(dataset: str, dataset_root: str | os.PathLike | None) -> str:
    """A text that changes when the data that the stream of ``dataset``
    reads from ``dataset_root`` changes (see the module for what it covers).

    :raises ValueError: ``dataset`` has no fingerprint in
        :data:`FINGERPRINTS` (a dataset added without one).
    """
    if dataset not in FINGERPRINTS:
        raise ValueError(
            f"dataset {dataset!r} has no data fingerprint: add one to "
            "bdr_avalanche.benchmarks.fingerprint.FINGERPRINTS"
        )
    return FINGERPRINTS[dataset](dataset_root)


def _digits(dataset_root: str | os.PathLike | None) -> str:
    from sklearn.datasets import load_digits

    digits = load_digits()
    digest = hashlib.sha256()
    for array in (digits.images, digits.target):
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return f"arrays {digest.hexdigest()}"


def _root(dataset_root: str | os.PathLike | None) -> Path:
    """The folder of a dataset that is not embedded."""
    if dataset_root is None:
        raise ValueError("dataset_root is required for this dataset's fingerprint")
    return Path(dataset_root).expanduser()


def _cifar100(dataset_root: str | os.PathLike | None) -> str:
    from .cifar import FILES, FOLDER

    folder = _root(dataset_root) / FOLDER
    return _files({name: folder / name for name in FILES})


def _imagenet(dataset_root: str | os.PathLike | None) -> str:
    return _tree(_root(dataset_root))


def _imagefolder(dataset_root: str | os.PathLike | None) -> str:
    path = _root(dataset_root)
    if path.suffix.lower() != ".zip":
        return _tree(path)
    from ._archive import _stamp

    with zipfile.ZipFile(path) as archive:
        return f"zip {_stamp(path, archive)}"


def _files(files: dict[str, Path]) -> str:
    """``name, size, mtime`` of each of ``files``, hashed."""
    digest = hashlib.sha256()
    for name, path in sorted(files.items()):
        info = os.stat(path)
        digest.update(f"{name}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return f"{len(files)} files {digest.hexdigest()}"


def _tree(root: Path) -> str:
    """The image files of ``root/train`` and ``root/val`` as the builders
    walk them: path in the split, label, size and mtime of each, hashed."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from .folders import class_folders, folder_samples

    digest = hashlib.sha256()
    count = 0
    for split in ("train", "val"):
        folder = root / split
        classes = class_folders(folder)
        samples = folder_samples(
            folder,
            {name: index for index, name in enumerate(classes)},
            IMG_EXTENSIONS,
            allow_empty=True,
        )
        for path, label in samples:
            info = os.stat(path)
            relative = os.path.relpath(path, folder)
            digest.update(
                f"{split}\0{relative}\0{label}\0{info.st_size}\0"
                f"{info.st_mtime_ns}\n".encode()
            )
        count += len(samples)
    return f"{count} files {digest.hexdigest()}"


FINGERPRINTS: dict[str, Callable[[str | os.PathLike | None], str]] = {
    "digits": _digits,
    "cifar100": _cifar100,
    "imagenet": _imagenet,
    "imagefolder": _imagefolder,
}
"""The fingerprint of each dataset of
:data:`~bdr_avalanche.benchmarks.specs.DATASETS`, given its
``dataset_root`` (a test checks that every dataset has one)."""
