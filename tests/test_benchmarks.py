"""CIFAR-100, ImageNet and image-folder streams, on small generated data in
the real on-disk formats (see ``fake_datasets``), plus a cheap check of the
real Tiny-ImageNet-100 archive when it is present."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from urllib.error import URLError

import fake_datasets as fake
import pytest
import torch
from PIL import Image

from bdr_avalanche.benchmarks import (
    ICARL_SEED,
    DatasetError,
    cifar100_transforms,
    class_order,
    imagenet_transforms,
    split_cifar100,
    split_imagefolder,
    split_imagenet,
)
from bdr_avalanche.benchmarks import cifar as cifar_module
from bdr_avalanche.benchmarks.transforms import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
)

ICARL_ORDER = [
    68, 56, 78, 8, 23, 84, 90, 65, 74, 76, 40, 89, 3, 92, 55, 9, 26, 80, 43, 38,
    58, 70, 77, 1, 85, 19, 17, 50, 28, 53, 13, 81, 45, 82, 6, 59, 83, 16, 15, 44,
    91, 41, 72, 60, 79, 52, 20, 10, 31, 54, 37, 95, 14, 71, 96, 98, 97, 2, 64, 66,
    42, 22, 35, 86, 24, 34, 87, 21, 99, 0, 88, 27, 18, 94, 11, 12, 47, 25, 30, 46,
    62, 69, 36, 61, 7, 63, 75, 5, 32, 4, 51, 48, 73, 93, 39, 67, 29, 49, 57, 33,
]  # fmt: skip
"""The iCaRL order of CIFAR-100 and ImageNet-Subset (Rebuffi et al., 2017)."""

REPO = Path(__file__).resolve().parents[1]
REAL_ZIP = REPO.parent / "shared" / "data" / "tiny-imagenet-100.zip"
CIFAR_LAYOUT = "cifar-100-python/train"
TREE_LAYOUT = "<root>/train/<class>/<image>"


# ---------------------------------------------------------------- helpers


@pytest.fixture
def data_cache(tmp_path, monkeypatch):
    """Archives are extracted under the test's own folder."""
    monkeypatch.setenv("BDR_AVALANCHE_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    return fake.write_cifar100(tmp_path_factory.mktemp("cifar"))


@pytest.fixture(scope="module")
def cifar(cifar_root):
    return split_cifar100(cifar_root)


@pytest.fixture(scope="module")
def tree_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tree") / "subset"
    fake.write_imagefolder(root)
    return root


@pytest.fixture(scope="module")
def tree(tree_root):
    return split_imagefolder(tree_root, resolution=8)


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imagenet")
    fake.write_imagenet(root)
    return root


def class_blocks(stream) -> list[list[int]]:
    return [sorted(exp.classes_in_this_experience) for exp in stream]


def contiguous_blocks(sizes: list[int]) -> list[list[int]]:
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [list(range(s, s + n)) for s, n in zip(starts, sizes, strict=True)]


def check_protocol(bench, sizes: list[int], order: list[int]) -> None:
    """Experiences of ``sizes`` classes, ids 0.. in arrival order, ``order``."""
    assert bench.n_experiences == len(sizes)
    assert class_blocks(bench.train_stream) == contiguous_blocks(sizes)
    assert class_blocks(bench.test_stream) == contiguous_blocks(sizes)
    assert bench.classes_order_original_ids == order
    assert bench.original_classes_in_exp[0] == set(order[: sizes[0]])


def samples(dataset, n: int | None = None):
    """The first ``n`` (default all) ``(x, y)`` of an Avalanche dataset."""
    n = len(dataset) if n is None else n
    items = [dataset[i] for i in range(n)]
    return torch.stack([it[0] for it in items]), torch.tensor([it[1] for it in items])


def unnormalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    """Pixels in 0..255 from a normalised (..., 3, H, W) tensor."""
    mean = torch.tensor(mean).view(3, 1, 1)
    std = torch.tensor(std).view(3, 1, 1)
    return (x * std + mean) * 255


def assert_message(err: pytest.ExceptionInfo, *parts) -> None:
    message = str(err.value)
    for part in parts:
        assert str(part) in message, f"{part!s} not in: {message}"


# ---------------------------------------------------------------- class order


def test_class_order_is_icarl_order():
    assert ICARL_SEED == 1993
    assert class_order(100) == ICARL_ORDER
    assert class_order(1000)[:4] == [54, 7, 894, 512]
    assert sorted(class_order(1000)) == list(range(1000))
    assert class_order(100, seed=0) != ICARL_ORDER


# ---------------------------------------------------------------- CIFAR-100


def test_cifar_stream(cifar):
    """B50: 50 classes then 5 x 10, ids in arrival order, the iCaRL order."""
    check_protocol(cifar, [50] + [10] * 5, ICARL_ORDER)
    assert [len(e.dataset) for e in cifar.train_stream] == [150] + [30] * 5
    assert [len(e.dataset) for e in cifar.test_stream] == [50] + [10] * 5


def test_cifar_images_match_labels(cifar):
    """Eval samples are normalised 3x32x32 float images of their class."""
    order = cifar.classes_order_original_ids
    for stream in (cifar.train_stream, cifar.test_stream):
        x, y = samples(stream[1].dataset.eval())
        assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.float32
        pixels = unnormalise(x, CIFAR100_MEAN, CIFAR100_STD)
        # exact normalisation: back to integer pixel values
        assert torch.allclose(pixels, pixels.round(), atol=2e-3)
        red = pixels[:, 0].mean(dim=(1, 2))
        assert [fake.cifar_pixels_class(v) for v in red.tolist()] == [
            order[c] for c in y.tolist()
        ]


def test_cifar_train_transform_differs(cifar):
    """Training samples are augmented (pad + crop, flip); eval ones are not."""
    data = cifar.train_stream[0].dataset
    torch.manual_seed(0)
    train = torch.stack([data.train()[0][0] for _ in range(8)])
    evaluate = torch.stack([data.eval()[0][0] for _ in range(2)])
    assert torch.equal(evaluate[0], evaluate[1])
    assert any(not torch.equal(t, evaluate[0]) for t in train)
    assert train.shape[1:] == (3, 32, 32)


def test_cifar_transforms():
    train, evaluate = cifar100_transforms()
    image = Image.new("RGB", (32, 32), (255, 0, 128))
    x = evaluate(image)
    expected = (torch.tensor([1.0, 0.0, 128 / 255]) - torch.tensor(CIFAR100_MEAN)) / (
        torch.tensor(CIFAR100_STD)
    )
    assert torch.allclose(x[:, 5, 5], expected, atol=1e-6)
    assert train(image).shape == (3, 32, 32)


def test_cifar_b0(cifar_root):
    """B0: 10 equal phases of 10 from the start."""
    bench = split_cifar100(cifar_root, n_base=0, n_phases=10)
    check_protocol(bench, [10] * 10, ICARL_ORDER)


def test_cifar_other_seed_and_transforms(cifar_root):
    bench = split_cifar100(
        cifar_root, seed=0, train_transform=None, eval_transform=None
    )
    assert bench.classes_order_original_ids == class_order(100, 0)
    image, label, _ = bench.test_stream[0].dataset[0]
    assert isinstance(image, Image.Image) and image.size == (32, 32)


@pytest.mark.parametrize(
    ("n_base", "n_phases", "message"),
    [
        (50, 3, "n_base=50, n_phases=3"),
        (100, 5, "n_base=100, n_phases=5"),
        (120, 1, "n_base=120, n_phases=1"),
        (0, 7, "n_base=0, n_phases=7"),
        (-1, 5, "n_base must be an integer >= 0, got -1"),
        (50, 0, "n_phases must be an integer >= 1, got 0"),
    ],
)
def test_bad_split(cifar_root, tree_root, n_base, n_phases, message):
    """Splits that do not tile the classes are a ValueError naming the values."""
    for build in (split_cifar100, split_imagefolder):
        with pytest.raises(ValueError) as err:
            build(
                cifar_root if build is split_cifar100 else tree_root,
                n_base=n_base,
                n_phases=n_phases,
            )
        assert not isinstance(err.value, DatasetError)
        assert_message(err, message)


def test_imagenet_bad_split(tmp_path):
    with pytest.raises(ValueError, match=r"n_base=500, n_phases=3"):
        split_imagenet(tmp_path, n_base=500, n_phases=3)


def test_cifar_missing_root(tmp_path):
    """No data: the message names the root, the layout and how to download."""
    for root in (tmp_path / "nowhere", tmp_path):
        with pytest.raises(DatasetError) as err:
            split_cifar100(root)
        assert_message(
            err, root, CIFAR_LAYOUT, cifar_module.CIFAR100_URL, "download=True"
        )
    assert cifar_module.CIFAR100_URL == (
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    )


def test_cifar_missing_meta(tmp_path):
    root = fake.write_cifar100(tmp_path)
    (root / "cifar-100-python" / "meta").unlink()
    with pytest.raises(DatasetError) as err:
        split_cifar100(root)
    assert_message(err, root / "cifar-100-python" / "meta", CIFAR_LAYOUT)


def test_cifar_truncated_pickle(tmp_path):
    root = fake.write_cifar100(tmp_path)
    path = root / "cifar-100-python" / "train"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError) as err:
        split_cifar100(root)
    assert_message(err, path, "truncated", "b'data'", "(N, 3072)")


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({b"images": b"", b"labels": []}, "keys"),
        ({b"data": [[0] * 3072], b"fine_labels": [0]}, "'data'"),
        ({b"data": torch.zeros(1, 3072).numpy(), b"fine_labels": [0]}, "float32"),
        ({b"data": torch.zeros(100, 1024, dtype=torch.uint8).numpy(),
          b"fine_labels": list(range(100))}, "(100, 1024)"),
        ({b"data": torch.zeros(50, 3072, dtype=torch.uint8).numpy(),
          b"fine_labels": list(range(50))}, "50 of the 100 classes"),
        ({b"data": torch.zeros(100, 3072, dtype=torch.uint8).numpy(),
          b"fine_labels": list(range(99))}, "'fine_labels'"),
        ([1, 2, 3], "list"),
    ],
)  # fmt: skip
def test_cifar_malformed_batch(tmp_path, entry, problem):
    """A structurally wrong batch names the file and the expected keys."""
    root = fake.write_cifar100(tmp_path)
    path = root / "cifar-100-python" / "test"
    fake.write_pickle(path, entry)
    with pytest.raises(DatasetError) as err:
        split_cifar100(root)
    assert_message(err, path, problem, "b'data'")


