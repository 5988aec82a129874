"""Checks of ``bdr_avalanche.training.augment`` against torchvision and
loop references.

Exact checks use images whose pixels encode their own coordinates, so the
offset each crop used can be read off its output. Distribution checks draw
thousands of parameters from a fixed generator and compare them with the
uniform law or with torchvision's own sampler; each tolerance is about five
standard errors, stated where it is used, so a correct implementation fails
with negligible probability and the fixed seeds make the tests repeatable.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from reference.formulas import ref_crop
from torch.testing import assert_close
from torchvision import transforms
from torchvision.transforms import v2

from bdr_avalanche.training import augment as aug

MEAN = (0.5071, 0.4866, 0.4409)
STD = (0.2009, 0.1984, 0.2023)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def coordinate_images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """uint8 ``(n, 3, h, w)``: channel 0 is row + 1, channel 1 is column + 1
    (so 0 only in padding), channel 2 random content."""
    rows = torch.arange(1, h + 1, dtype=torch.uint8).view(h, 1).expand(h, w)
    cols = torch.arange(1, w + 1, dtype=torch.uint8).view(1, w).expand(h, w)
    content = torch.randint(0, 256, (n, 1, h, w), generator=gen(seed))
    coords = torch.stack([rows, cols]).expand(n, 2, h, w)
    return torch.cat([coords, content.to(torch.uint8)], dim=1)


def offsets_from_output(out, centre, padding):
    """Padded-image offsets recovered from the coordinates of one output
    pixel that lies inside the image whatever the offset."""
    i, j = centre
    top = out[:, 0, i, j].long() - 1 - i + padding
    left = out[:, 1, i, j].long() - 1 - j + padding
    return top, left


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov distance between empirical CDFs."""
    a, b = a.double().sort().values, b.double().sort().values
    points = torch.cat([a, b])
    cdf_a = torch.searchsorted(a, points, right=True) / len(a)
    cdf_b = torch.searchsorted(b, points, right=True) / len(b)
    return float((cdf_a - cdf_b).abs().max())


