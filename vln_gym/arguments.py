"""Checks of constructor and command-line arguments: a wrong type, a NaN or a value out of range is one
``ValueError`` line naming the argument, at the call, not a numpy error or a wrong result later.

``image_size="56"`` would otherwise become frames of shape ``(5, 6)``, ``turn_angle=nan`` would pass the
``> 0`` test (every comparison with NaN is false) and fail at the first reset.
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def is_finite_real(value: Any) -> bool:
    """``value`` is a finite real number (Python or numpy, not a bool, not a string)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def is_whole(value: Any) -> bool:
    """``value`` is an integer (Python or numpy, not a bool, not a float)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def real_number(
    name: str, value: Any, *, low: float, high: float = math.inf, low_open: bool = False
) -> float:
    """``value`` as a float: a finite real (not a bool, not a string) in ``[low, high]`` (``(low, high]``
    with ``low_open``)."""
    ok = is_finite_real(value)
    if ok:
        ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        span = f"> {low:g}" if high == math.inf and low_open else f">= {low:g}"
        if high != math.inf:
            span = f"in {bracket}{low:g}, {high:g}]"
        raise ValueError(f"{name} must be a finite number {span}, got {value!r}")
    return float(value)


def whole_number(name: str, value: Any, *, low: int) -> int:
    """``value`` as an int: an integer (Python or numpy, not a bool or float) >= ``low``."""
    if not is_whole(value) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def size_pair(name: str, value: Any) -> tuple[int, int]:
    """``value`` as ``(height, width)``: two integers >= 1 (a list, tuple or array of two)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"{name} must be (height, width), two integers >= 1, got {value!r}")
    return whole_number(f"{name}[0]", value[0], low=1), whole_number(f"{name}[1]", value[1], low=1)