def test_cifar_download_failure(tmp_path, monkeypatch):
    """A failed download says to fetch the archive by hand and where to put it."""
    calls = []

    def offline(url, root, **kwargs):
        calls.append((url, root, kwargs))
        raise URLError("no network")

    monkeypatch.setattr(cifar_module, "download_and_extract_archive", offline)
    with pytest.raises(DatasetError) as err:
        split_cifar100(tmp_path / "data", download=True)
    assert_message(err, tmp_path / "data", cifar_module.CIFAR100_URL, "no network")
    assert calls[0][0] == cifar_module.CIFAR100_URL
    assert calls[0][2]["md5"] == "eb9058c3a382ffc7106e4002c42a8d85"


def test_cifar_download(tmp_path, monkeypatch):
    """download=True fetches missing files, and only then."""
    calls = []

    def download(url, root, **kwargs):
        calls.append(url)
        fake.write_cifar100(Path(root))

    monkeypatch.setattr(cifar_module, "download_and_extract_archive", download)
    assert split_cifar100(tmp_path, download=True).n_experiences == 6
    assert split_cifar100(tmp_path, download=True).n_experiences == 6
    assert calls == [cifar_module.CIFAR100_URL]


# ---------------------------------------------------------------- image folders


def test_imagefolder_stream(tree):
    """The iCaRL order over the sorted class folders (the colour of an image
    encodes the sorted index of its folder); images match their labels."""
    check_protocol(tree, [50] + [10] * 5, ICARL_ORDER)
    assert [len(e.dataset) for e in tree.train_stream] == [100] + [20] * 5
    order = tree.classes_order_original_ids
    for stream in (tree.train_stream, tree.test_stream):
        x, y = samples(stream[2].dataset.eval())
        assert x.shape[1:] == (3, 8, 8) and x.dtype == torch.float32
        pixels = unnormalise(x, IMAGENET_MEAN, IMAGENET_STD)
        assert torch.allclose(pixels, pixels.round(), atol=2e-3)
        red, green = pixels[:, 0].mean(dim=(1, 2)), pixels[:, 1].mean(dim=(1, 2))
        decoded = [
            fake.colour_class(r, g)
            for r, g in zip(red.tolist(), green.tolist(), strict=True)
        ]
        assert decoded == [order[c] for c in y.tolist()]


