"""Class-incremental benchmark streams."""

from .digits import split_digits

__all__ = ["split_digits"]
