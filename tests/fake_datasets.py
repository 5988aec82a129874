"""Small generated data sets written in the real on-disk formats.

CIFAR-100 as the pickled dicts with bytes keys of the official python
version, image-folder trees of small JPEGs written with PIL, torchvision's
ImageNet layout with its ``meta.bin``, and zips of such trees. The pixels
encode the class so tests can check that images and labels travel together.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CIFAR_FOLDER = "cifar-100-python"


def cifar_pixels_class(value: float) -> int:
    """The class encoded in the red channel of a generated CIFAR image."""
    return round(value / 2)


def cifar_batch(labels: list[int], rng: np.random.Generator) -> dict:
    """A batch dict as in the official files: the red channel is ``2 * label``,
    green and blue are noise (so every image differs from the others)."""
    n = len(labels)
    data = rng.integers(0, 256, size=(n, 3, 1024), dtype=np.uint8)
    data[:, 0, :] = 2 * np.asarray(labels, dtype=np.uint8)[:, None]
    return {
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        b"batch_label": b"generated batch 1 of 1",
        b"fine_labels": list(labels),
        b"coarse_labels": [label // 5 for label in labels],
        b"data": data.reshape(n, 3072),
    }


def write_pickle(path: Path, obj: object) -> None:
    with open(path, "wb") as file:
        pickle.dump(obj, file, protocol=2)


def write_cifar100(
    root: Path, train_per_class: int = 3, test_per_class: int = 1, seed: int = 0
) -> Path:
    """``<root>/cifar-100-python/{train,test,meta}`` with 100 classes."""
    folder = root / CIFAR_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(100), per_class)).tolist()
        write_pickle(folder / name, cifar_batch(labels, rng))
    write_pickle(
        folder / "meta",
        {
            b"fine_label_names": [f"class{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"super{i}".encode() for i in range(20)],
        },
    )
    return root


def wnids(num_classes: int) -> list[str]:
    """Sorted WordNet-like ids."""
    return [f"n{1000 + 37 * i:08d}" for i in range(num_classes)]


def class_colour(index: int) -> tuple[int, int]:
    """Red and green levels encoding class ``index`` (0..99) 20 apart."""
    return 40 + 20 * (index // 10), 40 + 20 * (index % 10)


def colour_class(red: float, green: float) -> int:
    """Inverse of :func:`class_colour`, for decoded (lossy) pixels."""
    return 10 * round((red - 40) / 20) + round((green - 40) / 20)


def class_image(index: int, width: int, height: int, shift: int = 0) -> Image.Image:
    """Flat red/green encoding the class, a blue ramp (so crops and flips show)."""
    red, green = class_colour(index)
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[..., 0], pixels[..., 1] = red, green
    pixels[..., 2] = (np.arange(width) * 255 // max(width - 1, 1) + shift) % 256
    return Image.fromarray(pixels)


def write_imagefolder(
    root: Path,
    num_classes: int = 100,
    train_per_class: int = 2,
    val_per_class: int = 1,
    size: int = 16,
) -> list[str]:
    """``<root>/{train,val}/<wnid>/*.JPEG``; every 7th class is 5:4 landscape.

    Returns the class folder names, sorted (label ``i`` is the ``i``-th).
    """
    names = wnids(num_classes)
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for index, wnid in enumerate(names):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            width = size * 5 // 4 if index % 7 == 0 else size
            for k in range(per_class):
                image = class_image(index, width, size, shift=31 * k)
                image.save(folder / f"{wnid}_{k}.JPEG", quality=95, subsampling=0)
    return names


def write_imagenet(root: Path, num_classes: int = 1000, size: int = 8) -> list[str]:
    """torchvision's ImageNet layout: one JPEG per class in ``train`` and
    ``val``, and ``meta.bin`` as torchvision writes it from the devkit:
    ``torch.save((wnid_to_classes, val_wnids))``."""
    names = wnids(num_classes)
    image = Image.new("RGB", (size, size), (120, 60, 200))
    for split in ("train", "val"):
        for wnid in names:
            (root / split / wnid).mkdir(parents=True)
            image.save(root / split / wnid / f"{wnid}_0.JPEG")
    wnid_to_classes = {
        wnid: (f"thing {i}", f"other name {i}") for i, wnid in enumerate(names)
    }
    torch.save((wnid_to_classes, list(names)), root / "meta.bin")
    return names


def zip_tree(
    folder: Path,
    archive: Path,
    top: str | None = None,
    compression: int = zipfile.ZIP_STORED,
) -> Path:
    """Zip ``folder`` as one top folder named ``top`` (default: its name)."""
    top = top or folder.name
    with zipfile.ZipFile(archive, "w", compression) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"{top}/{path.relative_to(folder).as_posix()}")
    return archive


# ---------------------------------------------------------------- damaged files


def truncate(path: Path, fraction: float = 0.5) -> Path:
    """Cut ``path`` to ``fraction`` of its size, as an interrupted copy would."""
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * fraction)])
    return path


def write_corrupt_image(path: Path, kind: str) -> Path:
    """An image file that cannot be decoded.

    ``kind``: ``"garbage"`` (a JPEG signature, then noise), ``"truncated"``
    (a valid JPEG cut in half), ``"empty"`` (zero bytes) or ``"text"`` (not
    an image at all).
    """
    if kind == "garbage":
        noise = np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8)
        path.write_bytes(b"\xff\xd8\xff\xe0" + noise.tobytes())
    elif kind == "truncated":
        class_image(3, 32, 32).save(path, format="JPEG", quality=95)
        truncate(path)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not an image\n")
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return path


def damage_zip_member(archive: Path, member: str) -> Path:
    """Overwrite the stored bytes of ``member`` in ``archive`` with noise,
    leaving the zip's directory intact (a bad sector, a bad download)."""
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(member)
    data = bytearray(archive.read_bytes())
    # local header: 30 bytes, then the name and the extra field
    name_len, extra_len = np.frombuffer(
        bytes(data[info.header_offset + 26 : info.header_offset + 30]), "<u2"
    )
    start = info.header_offset + 30 + int(name_len) + int(extra_len)
    noise = np.random.default_rng(1).integers(0, 256, info.compress_size, np.uint8)
    data[start : start + info.compress_size] = noise.tobytes()
    archive.write_bytes(bytes(data))
    return archive