def test_imagefolder_in_memory_matches(tree, tree_root):
    """Decoding once into memory gives exactly the on-the-fly eval samples."""
    memory = split_imagefolder(tree_root, resolution=8, in_memory=True)
    check_protocol(memory, [50] + [10] * 5, ICARL_ORDER)
    for on_the_fly, decoded in (
        (tree.train_stream, memory.train_stream),
        (tree.test_stream, memory.test_stream),
    ):
        for a, b in zip(on_the_fly, decoded, strict=True):
            xa, ya = samples(a.dataset.eval())
            xb, yb = samples(b.dataset.eval())
            assert torch.equal(ya, yb)
            assert torch.equal(xa, xb)
    data = memory.train_stream[0].dataset
    torch.manual_seed(0)
    train = [data.train()[0][0] for _ in range(8)]
    assert all(t.shape == (3, 8, 8) and t.dtype == torch.float32 for t in train)
    assert any(not torch.equal(t, data.eval()[0][0]) for t in train)


def test_imagefolder_imagenet_transforms(tree_root):
    """At 224 pixels: the ImageNet transforms; also the B0 split."""
    bench = split_imagefolder(tree_root, n_base=0, n_phases=10, resolution=224)
    check_protocol(bench, [10] * 10, ICARL_ORDER)
    data = bench.train_stream[0].dataset
    x, _, _ = data.eval()[0]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    torch.manual_seed(0)
    assert any(not torch.equal(data.train()[0][0], x) for _ in range(4))
    train, evaluate = imagenet_transforms(224)
    names = [type(t).__name__ for t in evaluate.transforms]
    assert names[:2] == ["Resize", "CenterCrop"] and evaluate.transforms[0].size == 256
    assert type(train.transforms[0]).__name__ == "RandomResizedCrop"


