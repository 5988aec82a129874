"""Image-folder trees with symbolic links: links out of the tree are
followed, a link to a folder that leads back into the tree (or above it) is
skipped with a warning naming it, and each image counts once, in the class
sizes of the config checks, in the datasets and in the images decoded with
``in_memory``. Before, ``os.walk(followlinks=True)`` walked ``loop -> ..``
until the path grew too long (24 images read as 264), and a few such links
made the walk exponential (a hang).

Expected counts come from the files the tests write, never from the code
under test."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import Counter
from pathlib import Path

import fake_datasets as fake
import pytest
from torchvision.datasets import ImageFolder

from bdr_avalanche.benchmarks import DatasetError, split_imagefolder, split_imagenet
from bdr_avalanche.benchmarks.imagefolder import _ImageFolder, imagefolder_class_sizes
from bdr_avalanche.experiment.cli import main

NUM_CLASSES, PER_CLASS = 4, 6
WNIDS = fake.wnids(NUM_CLASSES)
SPLIT = {"n_base": 2, "n_phases": 2, "resolution": 8}
"""4 classes: 2, then 2 phases of 1; images shrunk to 8x8."""
BOUND_S = 900
"""Far more than a walk of these trees takes (well under a second)."""


@pytest.fixture(autouse=True)
def data_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("BDR_AVALANCHE_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def tree(tmp_path) -> Path:
    """4 classes, 6 training images and 1 validation image each: 24 real
    training images."""
    root = tmp_path / "tree"
    fake.write_imagefolder(
        root, num_classes=NUM_CLASSES, train_per_class=PER_CLASS, size=8
    )
    return root


def write_images(folder: Path, n: int, index: int = 0, prefix: str = "x") -> None:
    """``n`` new JPEGs of class ``index`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        image = fake.class_image(index, 8, 8, shift=7 * k + 3)
        image.save(folder / f"{prefix}_{k}.JPEG", quality=95)


def real_images(folder: Path) -> int:
    """JPEG files under ``folder``, found without following any link."""
    return sum(
        name.endswith(".JPEG") and not (Path(here) / name).is_symlink()
        for here, _, names in os.walk(folder)  # followlinks=False
        for name in names
    )


def in_time(build, *args, **kwargs):
    """``build(*args, **kwargs)``, failing the test if it has not returned
    within ``BOUND_S`` (the thread then runs on, as a daemon)."""
    result: list = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(build(*args, **kwargs))
        except BaseException as err:  # handed to the test's thread
            error.append(err)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(BOUND_S)
    assert not thread.is_alive(), f"{build.__name__} still walking after {BOUND_S} s"
    if error:
        raise error[0]
    return result[0]


def train_counts(bench) -> Counter:
    """Training images per original class id of a stream."""
    order = bench.classes_order_original_ids
    return Counter(order[int(y)] for e in bench.train_stream for y in e.dataset.targets)


def check_counts(root: Path, expected: dict[str, int]) -> None:
    """The class sizes, the stream and the in-memory stream all hold
    exactly ``expected`` training images per class folder, each once."""
    by_label = {WNIDS.index(name): n for name, n in expected.items()}
    assert in_time(imagefolder_class_sizes, root) == expected
    for in_memory in (False, True):
        bench = in_time(split_imagefolder, root, in_memory=in_memory, **SPLIT)
        assert train_counts(bench) == by_label
        assert sum(len(e.dataset) for e in bench.train_stream) == sum(expected.values())
        assert sum(len(e.dataset) for e in bench.test_stream) == NUM_CLASSES


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_loop_to_the_parent_counts_the_real_images_once(tree, caplog):
    """The tree of the issue: ``train/c0/loop -> ..`` gave 264 images, not 24."""
    loop = tree / "train" / WNIDS[0] / "loop"
    loop.symlink_to("..")
    assert real_images(tree / "train") == NUM_CLASSES * PER_CLASS == 24
    with caplog.at_level(logging.WARNING):
        check_counts(tree, dict.fromkeys(WNIDS, PER_CLASS))
    dataset = _ImageFolder(str(tree / "train"))
    assert len(dataset.samples) == 24
    assert not [path for path, _ in dataset.samples if "/loop/" in path]
    assert dataset.classes == WNIDS
    (message,) = [m for m in warnings_of(caplog) if str(loop) in m]
    assert message == (
        f"skipping the link {loop} -> {tree / 'train'}: it leads back into "
        f"{tree / 'train'}; each folder is read once"
    )


def test_loops_deep_and_to_the_root_end(tree, caplog):
    """Links to a folder above, to the data set root, to ``/`` and two to
    the split folder in one sub-folder (exponential for ``os.walk`` with
    ``followlinks``): the walk ends and every real image counts once,
    sub-folders included."""
    train = tree / "train"
    write_images(train / WNIDS[0] / "sub", 2, index=0)
    write_images(train / WNIDS[0] / "sub" / "deeper", 1, index=0)
    links = {
        train / WNIDS[0] / "sub" / "loop": "../..",
        train / WNIDS[0] / "sub" / "deeper" / "up": "..",
        train / WNIDS[1] / "root": str(tree),
        train / WNIDS[1] / "slash": "/",
        train / WNIDS[2] / "a": "..",
        train / WNIDS[2] / "b": "..",
        train / WNIDS[3] / "self": ".",
        train / "all": ".",  # a class folder that is the split folder
    }
    for link, target in links.items():
        link.symlink_to(target)
    expected = dict.fromkeys(WNIDS, PER_CLASS)
    expected[WNIDS[0]] += 3
    assert real_images(train / WNIDS[0]) == expected[WNIDS[0]]
    with caplog.at_level(logging.WARNING):
        check_counts(tree, expected)
    warned = warnings_of(caplog)
    for link in links:
        assert [m for m in warned if m.startswith(f"skipping the link {link} -> ")]
    assert any(
        m.startswith(f"skipping the link {train / WNIDS[1] / 'root'} -> {tree}: ")
        and m.endswith(f"holds the tree ({train}); each folder is read once")
        for m in warned
    )


def test_links_out_of_the_tree_are_followed_once(tree, tmp_path, caplog):
    """A linked class folder, a linked sub-folder and linked images outside
    the tree count (once each, however many links lead to them); a link to
    an image of the tree counts at the image's own place only."""
    train, elsewhere = tree / "train", tmp_path / "elsewhere"
    # the class folder of class 3 lives elsewhere, linked in
    elsewhere.mkdir()
    (train / WNIDS[3]).rename(elsewhere / WNIDS[3])
    (train / WNIDS[3]).symlink_to(elsewhere / WNIDS[3], target_is_directory=True)
    # class 0: a linked folder of 3 more images, linked twice; loops in it
    write_images(elsewhere / "more", 3, index=0)
    (train / WNIDS[0] / "more").symlink_to(elsewhere / "more")
    (train / WNIDS[0] / "more_again").symlink_to(elsewhere / "more")
    (elsewhere / "more" / "self").symlink_to(".")
    (elsewhere / "more" / "up").symlink_to("..")  # holds class 3's folder
    # class 1: one image from elsewhere, linked twice
    write_images(elsewhere / "single", 1, index=1, prefix="lone")
    lone = elsewhere / "single" / "lone_0.JPEG"
    (train / WNIDS[1] / "extra.JPEG").symlink_to(lone)
    (train / WNIDS[1] / "extra_again.JPEG").symlink_to(lone)
    # class 2: a link to one of its own images
    own = train / WNIDS[2] / f"{WNIDS[2]}_0.JPEG"
    (train / WNIDS[2] / "a_copy.JPEG").symlink_to(own.name)
    assert real_images(train) == (NUM_CLASSES - 1) * PER_CLASS
    expected = dict.fromkeys(WNIDS, PER_CLASS)
    expected[WNIDS[0]] += real_images(elsewhere / "more")
    expected[WNIDS[1]] += 1
    assert expected == {WNIDS[0]: 9, WNIDS[1]: 7, WNIDS[2]: 6, WNIDS[3]: 6}
    with caplog.at_level(logging.WARNING):
        check_counts(tree, expected)
    paths = [path for path, _ in _ImageFolder(str(train)).samples]
    assert len(paths) == len(set(map(os.path.realpath, paths))) == 28
    assert str(train / WNIDS[1] / "extra.JPEG") in paths
    assert str(own) in paths and str(train / WNIDS[2] / "a_copy.JPEG") not in paths
    assert str(train / WNIDS[3] / f"{WNIDS[3]}_5.JPEG") in paths
    warned = warnings_of(caplog)
    again = train / WNIDS[0] / "more_again"
    assert (
        f"skipping the link {again} -> {elsewhere / 'more'}: that folder is read "
        f"already, as {train / WNIDS[0] / 'more'}; each folder is read once"
    ) in warned
    assert f"{train}: left out 2 link(s) to files counted already" in " ".join(warned)
    loop = train / WNIDS[0] / "more" / "self"
    assert [m for m in warned if m.startswith(f"skipping the link {loop} -> ")]


def test_link_free_tree_reads_as_torchvision(tree):
    """Without links the samples, their order and labels are torchvision's."""
    train = tree / "train"
    for sub in ("a", "a-b", "a/x", "b"):
        write_images(train / WNIDS[1] / sub, 1, index=1)
    ours, theirs = _ImageFolder(str(train)), ImageFolder(str(train))
    assert ours.samples == theirs.samples and ours.classes == theirs.classes
    assert len(ours.samples) == NUM_CLASSES * PER_CLASS + 4


def test_broken_image_link_is_one_line_error(tree):
    bad = tree / "train" / WNIDS[2] / "gone.JPEG"
    bad.symlink_to(tree / "nowhere.JPEG")
    for build, options in ((imagefolder_class_sizes, {}), (split_imagefolder, SPLIT)):
        with pytest.raises(DatasetError) as err:
            in_time(build, tree, **options)
        message = str(err.value)
        assert "\n" not in message
        assert message.startswith(f"{bad}: the link cannot be followed ")
        assert message.endswith("; remove it or restore what it leads to")


def test_class_left_empty_names_the_skipped_link(tree, tmp_path):
    """Two class folders linked to one folder: it counts for the first, and
    the empty second one fails, naming the link."""
    elsewhere = tmp_path / "elsewhere"
    write_images(elsewhere, 2, index=5)
    for split in ("train", "val"):
        (tree / split / "n99999990").symlink_to(elsewhere)
        (tree / split / "n99999991").symlink_to(elsewhere)
    assert imagefolder_class_sizes(tree)["n99999991"] == 0
    with pytest.raises(DatasetError) as err:
        in_time(split_imagefolder, tree, n_base=0, n_phases=6, resolution=8)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        f"{tree / 'train'}: Found no valid file for the classes n99999991. "
    )
    assert (
        f"(skipped links: {tree / 'train' / 'n99999991'} -> {elsewhere}: it "
        "leads to the folder of class n99999990)"
    ) in message


def test_cli_loop_and_broken_link(tree, tmp_path, capsys):
    """The CLI checks the config on a tree with a loop without hanging, and
    a broken image link is one error line, exit 1, no traceback."""
    (tree / "train" / WNIDS[0] / "loop").symlink_to("..")
    bad = tree / "train" / WNIDS[1] / "gone.JPEG"
    bad.symlink_to("nowhere.JPEG")
    argv = ["run", "--dataset", "imagefolder", "--dataset_root", str(tree)]
    for key, value in {"in_memory": True, "mem_per_class": 1, **SPLIT}.items():
        argv += [f"--{key}", json.dumps(value)]
    argv += ["--output_dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        in_time(main, argv)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.endswith("; remove it or restore what it leads to\n")
    assert err.splitlines()[-1].startswith(
        f"bdr-avalanche: error: {bad}: the link cannot be followed "
    )
    assert err.count("error:") == 1 and "Traceback" not in err


def test_imagenet_loop(tmp_path):
    """ImageNet-1k's folders are walked the same way."""
    root = tmp_path / "imagenet"
    names = fake.write_imagenet(root, size=4)
    (root / "train" / names[0] / "loop").symlink_to("..")
    (root / "train" / names[1] / "root").symlink_to(root)
    bench = in_time(split_imagenet, root, resolution=32)
    assert sum(len(e.dataset) for e in bench.train_stream) == 1000
