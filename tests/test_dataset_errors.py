"""Damaged data sets give one clear :class:`DatasetError`, naming the file or
folder at fault and what is wrong with it: truncated or malformed CIFAR-100
batches, images that cannot be decoded (when the stream is built with
``in_memory``, else when the sample is loaded, also through ``DataLoader``
workers), class folders missing from a split or from ``wnids.txt``, class
folders without images, and corrupt zips. The data are generated in the real
on-disk formats (see ``fake_datasets``)."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import fake_datasets as fake
import numpy as np
import pytest
from torch.utils.data import DataLoader

from bdr_avalanche.benchmarks import (
    DatasetError,
    split_cifar100,
    split_imagefolder,
    split_imagenet,
)
from bdr_avalanche.benchmarks.imagefolder import ImageLoader
from bdr_avalanche.experiment.cli import main

WNIDS = fake.wnids(10)
SPLIT = {"n_base": 4, "n_phases": 3, "resolution": 8}
"""10 classes: 4, then 3 phases of 2; images shrunk to 8x8."""
BAD = f"val/{WNIDS[7]}/bad.JPEG"


def raises(build, *args, **kwargs) -> str:
    """The message of the :class:`DatasetError` ``build`` raises: one line."""
    with pytest.raises(DatasetError) as err:
        build(*args, **kwargs)
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.fixture(autouse=True)
def data_cache(tmp_path, monkeypatch) -> Path:
    """Zips are extracted under the test's own folder."""
    monkeypatch.setenv("BDR_AVALANCHE_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ---------------------------------------------------------------- CIFAR-100


@pytest.fixture
def cifar_root(tmp_path) -> Path:
    return fake.write_cifar100(tmp_path / "cifar", train_per_class=2)


@pytest.mark.parametrize("name", ["train", "test", "meta"])
def test_cifar_truncated_file(cifar_root, name):
    path = fake.truncate(cifar_root / fake.CIFAR_FOLDER / name)
    message = raises(split_cifar100, cifar_root)
    assert message.startswith(f"{path}: cannot unpickle (")
    assert "the file is truncated or corrupt, or not a CIFAR-100 file" in message


def test_cifar_garbage_file(cifar_root):
    path = cifar_root / fake.CIFAR_FOLDER / "test"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    message = raises(split_cifar100, cifar_root)
    assert message.startswith(f"{path}: cannot unpickle (")
    assert "truncated or corrupt" in message


def test_cifar_labels_do_not_match_images(cifar_root):
    path = cifar_root / fake.CIFAR_FOLDER / "train"
    batch = fake.cifar_batch(list(range(100)) * 2, np.random.default_rng(0))
    batch[b"fine_labels"] = batch[b"fine_labels"][:-1]
    fake.write_pickle(path, batch)
    message = raises(split_cifar100, cifar_root)
    assert message.startswith(
        f"{path} is not a CIFAR-100 batch: 'fine_labels' has shape (199,) and "
        "dtype int64 for 200 images; expected"
    )


def test_cifar_wrong_image_size(cifar_root):
    path = cifar_root / fake.CIFAR_FOLDER / "test"
    batch = fake.cifar_batch(list(range(100)), np.random.default_rng(0))
    batch[b"data"] = batch[b"data"][:, :1024].copy()  # 32x32 grey, not RGB
    fake.write_pickle(path, batch)
    message = raises(split_cifar100, cifar_root)
    assert message.startswith(
        f"{path} is not a CIFAR-100 batch: 'data' has shape (100, 1024); expected"
    )
    assert "(N, 3072)" in message


# ---------------------------------------------------------------- image folders


@pytest.fixture
def tree(tmp_path) -> Path:
    """``<tmp>/tree/{train,val}/<wnid>/*.JPEG``: 10 classes, 1 image each."""
    root = tmp_path / "tree"
    fake.write_imagefolder(root, num_classes=10, train_per_class=1, size=8)
    return root


def source(tree: Path, as_zip: bool, cache: Path) -> tuple[Path, Path]:
    """What to pass to ``split_imagefolder`` (the folder or a zip of it),
    and the folder its files are then read from."""
    if not as_zip:
        return tree, tree
    return fake.zip_tree(tree, tree.parent / "tree.zip"), cache / "tree" / "tree"


def suffix(dataset: Path, as_zip: bool) -> str:
    """What tree-level messages end with."""
    return f" (the tree was extracted from {dataset})" if as_zip else ""


FOLDER_OR_ZIP = pytest.mark.parametrize("as_zip", [False, True], ids=["dir", "zip"])


@FOLDER_OR_ZIP
@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty", "text"])
def test_corrupt_image_in_memory(tree, data_cache, as_zip, kind):
    """Decoding every image at build time names the bad one: no training."""
    fake.write_corrupt_image(tree / BAD, kind)
    dataset, read_from = source(tree, as_zip, data_cache)
    message = raises(split_imagefolder, dataset, in_memory=True, **SPLIT)
    assert message.startswith(f"{read_from / BAD}: cannot decode image (")
    fix = f"tree/{BAD} in {dataset}" if as_zip else "the file"
    assert message.endswith(f"); remove or replace {fix}")


def experience_with(bench, label: int, stream: str = "test"):
    """The eval-mode dataset of the experience of original class ``label``."""
    index = next(
        i for i, classes in enumerate(bench.original_classes_in_exp) if label in classes
    )
    return getattr(bench, f"{stream}_stream")[index].dataset.eval()


def load_all(dataset, num_workers: int) -> int:
    """Samples read through a ``DataLoader``."""
    count = 0
    try:
        for batch in DataLoader(dataset, batch_size=2, num_workers=num_workers):
            count += len(batch[1])
    except DatasetError as err:
        # without the frames of the DataLoader's iterator, its workers shut
        # down now, not at a later garbage collection that waits 5 s for them
        raise err.with_traceback(None) from None
    return count


@pytest.mark.system
@FOLDER_OR_ZIP
def test_corrupt_image_lazy(tree, data_cache, as_zip):
    """Without ``in_memory`` the build succeeds; loading the bad sample raises
    DatasetError naming it, directly, through a DataLoader and through its
    worker processes (which re-raise the type with the message inside)."""
    fake.write_corrupt_image(tree / BAD, "garbage")
    dataset, read_from = source(tree, as_zip, data_cache)
    bench = split_imagefolder(dataset, **SPLIT)
    data = experience_with(bench, 7)
    expected = f"{read_from / BAD}: cannot decode image ("
    message = raises(lambda: [data[i] for i in range(len(data))])
    assert message.startswith(expected)
    message = raises(load_all, data, num_workers=0)
    assert message.startswith(expected)
    with pytest.raises(DatasetError) as err:
        load_all(data, num_workers=1)
    assert expected in str(err.value)
    # other experiences load, with workers too; the datasets pickle (spawn)
    healthy = experience_with(bench, 0, "train")
    assert load_all(healthy, num_workers=1) == len(healthy)
    copy = pickle.loads(pickle.dumps(data))
    assert raises(lambda: [copy[i] for i in range(len(copy))]).startswith(expected)


def test_image_loader_pickles(tmp_path):
    """The loader is a module-level class: it survives pickling (DataLoader
    workers started with spawn) and still names the file and the zip."""
    (tmp_path / "x").mkdir()
    bad = fake.write_corrupt_image(tmp_path / "x" / "a.JPEG", "empty")
    loader = pickle.loads(
        pickle.dumps(ImageLoader(8, archive=tmp_path / "d.zip", archive_dir=tmp_path))
    )
    assert raises(loader, str(bad)) == (
        f"{bad}: cannot decode image (UnidentifiedImageError: cannot identify "
        f"image file '{bad}'); remove or replace x/a.JPEG in {tmp_path / 'd.zip'}"
    )


def remove_class(folder: Path) -> None:
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()


@FOLDER_OR_ZIP
@pytest.mark.parametrize(("lacking", "other"), [("val", "train"), ("train", "val")])
def test_class_missing_from_a_split(tree, data_cache, as_zip, lacking, other):
    remove_class(tree / lacking / WNIDS[3])
    dataset, read_from = source(tree, as_zip, data_cache)
    message = raises(split_imagefolder, dataset, **SPLIT)
    assert message.startswith(
        f"{read_from / lacking} lacks 1 class folder(s) that {read_from / other} "
        f"has ({WNIDS[3]}); expected"
    )
    assert message.endswith(suffix(dataset, as_zip))


@FOLDER_OR_ZIP
@pytest.mark.parametrize("split", ["train", "val"])
def test_class_folder_without_images(tree, data_cache, as_zip, split):
    """A class folder holding no image file (here only a README)."""
    folder = tree / split / WNIDS[2]
    for path in folder.iterdir():
        path.unlink()
    (folder / "README.txt").write_text("images to come\n")
    dataset, read_from = source(tree, as_zip, data_cache)
    message = raises(split_imagefolder, dataset, **SPLIT)
    assert message.startswith(
        f"{read_from / split}: Found no valid file for the classes {WNIDS[2]}. "
        "Supported extensions are: .jpg, .jpeg, .png"
    )
    assert "; every class folder needs image files; expected" in message
    assert message.endswith(suffix(dataset, as_zip))


def test_empty_class_folder(tree):
    folder = tree / "val" / WNIDS[5]
    for path in folder.iterdir():
        path.unlink()
    message = raises(split_imagefolder, tree, **SPLIT)
    assert message.startswith(
        f"{tree / 'val'}: Found no valid file for the classes {WNIDS[5]}."
    )


@FOLDER_OR_ZIP
def test_wnids_lists_a_class_without_folder(tree, data_cache, as_zip):
    (tree / "wnids.txt").write_text("\n".join([*WNIDS, "n99999999"]) + "\n")
    dataset, read_from = source(tree, as_zip, data_cache)
    message = raises(split_imagefolder, dataset, **SPLIT)
    assert message == (
        f"{read_from / 'wnids.txt'} lists 1 class(es) with no folder in "
        f"{read_from / 'train'} and {read_from / 'val'} (n99999999); add their "
        "folders, or remove them from the list" + suffix(dataset, as_zip)
    )


def test_wnids_misses_a_class_folder(tree):
    (tree / "wnids.txt").write_text("\n".join(WNIDS[:4] + WNIDS[5:]) + "\n")
    message = raises(split_imagefolder, tree, **SPLIT)
    assert message == (
        f"{tree / 'train'} has 1 class folder(s) that {tree / 'wnids.txt'} does "
        f"not list ({WNIDS[4]}); it must list exactly the class folders, one a line"
    )
    (tree / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    assert split_imagefolder(tree, **SPLIT).n_experiences == 4


def damage_member(archive: Path) -> Path:
    return fake.damage_zip_member(archive, f"tree/train/{WNIDS[1]}/{WNIDS[1]}_0.JPEG")


@pytest.mark.parametrize(
    ("damage", "compression"),
    [
        (lambda z: z.write_text("not a zip at all"), zipfile.ZIP_STORED),
        (fake.truncate, zipfile.ZIP_STORED),
        (fake.truncate, zipfile.ZIP_DEFLATED),
        (damage_member, zipfile.ZIP_STORED),
        (damage_member, zipfile.ZIP_DEFLATED),
    ],
    ids=["not-zip", "truncated", "truncated-deflated", "bad-member", "bad-deflated"],
)
def test_corrupt_zip(tree, data_cache, damage, compression):
    """Nothing half-extracted is left in the cache."""
    archive = fake.zip_tree(tree, tree.parent / "tree.zip", compression=compression)
    damage(archive)
    message = raises(split_imagefolder, archive, **SPLIT)
    assert message.startswith(f"{archive}: not a readable zip file (")
    assert "); it is truncated or corrupt: expected a zip holding one top" in message
    assert not data_cache.exists() or list(data_cache.iterdir()) == []


# ---------------------------------------------------------------- ImageNet


@pytest.fixture
def imagenet_root(tmp_path) -> Path:
    root = tmp_path / "imagenet"
    fake.write_imagenet(root)
    return root


def test_imagenet_corrupt_image(imagenet_root):
    """ImageNet loads lazily: the bad sample names its file when loaded."""
    wnid = fake.wnids(1000)[5]
    bad = imagenet_root / "val" / wnid / f"{wnid}_0.JPEG"
    fake.write_corrupt_image(bad, "truncated")
    bench = split_imagenet(imagenet_root, resolution=8)
    message = raises(load_all, experience_with(bench, 5), num_workers=0)
    assert message.startswith(f"{bad}: cannot decode image (OSError: ")
    assert message.endswith("); remove or replace the file")
    assert len(experience_with(bench, 5, "train")[0][0]) == 3


def test_imagenet_class_folder_without_images(imagenet_root):
    wnid = fake.wnids(1000)[9]
    (imagenet_root / "val" / wnid / f"{wnid}_0.JPEG").unlink()
    message = raises(split_imagenet, imagenet_root)
    assert message.startswith(
        f"cannot read ImageNet from {imagenet_root / 'val'}: FileNotFoundError: "
        f"Found no valid file for the classes {wnid}."
    )


# ---------------------------------------------------------------- CLI


@pytest.mark.parametrize("dataset", ["cifar100", "imagefolder"])
def test_cli_one_line_before_any_output(tmp_path, tree, cifar_root, capsys, dataset):
    """The CLI prints the error on one line, exits 1 and writes nothing."""
    if dataset == "cifar100":
        root, bad = cifar_root, fake.truncate(cifar_root / fake.CIFAR_FOLDER / "test")
        options = {}
    else:
        root, bad = tree, fake.write_corrupt_image(tree / BAD, "text")
        options = {"in_memory": True, "mem_per_class": 1, **SPLIT}
    argv = ["run", "--dataset", dataset, "--dataset_root", str(root)]
    for key, value in options.items():
        argv += [f"--{key}", json.dumps(value)]
    argv += ["--output_dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"bdr-avalanche: error: {bad}: cannot ")
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()