def test_imagefolder_zip(tree_root, tmp_path, data_cache, monkeypatch):
    """A zip of one top folder is extracted once to $BDR_AVALANCHE_DATA."""
    archive = fake.zip_tree(tree_root, tmp_path / "mini-subset.zip", top="mini-subset")
    bench = split_imagefolder(archive, resolution=8)
    check_protocol(bench, [50] + [10] * 5, ICARL_ORDER)
    extracted = data_cache / "mini-subset" / "mini-subset"
    assert sorted(os.listdir(extracted / "val")) == fake.wnids(100)
    leftovers = [p for p in data_cache.iterdir() if p.name != "mini-subset"]
    assert leftovers == []

    def no_extraction(*args, **kwargs):
        raise AssertionError("the archive was extracted again")

    with monkeypatch.context() as patch:
        patch.setattr(zipfile.ZipFile, "extractall", no_extraction)
        assert split_imagefolder(archive, resolution=8).n_experiences == 6


def test_zip_interrupted_or_changed_is_extracted_again(tree_root, tmp_path, data_cache):
    """A cache folder without the stamp of this archive is replaced."""
    archive = fake.zip_tree(tree_root, tmp_path / "mini.zip")
    stale = data_cache / "mini" / tree_root.name / "train"
    stale.mkdir(parents=True)  # e.g. an older, partial copy
    bench = split_imagefolder(archive, resolution=8, n_base=0, n_phases=4)
    assert bench.n_experiences == 4
    assert len(os.listdir(stale)) == 100


