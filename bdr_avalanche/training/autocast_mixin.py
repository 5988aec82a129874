"""Mixed precision for any Avalanche template: the forward pass under
``torch.autocast``."""

from __future__ import annotations

import torch
from torch import Tensor

from .mixin_protocol import SpeedStrategyProtocol

__all__ = ["AutocastMixin"]


class AutocastMixin(SpeedStrategyProtocol):
    """Runs the template's ``forward`` (training and evaluation) under
    ``torch.autocast(device.type, amp_dtype)`` and returns its output in
    float32, so that the loss is computed in float32 (autocast would run
    cross-entropy in float32 anyway).

    Mix it in before the template: ``class Fast(AutocastMixin, Naive)``.
    Without ``amp_dtype`` the forward runs with autocast disabled (an
    autocast the caller entered does not reach it). What runs outside the
    template's ``forward`` (a plugin's teacher, a baseline's own loop) runs
    in full precision unless it enters :meth:`autocast` itself, as our
    plugins do. There is no ``GradScaler``: with ``float16`` small
    gradients may underflow (``bfloat16`` has float32's range).

    :param amp_dtype: the autocast dtype (e.g. ``torch.bfloat16``), or
        ``None`` for full precision.
    """

    def __init__(self, *, amp_dtype: torch.dtype | None = None, **kwargs) -> None:
        if amp_dtype is not None and not (
            isinstance(amp_dtype, torch.dtype) and amp_dtype.is_floating_point
        ):
            raise ValueError(
                f"amp_dtype must be a floating-point dtype, got {amp_dtype}"
            )
        self.amp_dtype = amp_dtype
        super().__init__(**kwargs)

    def autocast(self) -> torch.autocast:
        """The mixed-precision context of the forward passes (disabled
        without ``amp_dtype``)."""
        return torch.autocast(
            self.device.type,
            dtype=self.amp_dtype or torch.bfloat16,
            enabled=self.amp_dtype is not None,
        )

    def forward(self):
        """The template's forward under :meth:`autocast`, in float32."""
        with self.autocast():
            output = super().forward()
        return output.float() if isinstance(output, Tensor) else output
