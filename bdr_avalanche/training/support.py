"""Which methods take which speed switch, and why a baseline cannot.

The speed switches (:class:`~bdr_avalanche.training.Speed`) work for our
methods and for every Avalanche baseline whose training loop goes through
the template's data loader and ``forward``; a baseline that runs part of
its training through its own loop is listed in :data:`UNSUPPORTED` with the
reason. This module imports neither torch nor Avalanche, so the config's
help texts and checks (and with them the command line's ``--help``) read it
as :func:`~bdr_avalanche.baselines.make_baseline` does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

__all__ = ["SWITCHES", "UNSUPPORTED", "methods_taking", "unsupported"]

SWITCHES: Mapping[str, str] = MappingProxyType(
    {
        "fast_input": "in-memory images augmented on the device",
        "amp": "autocast of the forward pass",
        "channels_last": "channels-last model and batches",
        "compile": "torch.compile of the backbone",
    }
)
"""The speed switches, by their config key."""

UNSUPPORTED: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "icarl": {
            "fast_input": "iCaRL keeps its exemplars as eval-transformed "
            "(normalised) tensors and concatenates them to the raw new images "
            "(ICaRLPlugin.after_train_dataset_adaptation), so augmenting the "
            "batches on the device would normalise the exemplars twice",
        },
        "bic": {
            "fast_input": "BiC fits its bias layer in a loop of its own "
            "(bias_correction_step: stage_2_epochs epochs over its own "
            "DataLoader of the held-out exemplars, with per-image transforms "
            "and the model called outside the strategy's forward), so stage 2 "
            "would not run through the fast input path",
            "amp": "BiC's bias layer (Avalanche's BiasLayer, applied to the "
            "logits in the forward) writes its float32 parameters into a "
            "tensor of the logits' dtype (alpha[:, clss] = self.alpha), which "
            "fails on the bfloat16/float16 logits of autocast",
        },
        "der": {
            "fast_input": "DER draws its memory batches (images with their "
            "stored logits) from a DataLoader of its own in _before_forward "
            "(DER.replay_loader) and appends them to every batch, so half of "
            "each batch would still go through per-image transforms",
        },
        "er_ace": {
            "fast_input": "ER-ACE draws its memory batches from a DataLoader "
            "of its own inside training_epoch (ER_ACE.replay_loader, with "
            "per-image transforms) and runs the model on them outside the "
            "strategy's forward, so the memory half of every step would not "
            "go through the fast input path",
        },
        "agem": {
            "fast_input": "A-GEM draws its reference batches from a loader of "
            "its own in before_training_iteration (AGEMPlugin.buffer_dliter, "
            "with per-image transforms) and runs the model on them outside the "
            "strategy's forward, so the reference gradients would not go "
            "through the fast input path",
        },
    }
)
"""Baseline -> switch -> why that baseline cannot take it. Every switch
not listed works: the fast input path for naive, replay, lwf and gdumb;
autocast for all but bic (for er_ace and agem, the forward pass on the
memory runs outside it, in float32); channels-last and compile for
all."""


def unsupported(method: str, switch: str) -> str | None:
    """Why ``method`` cannot take ``switch`` (a key of :data:`SWITCHES`),
    or ``None`` when it can."""
    if switch not in SWITCHES:
        raise ValueError(f"unknown speed switch {switch!r}; one of {list(SWITCHES)}")
    return UNSUPPORTED.get(method, {}).get(switch)


def methods_taking(switch: str, methods: Iterable[str]) -> list[str]:
    """Those of ``methods`` that take ``switch``, in order."""
    return [m for m in methods if unsupported(m, switch) is None]