def test_zip_errors(tmp_path, data_cache):
    with pytest.raises(DatasetError) as err:
        split_imagefolder(tmp_path / "absent.zip")
    assert_message(err, tmp_path / "absent.zip", TREE_LAYOUT)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip at all")
    with pytest.raises(DatasetError) as err:
        split_imagefolder(broken)
    assert_message(err, broken, "zip", "train/<class>/<image>")
    two = tmp_path / "two.zip"
    with zipfile.ZipFile(two, "w") as zf:
        zf.writestr("a/train/x/1.png", b"")
        zf.writestr("b/val/x/1.png", b"")
    with pytest.raises(DatasetError) as err:
        split_imagefolder(two)
    assert_message(err, two, "one top folder", "['a', 'b']")


def test_imagefolder_missing(tmp_path):
    with pytest.raises(DatasetError) as err:
        split_imagefolder(tmp_path / "nowhere")
    assert_message(err, tmp_path / "nowhere", TREE_LAYOUT)
    (tmp_path / "train" / "n1").mkdir(parents=True)
    with pytest.raises(DatasetError) as err:
        split_imagefolder(tmp_path)
    assert_message(err, tmp_path, "'val'", TREE_LAYOUT)


def test_imagefolder_class_missing_in_val(tmp_path):
    fake.write_imagefolder(tmp_path, num_classes=10, train_per_class=1, size=8)
    missing = tmp_path / "val" / fake.wnids(10)[3]
    for path in missing.iterdir():
        path.unlink()
    missing.rmdir()
    with pytest.raises(DatasetError) as err:
        split_imagefolder(tmp_path, n_base=4, n_phases=3)
    assert_message(err, tmp_path / "val", missing.name, TREE_LAYOUT)


def test_imagefolder_empty_class(tmp_path):
    fake.write_imagefolder(tmp_path, num_classes=10, train_per_class=1, size=8)
    (tmp_path / "train" / "n99999999").mkdir()
    (tmp_path / "val" / "n99999999").mkdir()
    with pytest.raises(DatasetError) as err:
        split_imagefolder(tmp_path, n_base=5, n_phases=6, resolution=8)
    assert_message(err, tmp_path / "train", "n99999999", TREE_LAYOUT)


@pytest.mark.parametrize("content", [b"", b"\xff\xd8\xff\xe0 truncated JPEG"])
def test_imagefolder_corrupt_image(tmp_path, content):
    """An unreadable image is a DatasetError naming it, in memory or not."""
    fake.write_imagefolder(tmp_path, num_classes=10, train_per_class=1, size=8)
    bad = tmp_path / "val" / fake.wnids(10)[7] / "bad.JPEG"
    bad.write_bytes(content)
    with pytest.raises(DatasetError) as err:
        split_imagefolder(tmp_path, n_base=4, n_phases=3, resolution=8, in_memory=True)
    assert_message(err, bad, "image")
    bench = split_imagefolder(tmp_path, n_base=4, n_phases=3, resolution=8)
    data = next(e.dataset for e in bench.test_stream if len(e.dataset) % 2 == 1)
    with pytest.raises(DatasetError) as err:
        samples(data)
    assert_message(err, bad)


