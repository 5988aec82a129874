"""Helpers shared by the plugins: argument checks and feature capture."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn

# The argument checks live in a module without torch (the config and
# --help use them); they are re-exported here for the plugins.
from ._checks import (
    check_fraction,
    check_non_negative,
    check_positive,
    check_positive_int,
)

__all__ = [
    "FeatureRecorder",
    "check_fraction",
    "check_non_negative",
    "check_positive",
    "check_positive_int",
    "frozen_copy",
    "nan_to_none",
    "get_submodule",
]


def get_submodule(model: nn.Module, name: str, role: str) -> nn.Module:
    """``model.get_submodule(name)`` with an error that lists the choices."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in model.named_children()]
        raise ValueError(
            f"{role} {name!r} is not a submodule of {type(model).__name__}; "
            f"its children are {names}"
        ) from None


class FeatureRecorder:
    """Keeps the (flattened) output of one submodule from the last forward.

    A forward hook is registered by :meth:`attach` and removed by
    :meth:`detach`; plugins attach while they need features, so the model
    carries no hook outside that window.
    """

    def __init__(self, layer_name: str) -> None:
        self.layer_name = layer_name
        self.features: Tensor | None = None
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    def attach(self, model: nn.Module) -> FeatureRecorder:
        self.detach()
        layer = get_submodule(model, self.layer_name, "feature_layer")
        self._handle = layer.register_forward_hook(self._hook)
        return self

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self.features = None

    def _hook(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        self.features = output.flatten(1)

    def get(self) -> Tensor:
        if self.features is None:
            raise RuntimeError(
                f"no features recorded from layer {self.layer_name!r}: "
                "was the model called since the recorder was attached?"
            )
        return self.features

    def extract(
        self, model: nn.Module, loader, device: torch.device
    ) -> tuple[Tensor, Tensor]:
        """Features and labels of a whole data loader, in eval mode."""
        was_training = model.training
        model.eval()
        self.attach(model)
        features, labels = [], []
        try:
            with torch.no_grad():
                for batch in loader:
                    model(batch[0].to(device, non_blocking=True))
                    features.append(self.get())
                    labels.append(batch[1].to(device, non_blocking=True))
        finally:
            self.detach()
            model.train(was_training)
        return torch.cat(features), torch.cat(labels)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with no gradients and no forward hooks.

    Hooks (such as a :class:`FeatureRecorder`'s) are set aside during the
    copy, so their state is not copied, and put back on ``model``.
    """
    hooks = {module: dict(module._forward_hooks) for module in model.modules()}
    for module in hooks:
        module._forward_hooks.clear()
    try:
        old = copy.deepcopy(model)
    finally:
        for module, saved in hooks.items():
            module._forward_hooks.update(saved)
    old.eval()
    old.requires_grad_(False)
    return old


def nan_to_none(value: Any) -> Any:
    """``value`` with NaN floats (also inside lists) replaced by ``None``,
    for JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list):
        return [nan_to_none(v) for v in value]
    return value
