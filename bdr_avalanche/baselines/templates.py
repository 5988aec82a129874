"""Avalanche's strategies composed with the speed mixins.

Each class is the Avalanche strategy with
:class:`~bdr_avalanche.training.SpeedMixin` mixed in before it (module-level
classes, so a strategy pickles by reference): it takes ``batch_augment``,
``amp_dtype`` and ``channels_last`` besides its own arguments, all off by
default. :func:`~bdr_avalanche.baselines.make_baseline` builds them when a
speed switch is on; which baseline cannot take which switch, and why, is
:data:`~bdr_avalanche.training.support.UNSUPPORTED`.
"""

from __future__ import annotations

from avalanche.training.supervised import DER, ER_ACE, GDumb, ICaRL, LwF, Naive
from avalanche.training.templates import SupervisedTemplate

from ..training.speed import SpeedMixin

__all__ = [
    "SPEED_TEMPLATES",
    "FastDER",
    "FastER_ACE",
    "FastGDumb",
    "FastICaRL",
    "FastLwF",
    "FastNaive",
    "with_speed",
]


class FastNaive(SpeedMixin, Naive):
    """``Naive`` with the speed mixins (naive, replay, bic, agem). A-GEM's
    reference gradient is computed outside the template's ``forward``
    (``AGEMPlugin.before_training_iteration``), in float32."""


class FastLwF(SpeedMixin, LwF):
    """``LwF`` with the speed mixins; the teacher, run by ``LwFPlugin``
    outside the forward, stays in float32."""


class FastGDumb(SpeedMixin, GDumb):
    """``GDumb`` with the speed mixins: its buffer is the adapted dataset,
    stacked on the device at every experience."""


class FastICaRL(SpeedMixin, ICaRL):
    """``ICaRL`` with the speed mixins (not the fast input path)."""


class FastDER(SpeedMixin, DER):
    """``DER`` with the speed mixins (not the fast input path)."""


class FastER_ACE(SpeedMixin, ER_ACE):
    """``ER_ACE`` with the speed mixins (not the fast input path): autocast
    covers the forward pass of the new batch; that of the memory batch,
    which ``ER_ACE.training_epoch`` runs itself, stays in float32."""


SPEED_TEMPLATES: dict[type[SupervisedTemplate], type[SupervisedTemplate]] = {
    Naive: FastNaive,
    LwF: FastLwF,
    GDumb: FastGDumb,
    ICaRL: FastICaRL,
    DER: FastDER,
    ER_ACE: FastER_ACE,
}
"""Avalanche strategy -> the same with the speed mixins."""


def with_speed(template: type[SupervisedTemplate]) -> type[SupervisedTemplate]:
    """``template`` with the speed mixins (from :data:`SPEED_TEMPLATES`)."""
    try:
        return SPEED_TEMPLATES[template]
    except KeyError:
        raise ValueError(
            f"no speed template for {template.__name__}; mix SpeedMixin in: "
            f"class Fast{template.__name__}(SpeedMixin, {template.__name__})"
        ) from None
