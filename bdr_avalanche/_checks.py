"""Argument checks that need neither torch nor Avalanche, so that the
hyper-parameter tables (:mod:`bdr_avalanche.params`), the config and
the command line's ``--help`` can use them without importing either."""

from __future__ import annotations

import math

__all__ = [
    "check_fraction",
    "check_non_negative",
    "check_positive",
    "check_positive_int",
]


def check_fraction(name: str, value: float) -> float:
    """Raise ``ValueError`` unless ``0 <= value <= 1``."""
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def check_non_negative(name: str, value: float) -> float:
    """Raise ``ValueError`` unless ``value`` is a finite number ``>= 0``."""
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_positive(name: str, value: float) -> float:
    """Raise ``ValueError`` unless ``value`` is a finite number ``> 0``."""
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_positive_int(name: str, value: int, minimum: int = 1) -> int:
    """Raise ``ValueError`` unless ``value`` is an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value
