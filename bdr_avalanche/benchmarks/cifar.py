"""Class-incremental CIFAR-100, read from the official python pickles.

Avalanche's ``SplitCIFAR100`` always goes through torchvision's
``CIFAR100`` with ``download=True``, which checks the MD5 of the official
files: it cannot read any other copy of the data (a re-pickled one, or the
small generated files of the tests), and its errors are bare
``RuntimeError``s. Here the pickled batches are read by
:class:`CIFAR100Pickles`, which checks their structure instead (files
present, readable, the right keys, uint8 images of shape (N, 3072), all 100
fine labels) and names the offending file in a :class:`DatasetError`; the
stream is then built by the same ``nc_benchmark`` call ``SplitCIFAR100``
makes. Missing files are downloaded only with ``download=True``, by
torchvision's own download (URL and MD5 of its ``CIFAR100``).
"""

from __future__ import annotations

import enum
import logging
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from avalanche.benchmarks.scenarios.deprecated.new_classes import NCScenario
from PIL import Image
from torchvision.datasets import CIFAR100, VisionDataset
from torchvision.datasets.utils import download_and_extract_archive

from ._common import DatasetError, error_reason, make_stream, stream_layout
from .specs import DATASETS, ICARL_SEED
from .transforms import torchvision_transforms

__all__ = ["CIFAR100_URL", "DEFAULT", "CIFAR100Pickles", "split_cifar100"]

logger = logging.getLogger(__name__)

SPEC = DATASETS["cifar100"]
assert SPEC.classes is not None  # given by its spec, not counted
NUM_CLASSES = SPEC.classes
CIFAR100_URL = CIFAR100.url
"""https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"""
FOLDER = CIFAR100.base_folder
"""``cifar-100-python``: the folder the official archive extracts to."""
FILES = ("train", "test", "meta")
LAYOUT = (
    f"<root>/{FOLDER}/train, <root>/{FOLDER}/test and <root>/{FOLDER}/meta "
    "(the pickled batches of the python version of CIFAR-100)"
)


class _Default(enum.Enum):
    DEFAULT = "DEFAULT"

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT = _Default.DEFAULT
"""Stands for the paper's transforms, :func:`cifar100_transforms`."""