# ---------------------------------------------------------------------------
# Random crop and flip
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "size", "padding"), [((8, 8), (8, 8), 2), ((8, 10), (6, 7), 1)]
)
def test_random_crop_is_an_exact_padded_crop(shape, size, padding):
    x = coordinate_images(16, *shape)
    out = aug.random_crop(x, size, padding, generator=gen(1))
    assert out.shape == (16, 3, *size) and out.dtype == torch.uint8
    top, left = offsets_from_output(out, (size[0] // 2, size[1] // 2), padding)
    assert top.min() >= 0 and top.max() <= shape[0] + 2 * padding - size[0]
    assert left.min() >= 0 and left.max() <= shape[1] + 2 * padding - size[1]
    assert torch.equal(out, ref_crop(x, top, left, size, padding))


def test_crop_with_given_offsets_and_flips_matches_reference():
    x = coordinate_images(12, 9, 11, seed=3)
    g = gen(2)
    top = torch.randint(0, 9 + 6 - 7 + 1, (12,), generator=g)
    left = torch.randint(0, 11 + 6 - 8 + 1, (12,), generator=g)
    flip = torch.rand(12, generator=g) < 0.5
    out = aug.crop(x, top, left, (7, 8), padding=3, flip=flip)
    assert torch.equal(out, ref_crop(x, top, left, (7, 8), 3, flip))


def test_random_crop_offsets_are_uniform():
    # torchvision's RandomCrop(6, padding=2) draws each offset with
    # torch.randint(0, 6 + 4 - 6 + 1): uniform on 5 x 5 joint positions.
    n, padding, cells = 20_000, 2, 25
    x = coordinate_images(n, 6, 6)
    out = aug.random_crop(x, 6, padding, generator=gen(4))
    top, left = offsets_from_output(out, (3, 3), padding)
    counts = torch.bincount(top * 5 + left, minlength=cells)
    assert len(counts) == cells
    # Each count is Binomial(n, 1/25): mean 800, std sqrt(n p (1 - p)) = 27.7;
    # allow 5 std (a correct sampler fails with probability < 2e-5 overall).
    std = math.sqrt(n * (1 / cells) * (1 - 1 / cells))
    assert (counts.double() - n / cells).abs().max() < 5 * std


def test_random_flip_flips_about_half_exactly():
    n = 20_000
    x = torch.randint(0, 256, (n, 2, 3, 4), generator=gen(5), dtype=torch.uint8)
    x[..., 0] = 0  # first column differs from last: flips are recognisable
    x[..., -1] = 255
    out = aug.random_flip(x, generator=gen(6))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert torch.equal(flipped, ~kept)
    # Binomial(n, 0.5): std sqrt(n) / 2 = 70.7; allow 5 std.
    assert abs(int(flipped.sum()) - n / 2) < 5 * math.sqrt(n) / 2
    assert torch.equal(aug.random_flip(x, p=0.0), x)
    assert torch.equal(aug.random_flip(x, p=1.0), x.flip(-1))


# ---------------------------------------------------------------------------
# Random resized crop
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "scale", "fallback"),
    [
        ((32, 48), (0.08, 1.0), (0, 2, 32, 43)),
        ((20, 60), (0.3, 1.0), (0, 16, 20, 27)),  # falls back about 1 time in 5
    ],
)
def test_resized_crop_boxes_follow_torchvision(image, scale, fallback):
    height, width = image
    ratio = (3 / 4, 4 / 3)
    n = 4000
    boxes = aug.random_resized_crop_params(
        n, height, width, scale, ratio, generator=gen(7)
    )
    top, left, h, w = boxes.unbind(1)
    assert boxes.dtype == torch.int64
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all()
    assert (w >= 1).all() and (top + h <= height).all() and (left + w <= width).all()

    with torch.random.fork_rng():
        torch.manual_seed(8)
        img = torch.empty(1, height, width)
        ref = torch.tensor(
            [
                transforms.RandomResizedCrop.get_params(img, scale, ratio)
                for _ in range(n)
            ]
        )
    # Two-sample Kolmogorov-Smirnov: at level 1e-4 the critical distance is
    # sqrt(ln(2 / 1e-4) / 2) * sqrt(2 / n) = 0.050 for n = 4000 per sample
    # (conservative for these discrete laws). Compared: area fraction, log
    # aspect ratio and the box centre along each axis, so all quantiles and
    # not only the means.
    critical = math.sqrt(math.log(2 / 1e-4) / 2) * math.sqrt(2 / n)

    def features(b):
        t, lf, bh, bw = b.double().unbind(1)
        return {
            "area": bh * bw / (height * width),
            "log_ratio": torch.log(bw / bh),
            "centre_y": (t + bh / 2) / height,
            "centre_x": (lf + bw / 2) / width,
        }

    ours, theirs = features(boxes), features(ref)
    for key in ours:
        assert ks_statistic(ours[key], theirs[key]) < critical, key

    # Torchvision's centre-crop fallback box, at the same frequency: 5 std of
    # the difference of two binomial frequencies (pooled p), plus 2 / n for
    # a p near 0.
    p_ours = (boxes == torch.tensor(fallback)).all(1).double().mean().item()
    p_ref = (ref == torch.tensor(fallback)).all(1).double().mean().item()
    p = (p_ours + p_ref) / 2
    assert abs(p_ours - p_ref) < 5 * math.sqrt(2 * p * (1 - p) / n) + 2 / n
    if scale[0] > 0.2:
        assert p_ref > 0.1  # this case does exercise the fallback


@pytest.mark.parametrize(
    ("image", "ratio"),
    [((10, 100), (3 / 4, 4 / 3)), ((100, 10), (3 / 4, 4 / 3)), ((20, 20), (2, 3))],
)
def test_resized_crop_fallback_is_torchvisions_centre_crop(image, ratio):
    # With scale (1, 1) no candidate box fits these images, so every box is
    # the fallback, which torchvision computes without randomness.
    boxes = aug.random_resized_crop_params(
        5, *image, (1.0, 1.0), ratio, generator=gen()
    )
    expected = transforms.RandomResizedCrop.get_params(
        torch.empty(1, *image), [1.0, 1.0], list(ratio)
    )
    assert boxes.tolist() == [list(expected)] * 5


def test_random_resized_crop_output():
    x = torch.randint(0, 256, (6, 3, 40, 30), generator=gen(9), dtype=torch.uint8)
    out = aug.random_resized_crop(x, 24, generator=gen(10))
    assert out.shape == (6, 3, 24, 24) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    out = aug.random_resized_crop(x.double(), (12, 16), generator=gen(10))
    assert out.shape == (6, 3, 12, 16) and out.dtype == torch.float64


def smooth_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """uint8 images upsampled from 5 x 5 noise: little aliasing either way."""
    low = torch.rand(n, 3, 5, 5, generator=gen(seed)) * 255
    up = F.interpolate(low, size=size, mode="bicubic", align_corners=False)
    return up.clamp(0, 255).round().to(torch.uint8)


