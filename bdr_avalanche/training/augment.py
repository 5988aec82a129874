"""Batched image augmentation on the training device.

Datasets that fit in memory (CIFAR-100, Tiny-ImageNet, the digits) can be
kept as one uint8 tensor and augmented a whole batch at a time where the
model runs, instead of image by image with PIL in DataLoader workers. The
functions here reproduce the torchvision training transforms of
:mod:`bdr_avalanche.benchmarks.transforms` with the same distribution of
random parameters; :meth:`BatchAugment.from_recipe` reads the same recipe
(:class:`~bdr_avalanche.benchmarks.specs.Recipe`) as they do:

- :func:`random_crop`: ``RandomCrop(size, padding)`` with zero padding;
  one ``gather`` of exact pixels from the padded batch.
- :func:`random_flip`: ``RandomHorizontalFlip(p)``.
- :func:`random_resized_crop`: ``RandomResizedCrop(size, scale, ratio)``;
  boxes drawn as ``RandomResizedCrop.get_params`` draws them, resampled by
  ``roi_align`` (see :func:`resized_crop` for how that differs from PIL).
- :func:`normalize`: ``ToDtype(float32, scale=True)`` then ``Normalize``.

:class:`BatchAugment` chains them for CIFAR-like and ImageNet-like
training, and for evaluation (normalisation only). Every function takes a
``(N, C, H, W)`` batch on any device, draws its random numbers there with
``torch.rand``/``torch.randint`` (from ``generator`` when given, which must
live on that device), loops over no sample and never synchronises with the
host, so it can run inside the training step. ``torch.compile`` traces
:class:`BatchAugment` whole (``fullgraph=True``, dynamic batch size) when
it has no generator; Dynamo cannot take a ``torch.Generator``, so with one
it breaks the graph at each draw. Inductor draws from its own random
stream: same distributions, other numbers than eager.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torchvision.ops  # noqa: F401  (registers torch.ops.torchvision.roi_align)
from torch import Tensor, nn

from .._utils import check_fraction, check_positive_int
from ..benchmarks.specs import DATASETS, Recipe

_CIFAR = DATASETS["cifar100"].recipe()
_IMAGENET = DATASETS["imagenet"].recipe()
assert _CIFAR.padding is not None  # CIFAR's crop is a padded one
_CIFAR_PADDING = _CIFAR.padding

__all__ = [
    "BatchAugment",
    "crop",
    "normalize",
    "random_crop",
    "random_flip",
    "random_resized_crop",
    "random_resized_crop_params",
    "resized_crop",
]

#: Number of (area, aspect ratio) draws before the centre-crop fallback, as
#: in ``torchvision.transforms.RandomResizedCrop.get_params``.
RESIZED_CROP_ATTEMPTS = 10

Size = int | tuple[int, int]


def _pair(name: str, size: Size) -> tuple[int, int]:
    """``(height, width)`` from an int or a pair of positive ints."""
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ValueError(f"{name} must be an int or a (height, width) pair")
    return check_positive_int(name, size[0]), check_positive_int(name, size[1])


def _check_batch(x: Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected an (N, C, H, W) batch, got shape {tuple(x.shape)}")


def _check_range(name: str, bounds: Sequence[float], positive: bool) -> None:
    if len(bounds) != 2 or not bounds[0] <= bounds[1]:
        raise ValueError(f"{name} must be a (min, max) pair, got {bounds!r}")
    if (bounds[0] <= 0) if positive else (bounds[0] < 0):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}")


def _random_kwargs(
    device: torch.device | str | None, generator: torch.Generator | None
) -> dict:
    """``device`` and, only when given, ``generator`` for ``torch.rand*``
    (an explicit ``generator=None`` breaks ``torch.compile`` on dynamic
    batch sizes)."""
    if generator is None:
        return {"device": device}
    return {"device": device, "generator": generator}


def crop(
    x: Tensor,
    top: Tensor,
    left: Tensor,
    size: Size,
    padding: int = 0,
    flip: Tensor | None = None,
) -> Tensor:
    """Crop each image at its own offset after zero padding, optionally flipped.

    Output pixel ``(i, j)`` of sample ``n`` is padded pixel
    ``(top[n] + i, left[n] + j)``, i.e. source pixel
    ``(top[n] + i - padding, left[n] + j - padding)`` or 0 outside the image;
    where ``flip[n]`` the crop is mirrored left-right. Pads once, then takes
    all crops with one ``gather`` on flattened pixel indices.

    :param x: ``(N, C, H, W)`` images of any dtype.
    :param top: ``(N,)`` integer offsets in ``[0, H + 2 padding - height]``
        (not checked, that would need the host).
    :param left: ``(N,)`` integer offsets in ``[0, W + 2 padding - width]``.
    :param size: output ``height`` and ``width`` (int for a square).
    :param padding: zeros added on every side first.
    :param flip: optional ``(N,)`` bool, which crops to mirror.
    :return: ``(N, C, height, width)`` tensor of ``x``'s dtype.
    """
    _check_batch(x)
    height, width = _pair("size", size)
    padding = check_positive_int("padding", padding, minimum=0)
    if padding:
        x = F.pad(x, (padding,) * 4)
    n, c, padded_h, padded_w = x.shape
    if height > padded_h or width > padded_w:
        raise ValueError(
            f"crop size {(height, width)} exceeds the padded image size "
            f"{(padded_h, padded_w)}"
        )
    rows = top.view(n, 1) + torch.arange(height, device=x.device)
    cols = torch.arange(width, device=x.device).expand(n, width)
    if flip is not None:
        cols = torch.where(flip.view(n, 1), cols.flip(1), cols)
    cols = left.view(n, 1) + cols
    index = (rows.view(n, height, 1) * padded_w + cols.view(n, 1, width)).view(
        n, 1, height * width
    )
    out = x.reshape(n, c, padded_h * padded_w).gather(
        2, index.expand(n, c, height * width)
    )
    return out.view(n, c, height, width)


def _crop_offsets(
    x: Tensor, size: tuple[int, int], padding: int, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    n, _, h, w = x.shape
    span_h, span_w = h + 2 * padding - size[0] + 1, w + 2 * padding - size[1] + 1
    if span_h < 1 or span_w < 1:
        raise ValueError(
            f"crop size {size} exceeds the padded image size "
            f"{(h + 2 * padding, w + 2 * padding)}"
        )
    kwargs = _random_kwargs(x.device, generator)
    top = torch.randint(0, span_h, (n,), **kwargs)
    left = torch.randint(0, span_w, (n,), **kwargs)
    return top, left


def _flip_mask(
    n: int, p: float, device: torch.device, generator: torch.Generator | None
) -> Tensor:
    return torch.rand(n, **_random_kwargs(device, generator)) < p


def random_crop(
    x: Tensor,
    size: Size,
    padding: int = 0,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``RandomCrop(size, padding)`` of every image, offsets drawn per image.

    Each image is zero-padded by ``padding`` on every side and cropped at
    offsets drawn uniformly from the ``H + 2 padding - height + 1`` (and
    likewise for width) positions, as torchvision does. Exact pixel copies.
    """
    _check_batch(x)
    size = _pair("size", size)
    padding = check_positive_int("padding", padding, minimum=0)
    top, left = _crop_offsets(x, size, padding, generator)
    return crop(x, top, left, size, padding)