class CIFAR100Pickles(VisionDataset):
    """One split of CIFAR-100 from ``<root>/cifar-100-python``.

    Items are ``(PIL image, fine label)`` as with torchvision's ``CIFAR100``;
    ``data`` is the (N, 32, 32, 3) uint8 array, ``targets`` the labels and
    ``classes`` the fine label names. The files are checked for structure,
    not checksum; a file that does not pass raises :class:`DatasetError`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        train: bool = True,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
    ) -> None:
        super().__init__(
            str(root), transform=transform, target_transform=target_transform
        )
        self.train = train
        folder = Path(root) / FOLDER
        self.data, self.targets = _read_batch(folder / ("train" if train else "test"))
        self.classes = _read_meta(folder / "meta")
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image, target = Image.fromarray(self.data[index]), self.targets[index]
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def extra_repr(self) -> str:
        return f"Split: {'Train' if self.train else 'Test'}"


def split_cifar100(
    dataset_root: str | os.PathLike,
    *,
    n_base: int = SPEC.n_base,
    n_phases: int = SPEC.n_phases,
    download: bool = False,
    seed: int = ICARL_SEED,
    train_transform: Callable | None | _Default = DEFAULT,
    eval_transform: Callable | None | _Default = DEFAULT,
) -> NCScenario:
    """CIFAR-100: ``n_base`` classes, then ``n_phases`` equal experiences.

    The paper's protocol is the default, "B50" with 5 phases of 10 classes;
    ``n_base=0, n_phases=10`` is "B0", 10 phases of 10. Class order
    ``class_order(100, seed)`` (the iCaRL order for seed 1993), class ids
    remapped to arrival order; :func:`cifar100_transforms` unless other
    transforms are given (``None``: PIL images).

    :param dataset_root: folder holding ``cifar-100-python/``.
    :param download: download and extract the official archive into
        ``dataset_root`` if files are missing.
    :raises DatasetError: files missing (and not downloadable) or malformed.
    """
    stream_layout(NUM_CLASSES, n_base, n_phases, SPEC.name)
    root = Path(dataset_root).expanduser()
    _ensure_files(root, download)
    default_train, default_eval = torchvision_transforms(SPEC.recipe())
    if train_transform is DEFAULT:
        train_transform = default_train
    if eval_transform is DEFAULT:
        eval_transform = default_eval
    train_set = CIFAR100Pickles(root, train=True)
    test_set = CIFAR100Pickles(root, train=False)
    logger.info(
        "CIFAR-100 from %s: %d training and %d test images",
        root / FOLDER,
        len(train_set),
        len(test_set),
    )
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


def _missing(root: Path) -> list[Path]:
    return [
        root / FOLDER / name for name in FILES if not (root / FOLDER / name).is_file()
    ]


def _ensure_files(root: Path, download: bool) -> None:
    """Check the three files are there, downloading them if asked to."""
    missing = _missing(root)
    if not missing:
        return
    how = f"download {CIFAR100_URL} and extract it under {root}, or pass download=True"
    if not download:
        raise DatasetError(
            f"CIFAR-100 not found in {root}: missing {', '.join(map(str, missing))}; "
            f"expected {LAYOUT}; {how}"
        )
    logger.info("downloading CIFAR-100 from %s into %s", CIFAR100_URL, root)
    try:
        download_and_extract_archive(
            CIFAR100.url, str(root), filename=CIFAR100.filename, md5=CIFAR100.tgz_md5
        )
    except Exception as err:  # network, disk or archive errors alike
        raise DatasetError(
            f"could not download CIFAR-100 into {root} ({type(err).__name__}: "
            f"{err}); download {CIFAR100_URL} yourself and extract it under "
            f"{root}, so that it holds {LAYOUT}"
        ) from err
    missing = _missing(root)
    if missing:
        raise DatasetError(
            f"the CIFAR-100 download into {root} did not produce "
            f"{', '.join(map(str, missing))}; expected {LAYOUT}"
        )


def _read_pickle(path: Path, expected: str) -> dict[str, Any]:
    """The pickled dict in ``path``, keys decoded to ``str``."""
    try:
        with open(path, "rb") as file:
            entry = pickle.load(file, encoding="bytes")
    except Exception as err:  # truncated or foreign files fail in many ways
        raise DatasetError(
            f"{path}: cannot unpickle ({error_reason(err)}); the file is "
            f"truncated or corrupt, or not a CIFAR-100 file: expected {expected}, "
            f"as in {CIFAR100_URL}"
        ) from err
    if not isinstance(entry, dict):
        raise DatasetError(
            f"{path} holds a {type(entry).__name__}, not a dict; expected {expected}"
        )
    return {_text(key): value for key, value in entry.items()}


def _read_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    """Images (N, 32, 32, 3) uint8 and fine labels of a pickled batch."""
    expected = (
        "a pickled dict with b'data' (uint8 array of shape (N, 3072)) and "
        f"b'fine_labels' (N labels in 0..{NUM_CLASSES - 1})"
    )
    entry = _read_pickle(path, expected)

    def fail(problem: str) -> DatasetError:
        return DatasetError(
            f"{path} is not a CIFAR-100 batch: {problem}; expected {expected}"
        )

    if "data" not in entry or "fine_labels" not in entry:
        raise fail(f"its keys are {list(entry)}")
    data = entry["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise fail(
            f"'data' is {type(data).__name__} of dtype "
            f"{getattr(data, 'dtype', None)} and shape {getattr(data, 'shape', None)}"
        )
    if data.shape[1] != 3 * 32 * 32 or len(data) == 0:
        raise fail(f"'data' has shape {data.shape}")
    labels = np.asarray(entry["fine_labels"])
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise fail(
            f"'fine_labels' has shape {labels.shape} and dtype {labels.dtype} "
            f"for {len(data)} images"
        )
    absent = sorted(set(range(NUM_CLASSES)) - set(labels.tolist()))
    if absent or labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise fail(
            f"'fine_labels' range over {labels.min()}..{labels.max()} and miss "
            f"{len(absent)} of the {NUM_CLASSES} classes"
        )
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.tolist()


def _read_meta(path: Path) -> list[str]:
    """The fine label names of the ``meta`` file."""
    expected = f"a pickled dict with b'fine_label_names' ({NUM_CLASSES} names)"
    names = _read_pickle(path, expected).get("fine_label_names")
    if not isinstance(names, (list, tuple)) or len(names) != NUM_CLASSES:
        raise DatasetError(
            f"{path} is not the CIFAR-100 meta file: no list of {NUM_CLASSES} "
            f"'fine_label_names'; expected {expected}"
        )
    return [_text(name) for name in names]


def _text(value: Any) -> Any:
    """``bytes`` as ``str`` (the official files are Python 2 pickles)."""
    return value.decode("latin1") if isinstance(value, bytes) else value