@pytest.mark.parametrize("source", [12, 48])
def test_whole_image_resized_crop_is_a_resize(source):
    x = smooth_images(4, source)
    target = [32, 32]
    whole = {"scale": (1.0, 1.0), "ratio": (1.0, 1.0), "generator": gen()}
    reference = x.float() / 255
    # Plain bilinear is exactly torchvision's non-antialiased resize.
    plain = aug.random_resized_crop(x, 32, antialias=False, **whole)
    assert_close(plain, v2.functional.resize(reference, target, antialias=False))
    # The box filter is close to the antialiased resize on smooth images
    # (measured max difference 0.008 for 48 -> 32), and is plain bilinear
    # when enlarging.
    out = aug.random_resized_crop(x, 32, antialias=True, **whole)
    resized = v2.functional.resize(reference, target, antialias=True)
    assert_close(out, resized, atol=0.015, rtol=0)
    if source < 32:
        assert_close(out, plain)


def test_antialias_suppresses_aliasing_like_torchvision():
    # Shrinking white noise by 1.5 aliases badly without antialiasing; the
    # box filter must land much nearer torchvision's antialiased resize than
    # plain bilinear does (measured: 5.8 versus 17 grey levels on average).
    x = torch.randint(0, 256, (4, 3, 48, 48), generator=gen(11)).float()
    boxes = torch.tensor([[0, 0, 48, 48]] * 4)
    reference = v2.functional.resize(x, [32, 32], antialias=True)
    box = aug.resized_crop(x, boxes, 32, antialias=True)
    plain = aug.resized_crop(x, boxes, 32, antialias=False)
    assert (box - reference).abs().mean() < 0.5 * (plain - reference).abs().mean()


def test_resized_crop_matches_torchvision_bilinear():
    x = torch.rand(5, 3, 30, 40, generator=gen(12)) * 255
    boxes = torch.tensor(
        [[0, 0, 30, 40], [3, 5, 20, 24], [10, 16, 16, 24], [2, 1, 8, 9], [5, 7, 4, 3]]
    )
    out = aug.resized_crop(x, boxes, 16, antialias=False)
    for k, (top, left, h, w) in enumerate(boxes.tolist()):
        expected = v2.functional.resized_crop(
            x[k], top, left, h, w, [16, 16], antialias=False
        )
        # Shrinking samples only inside the box: equal everywhere. Enlarging,
        # the outermost output rows/columns may read pixels just outside the
        # box instead of repeating its edge, so compare the rest.
        m = 0 if min(h, w) >= 16 else math.ceil(16 / (2 * min(h, w)))
        inner = (slice(None), slice(m, 16 - m), slice(m, 16 - m))
        assert_close(out[k][inner], expected[inner], rtol=0, atol=1e-3)


# ---------------------------------------------------------------------------
# Normalisation and the composed module
# ---------------------------------------------------------------------------