def random_flip(
    x: Tensor, p: float = 0.5, *, generator: torch.Generator | None = None
) -> Tensor:
    """``RandomHorizontalFlip(p)``: mirror each image with probability ``p``."""
    _check_batch(x)
    p = check_fraction("p", p)
    mask = _flip_mask(x.shape[0], p, x.device, generator)
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


def random_resized_crop_params(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Boxes of ``RandomResizedCrop.get_params``, drawn for ``n`` images at once.

    For every image, ``RESIZED_CROP_ATTEMPTS`` (10) candidate boxes get an
    area of ``U(scale) * height * width`` and an aspect ratio
    ``exp(U(log ratio))``, rounded to whole pixels; the first one that fits
    in the image is kept and placed uniformly at random. An image with no
    fitting candidate gets torchvision's fallback: the largest centred box
    whose aspect ratio is clamped to ``ratio``.

    :return: ``(n, 4)`` int64 boxes ``(top, left, box_height, box_width)``.
    """
    n = check_positive_int("n", n, minimum=0)
    height, width = _pair("image size", (height, width))
    _check_range("scale", scale, positive=False)
    _check_range("ratio", ratio, positive=True)
    kwargs = _random_kwargs(device, generator)
    shape = (n, RESIZED_CROP_ATTEMPTS)
    area = (
        height
        * width
        * (scale[0] + (scale[1] - scale[0]) * torch.rand(shape, **kwargs))
    )
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(shape, **kwargs))
    box_w = torch.sqrt(area * aspect).round().long()
    box_h = torch.sqrt(area / aspect).round().long()
    fits = (box_w > 0) & (box_w <= width) & (box_h > 0) & (box_h <= height)
    attempt = torch.arange(RESIZED_CROP_ATTEMPTS, device=fits.device)
    first = torch.where(fits, attempt, RESIZED_CROP_ATTEMPTS).amin(1, keepdim=True)
    found = first.squeeze(1) < RESIZED_CROP_ATTEMPTS
    first = first.clamp_max(RESIZED_CROP_ATTEMPTS - 1)

    # torchvision's fallback box depends on the image size only.
    in_ratio = width / height
    if in_ratio < min(ratio):
        fallback_w, fallback_h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fallback_w, fallback_h = int(round(height * max(ratio))), height
    else:
        fallback_w, fallback_h = width, height
    box_h = torch.where(found, box_h.gather(1, first).squeeze(1), fallback_h)
    box_w = torch.where(found, box_w.gather(1, first).squeeze(1), fallback_w)

    # Uniform offsets in [0, height - box_h]; the clamp guards float rounding.
    span_h, span_w = height - box_h + 1, width - box_w + 1
    top = torch.minimum((torch.rand(n, **kwargs) * span_h).long(), span_h - 1)
    left = torch.minimum((torch.rand(n, **kwargs) * span_w).long(), span_w - 1)
    top = torch.where(found, top, (height - fallback_h) // 2)
    left = torch.where(found, left, (width - fallback_w) // 2)
    return torch.stack([top, left, box_h, box_w], dim=1)


def _resample(
    x: Tensor, boxes: Tensor, size: tuple[int, int], antialias: bool
) -> Tensor:
    """``roi_align`` of one box per image; values keep ``x``'s scale."""
    n = x.shape[0]
    if not x.is_floating_point():
        x = x.float()
    boxes = boxes.to(x.dtype)
    top, left, box_h, box_w = boxes.unbind(1)
    batch_index = torch.arange(n, device=x.device, dtype=x.dtype)
    rois = torch.stack([batch_index, left, top, left + box_w, top + box_h], dim=1)
    # The raw op, not torchvision.ops.roi_align: that one switches to a Python
    # version under torch.use_deterministic_algorithms(True) whose adaptive
    # sampling needs memory proportional to N*C*size*H*W. The forward kernel
    # is deterministic anyway (one thread per output value).
    return torch.ops.torchvision.roi_align(
        x, rois, 1.0, size[0], size[1], -1 if antialias else 1, True
    )


def resized_crop(
    x: Tensor, boxes: Tensor, size: Size, *, antialias: bool = True
) -> Tensor:
    """Resample box ``boxes[n]`` of image ``n`` to ``size``, all in one op.

    Uses ``torchvision.ops.roi_align`` with ``aligned=True``: output row
    ``i`` averages bilinear samples of the image at source rows
    ``top - 0.5 + (i + (k + 0.5) / g) * box_height / height`` for ``k < g``
    (pixel centres at integers, ``height`` the output height; same for
    columns), which with ``g = 1`` is exactly
    ``F.interpolate(..., mode="bilinear", align_corners=False)`` of the box.
    Integer images are converted to float32 whole before resampling.

    How this differs from torchvision's and PIL's ``resized_crop``:

    - ``antialias=True`` takes ``g = ceil(box side / output side)`` samples
      per output pixel and axis, a box filter over the output pixel's
      footprint. When shrinking, PIL and torchvision's ``antialias=True``
      use a triangle filter as wide as the footprint instead, so results
      differ slightly (both suppress aliasing); when enlarging ``g = 1``:
      plain bilinear, as in torchvision. ``antialias=False`` is plain
      bilinear (no antialiasing) at any scale.
    - Samples within half a source pixel outside the box read the image's
      pixels there rather than repeating the box's edge pixel (torchvision
      crops first), which changes only the outermost output rows and columns
      when enlarging.
    - The result is float, not rounded back to uint8 as PIL does.

    :param x: ``(N, C, H, W)`` images; integers are resampled in float32.
    :param boxes: ``(N, 4)`` ``(top, left, box_height, box_width)`` inside
        the images, e.g. from :func:`random_resized_crop_params`.
    :param size: output size.
    :return: ``(N, C, height, width)`` float images; uint8 input is scaled to
        [0, 1] as ``ToDtype(float32, scale=True)`` would, float input keeps its
        scale.
    """
    _check_batch(x)
    if boxes.shape != (x.shape[0], 4):
        raise ValueError(f"boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    out = _resample(x, boxes, _pair("size", size), antialias)
    return out / 255 if x.dtype == torch.uint8 else out


def random_resized_crop(
    x: Tensor,
    size: Size,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    *,
    antialias: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``RandomResizedCrop(size, scale, ratio)`` of every image.

    Boxes from :func:`random_resized_crop_params`, resampled by
    :func:`resized_crop` (whose docstring says how it differs from PIL).
    """
    _check_batch(x)
    n, _, h, w = x.shape
    boxes = random_resized_crop_params(
        n, h, w, scale, ratio, device=x.device, generator=generator
    )
    return resized_crop(x, boxes, size, antialias=antialias)


def _affine(
    mean: Sequence[float],
    std: Sequence[float],
    channels: int,
    value_scale: float,
) -> tuple[Tensor, Tensor]:
    """CPU float32 ``(scale, shift)`` of shape ``(C, 1, 1)`` with
    ``(x / value_scale - mean) / std == x * scale + shift``."""
    mean_t = torch.as_tensor(mean, dtype=torch.float64).flatten()
    std_t = torch.as_tensor(std, dtype=torch.float64).flatten()
    if mean_t.numel() != channels or std_t.numel() != channels:
        raise ValueError(
            f"mean and std need {channels} values (one per channel), "
            f"got {mean_t.numel()} and {std_t.numel()}"
        )
    if not bool((std_t > 0).all()):
        raise ValueError(f"std must be > 0, got {std_t.tolist()}")
    scale = (1.0 / (value_scale * std_t)).view(-1, 1, 1)
    shift = (-mean_t / std_t).view(-1, 1, 1)
    return scale.float(), shift.float()


def _apply_affine(
    x: Tensor, scale: Tensor, shift: Tensor, dtype: torch.dtype
) -> Tensor:
    """``x * scale + shift`` computed in float32, returned as ``dtype``."""
    return torch.addcmul(shift.float(), x.float(), scale.float()).to(dtype)


def normalize(
    x: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``ToDtype(dtype, scale=True)`` then ``Normalize(mean, std)``.

    uint8 images are scaled to [0, 1] first; floating-point images are taken
    to be in [0, 1] already. Computed in float32, then cast to ``dtype``.
    ``mean`` and ``std`` (one value per channel) are copied to ``x``'s device
    at every call, a blocking copy on CUDA: in the training step use
    :class:`BatchAugment`, which keeps them on the device.
    """
    _check_batch(x)
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise ValueError(f"expected uint8 or floating-point images, got {x.dtype}")
    value_scale = 255.0 if x.dtype == torch.uint8 else 1.0
    scale, shift = _affine(mean, std, x.shape[1], value_scale)
    return _apply_affine(x, scale.to(x.device), shift.to(x.device), dtype)


class BatchAugment(nn.Module):
    """Train or eval transform of a uint8 batch, run on the batch's device.

    The steps, in this order: either a padded random crop back to the input
    size (``padding``) or a random resized crop (``resized_crop``, the output
    size) or neither; a horizontal flip with probability ``flip``; and
    :func:`normalize` to ``dtype``. ``mean`` and ``std`` are kept as
    (non-persistent) buffers, so ``.to(device)`` moves them; a ``generator``
    must live on the device the batches come from. For the padded crop the
    flip is folded into the crop's ``gather``; random numbers are drawn in
    the same order as calling :func:`random_crop` then :func:`random_flip`.

    Use :meth:`from_recipe` for a dataset's recipe (the one its torchvision
    transforms follow), or :meth:`cifar`, :meth:`imagenet` and
    :meth:`evaluation`.
    """

    norm_scale: Tensor
    norm_shift: Tensor

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        padding: int | None = None,
        resized_crop: int | None = None,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: float = 0.0,
        antialias: bool = True,
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if padding is not None and resized_crop is not None:
            raise ValueError("give padding (random crop) or resized_crop, not both")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
        self.padding = (
            None if padding is None else check_positive_int("padding", padding, 0)
        )
        self.resized_crop = (
            None if resized_crop is None else _pair("resized_crop", resized_crop)
        )
        _check_range("scale", scale, positive=False)
        _check_range("ratio", ratio, positive=True)
        # pairs, as checked
        self.crop_scale, self.crop_ratio = (scale[0], scale[1]), (ratio[0], ratio[1])
        self.flip = check_fraction("flip", flip)
        self.antialias = antialias
        self.dtype = dtype
        self.generator = generator
        # The crops keep the 0..255 scale (roi_align's float output too).
        norm_scale, norm_shift = _affine(mean, std, len(mean), 255.0)
        self.register_buffer("norm_scale", norm_scale, persistent=False)
        self.register_buffer("norm_shift", norm_shift, persistent=False)

    @classmethod
    def from_recipe(cls, recipe: Recipe, train: bool = True, **kwargs) -> BatchAugment:
        """The training (``train``) or eval transform of ``recipe``, as its
        torchvision transforms
        (:func:`~bdr_avalanche.benchmarks.transforms.torchvision_transforms`):
        same crop, flip and normalisation. Eval images are taken to be at
        their final size (no resize, no centre crop)."""
        if not train:
            return cls.evaluation(recipe.mean, recipe.std, **kwargs)
        crop_: dict[str, Any]
        if recipe.padding is None:
            crop_ = {"resized_crop": recipe.size}
        else:
            crop_ = {"padding": recipe.padding}
        return cls(recipe.mean, recipe.std, flip=recipe.flip, **crop_, **kwargs)

    @classmethod
    def cifar(
        cls,
        mean: Sequence[float] = _CIFAR.mean,
        std: Sequence[float] = _CIFAR.std,
        padding: int = _CIFAR_PADDING,
        **kwargs,
    ) -> BatchAugment:
        """RandomCrop(H, padding) + RandomHorizontalFlip + normalisation."""
        return cls(mean, std, padding=padding, flip=_CIFAR.flip, **kwargs)

    @classmethod
    def imagenet(
        cls,
        size: int = _IMAGENET.size,
        mean: Sequence[float] = _IMAGENET.mean,
        std: Sequence[float] = _IMAGENET.std,
        **kwargs,
    ) -> BatchAugment:
        """RandomResizedCrop(size) + RandomHorizontalFlip + normalisation."""
        return cls(mean, std, resized_crop=size, flip=_IMAGENET.flip, **kwargs)

    @classmethod
    def evaluation(
        cls, mean: Sequence[float], std: Sequence[float], **kwargs
    ) -> BatchAugment:
        """Normalisation only: eval images are stored at their final size."""
        return cls(mean, std, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` uint8 batch to normalised ``dtype`` images; a
        floating-point batch is taken to be in [0, 1] already (as by
        :func:`normalize`)."""
        _check_batch(x)
        if x.dtype != torch.uint8 and not x.is_floating_point():
            raise ValueError(f"expected a uint8 or floating-point batch, got {x.dtype}")
        if x.shape[1] != self.norm_scale.shape[0]:
            raise ValueError(
                f"expected {self.norm_scale.shape[0]} channels, got {x.shape[1]}"
            )
        from_uint8 = x.dtype == torch.uint8
        n, _, h, w = x.shape
        if self.padding is not None:
            top, left = _crop_offsets(x, (h, w), self.padding, self.generator)
            flip = (
                _flip_mask(n, self.flip, x.device, self.generator)
                if self.flip
                else None
            )
            x = crop(x, top, left, (h, w), self.padding, flip)
        else:
            if self.resized_crop is not None:
                boxes = random_resized_crop_params(
                    n,
                    h,
                    w,
                    self.crop_scale,
                    self.crop_ratio,
                    device=x.device,
                    generator=self.generator,
                )
                x = _resample(x, boxes, self.resized_crop, self.antialias)
            if self.flip:
                flip = _flip_mask(n, self.flip, x.device, self.generator)
                x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
        # the crops keep the input's value range (0..255 for uint8 input)
        scale = self.norm_scale if from_uint8 else self.norm_scale * 255.0
        return _apply_affine(x, scale, self.norm_shift, self.dtype)

    def extra_repr(self) -> str:
        if self.padding is not None:
            crop_ = f"padding={self.padding}"
        elif self.resized_crop is not None:
            crop_ = (
                f"resized_crop={self.resized_crop}, scale={self.crop_scale}, "
                f"ratio={self.crop_ratio}, antialias={self.antialias}"
            )
        else:
            crop_ = "no crop"
        return f"{crop_}, flip={self.flip}, dtype={self.dtype}"
