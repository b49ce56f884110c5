"""Argument checks shared by the public functions: one line naming the argument and what is
valid, as a ``ValueError``."""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["check_integer", "positive_number"]


def check_integer(name: str, value: Any, low: int, *, or_none: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer (numpy's too, not a bool) >= ``low``,
    or None when ``or_none``.

    >>> check_integer("steps", 3, 1)
    >>> check_integer("seed", 2.5, 0, or_none=True)
    Traceback (most recent call last):
    ...
    ValueError: seed must be None or an integer >= 0, got 2.5
    """
    if or_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        either = "None or " if or_none else ""
        raise ValueError(f"{name} must be {either}an integer >= {low}, got {value!r}")


def positive_number(x: Any) -> bool:
    """A finite real number > 0 (numpy's too, not a bool)."""
    real = isinstance(x, numbers.Real) and not isinstance(x, bool)
    return real and math.isfinite(x) and x > 0