def test_in_memory_needs_small_resolution(tree_root):
    with pytest.raises(ValueError, match="resolution=224"):
        split_imagefolder(tree_root, in_memory=True)


# ---------------------------------------------------------------- ImageNet


def test_imagenet_stream(imagenet_root):
    """ImageNet-1k via SplitImageNet: B500 with the 1000-class iCaRL order."""
    bench = split_imagenet(imagenet_root, resolution=32)
    check_protocol(bench, [500] + [100] * 5, class_order(1000))
    assert bench.classes_order_original_ids[:4] == [54, 7, 894, 512]
    assert [len(e.dataset) for e in bench.test_stream] == [500] + [100] * 5
    x, y, _ = bench.test_stream[3].dataset[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert 700 <= y < 800
    pixels = unnormalise(x, IMAGENET_MEAN, IMAGENET_STD)
    assert torch.allclose(pixels[:, 16, 16], torch.tensor([120.0, 60, 200]), atol=4)
    b0 = split_imagenet(imagenet_root, n_base=0, n_phases=10, resolution=32)
    assert [len(e.classes_in_this_experience) for e in b0.train_stream] == [100] * 10


def test_imagenet_layout_errors(tmp_path):
    with pytest.raises(DatasetError) as err:
        split_imagenet(tmp_path / "nowhere")
    assert_message(err, tmp_path / "nowhere", "<root>/train/<wnid>", "meta.bin")
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError) as err:
        split_imagenet(tmp_path)
    assert_message(err, tmp_path, "meta.bin", "ILSVRC2012_devkit_t12.tar.gz")
    (tmp_path / "meta.bin").write_bytes(b"")
    with pytest.raises(DatasetError) as err:
        split_imagenet(tmp_path)
    assert_message(err, tmp_path, "'val'", "<root>/val/<wnid>")
    (tmp_path / "val").mkdir()
    for wnid in fake.wnids(999):
        (tmp_path / "train" / wnid).mkdir()
    with pytest.raises(DatasetError) as err:
        split_imagenet(tmp_path)
    assert_message(err, tmp_path / "train", "999 class folders", "1000")


def test_imagenet_corrupt_meta(imagenet_root, tmp_path):
    """An unreadable meta.bin is a DatasetError, not torch.load's traceback."""
    root = tmp_path / "imagenet"
    root.mkdir()
    for split in ("train", "val"):
        os.symlink(imagenet_root / split, root / split)
    (root / "meta.bin").write_bytes(b"garbage")
    with pytest.raises(DatasetError) as err:
        split_imagenet(root)
    assert_message(err, root, "meta.bin")
    wnid_to_classes, val_wnids = torch.load(imagenet_root / "meta.bin")
    del wnid_to_classes[fake.wnids(1000)[5]]
    torch.save((wnid_to_classes, val_wnids), root / "meta.bin")
    with pytest.raises(DatasetError) as err:
        split_imagenet(root)
    assert_message(err, root / "meta.bin", fake.wnids(1000)[5])


# ---------------------------------------------------------------- real data


@pytest.mark.skipif(not REAL_ZIP.is_file(), reason=f"{REAL_ZIP} is not present")
def test_real_tiny_imagenet_100():
    """The real archive: 100 classes, B50 with 25,000 training images first.

    It is extracted (about 4 s, 220 MB) into the shared cache
    (``$BDR_AVALANCHE_DATA`` of the environment running the tests, else
    ``~/.cache/bdr-avalanche/data``), so later runs and experiments reuse it.
    """
    bench = split_imagefolder(REAL_ZIP, resolution=32)
    check_protocol(bench, [50] + [10] * 5, ICARL_ORDER)
    assert [len(e.dataset) for e in bench.train_stream] == [25000] + [5000] * 5
    assert [len(e.dataset) for e in bench.test_stream] == [2500] + [500] * 5
    x, y, _ = bench.test_stream[5].dataset[0]
    assert x.shape == (3, 32, 32) and 90 <= y < 100