def test_normalize_matches_torchvision():
    x = torch.randint(0, 256, (4, 3, 5, 6), generator=gen(13), dtype=torch.uint8)
    expected = v2.Compose(
        [v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]
    )(x)
    assert_close(aug.normalize(x, MEAN, STD), expected)
    assert_close(aug.normalize(x.float() / 255, MEAN, STD), expected)
    half = aug.normalize(x, MEAN, STD, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    assert_close(half.float(), expected, atol=0.02, rtol=0.01)


def test_batch_augment_cifar_is_crop_flip_normalize():
    x = torch.randint(0, 256, (64, 3, 32, 32), generator=gen(14), dtype=torch.uint8)
    module = aug.BatchAugment.cifar(MEAN, STD, generator=gen(15))
    g = gen(15)
    expected = aug.normalize(
        aug.random_flip(aug.random_crop(x, 32, 4, generator=g), generator=g), MEAN, STD
    )
    assert_close(module(x), expected)
    assert not torch.equal(module(x), expected)  # the generator moved on


def test_batch_augment_imagenet_is_resized_crop_flip_normalize():
    x = torch.randint(0, 256, (8, 3, 40, 36), generator=gen(16), dtype=torch.uint8)
    module = aug.BatchAugment.imagenet(24, MEAN, STD, generator=gen(17))
    g = gen(17)
    crops = aug.random_resized_crop(x, 24, generator=g)
    expected = aug.normalize(aug.random_flip(crops, generator=g), MEAN, STD)
    out = module(x)
    assert out.shape == (8, 3, 24, 24) and out.dtype == torch.float32
    assert_close(out, expected)


def test_batch_augment_evaluation_only_normalizes():
    x = torch.randint(0, 256, (4, 3, 8, 8), generator=gen(18), dtype=torch.uint8)
    module = aug.BatchAugment.evaluation(MEAN, STD, dtype=torch.float16)
    out = module(x)
    assert out.dtype == torch.float16
    assert_close(out.float(), aug.normalize(x, MEAN, STD), atol=4e-3, rtol=1e-3)


def test_modules_trace_whole_without_host_sync():
    # fullgraph=True fails on any graph break: a host sync such as .item()
    # or .tolist(), or Python control flow on tensor values. aot_eager traces
    # without compiling code, so this stays fast.
    x = torch.randint(0, 256, (5, 3, 32, 32), generator=gen(21), dtype=torch.uint8)
    try:
        for module in (aug.BatchAugment.cifar(), aug.BatchAugment.imagenet(24)):
            compiled = torch.compile(
                module, backend="aot_eager", fullgraph=True, dynamic=True
            )
            assert compiled(x).shape[:2] == (5, 3)
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize(
    "call",
    [
        lambda: aug.random_crop(torch.zeros(2, 3, 8, 8), 13, padding=2),
        lambda: aug.random_crop(torch.zeros(3, 8, 8), 8, padding=2),
        lambda: aug.random_crop(torch.zeros(2, 3, 8, 8), 8, padding=-1),
        lambda: aug.random_flip(torch.zeros(2, 3, 8, 8), p=1.5),
        lambda: aug.random_resized_crop_params(2, 8, 8, scale=(0.9, 0.1)),
        lambda: aug.random_resized_crop_params(2, 8, 8, ratio=(0.0, 1.0)),
        lambda: aug.normalize(torch.zeros(2, 3, 4, 4), MEAN[:2], STD[:2]),
        lambda: aug.normalize(torch.zeros(2, 3, 4, 4), MEAN, (1.0, 0.0, 1.0)),
        lambda: aug.normalize(torch.zeros(2, 3, 4, 4, dtype=torch.int64), MEAN, STD),
        lambda: aug.BatchAugment(MEAN, STD, padding=4, resized_crop=24),
        lambda: aug.BatchAugment.cifar(MEAN, STD)(
            torch.zeros(2, 3, 8, 8, dtype=torch.int32)
        ),
        lambda: aug.BatchAugment.cifar(MEAN, STD)(
            torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
        ),
    ],
)
def test_invalid_arguments_raise(call):
    with pytest.raises(ValueError):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_for_the_same_parameters():
    x = torch.randint(0, 256, (16, 3, 40, 40), generator=gen(19), dtype=torch.uint8)
    g = gen(20)
    top = torch.randint(0, 9, (16,), generator=g)
    left = torch.randint(0, 9, (16,), generator=g)
    flip = torch.rand(16, generator=g) < 0.5
    boxes = aug.random_resized_crop_params(16, 40, 40, generator=g)
    cuda = torch.device("cuda")
    params = (x, top, left, flip, boxes)
    cpu_x, cpu_top, cpu_left, cpu_flip, cpu_boxes = params
    gpu_x, gpu_top, gpu_left, gpu_flip, gpu_boxes = (t.to(cuda) for t in params)
    pairs = [
        (
            aug.crop(gpu_x, gpu_top, gpu_left, 40, 4, gpu_flip),
            aug.crop(cpu_x, cpu_top, cpu_left, 40, 4, cpu_flip),
        ),
        (
            aug.resized_crop(gpu_x, gpu_boxes, 32),
            aug.resized_crop(cpu_x, cpu_boxes, 32),
        ),
        (aug.normalize(gpu_x, MEAN, STD), aug.normalize(cpu_x, MEAN, STD)),
    ]
    for gpu_out, cpu_out in pairs:
        assert gpu_out.is_cuda
        assert_close(gpu_out.cpu(), cpu_out)
    module = aug.BatchAugment.cifar(MEAN, STD, generator=torch.Generator(cuda))
    out = module.to(cuda)(gpu_x)
    assert out.is_cuda and out.shape == x.shape and out.dtype == torch.float32


def test_batch_augment_takes_float_images_in_unit_range():
    """A float batch in [0, 1] gives what its uint8 version gives."""
    x = torch.randint(0, 256, (6, 3, 12, 12), generator=gen(30), dtype=torch.uint8)
    for make in (
        lambda: aug.BatchAugment.cifar(MEAN, STD, padding=2, generator=gen(31)),
        lambda: aug.BatchAugment.imagenet(8, MEAN, STD, generator=gen(31)),
    ):
        assert_close(make()(x.float() / 255), make()(x), atol=1e-4, rtol=1e-4)
