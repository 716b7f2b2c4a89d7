"""95% intervals for evaluation metrics: Wilson score for 0/1 rates, normal approximation for means (clipped
at the quantity's natural bounds, e.g. >= 0 for a length, [0, 1] for SPL)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def wilson_interval(successes: float, n: int, z: float = 1.96) -> list[float]:
    """Wilson score interval of a binomial rate (stays inside [0, 1] and is not empty at 0% or 100%)."""
    rate = successes / n
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def sample_std(values: Sequence[float]) -> float:
    """Sample standard deviation (ddof 1; 0.0 for fewer than two values)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def mean_interval(
    values: Sequence[float], z: float = 1.96, bounds: tuple[float, float] = (-math.inf, math.inf)
) -> list[float]:
    """``mean -+ z * std / sqrt(n)``, clipped to ``bounds`` (the values' possible range)."""
    mean = sum(values) / len(values)
    half = z * sample_std(values) / math.sqrt(len(values))
    return clip_interval(mean - half, mean + half, bounds)


def clip_interval(low: float, high: float, bounds: tuple[float, float]) -> list[float]:
    """``[low, high]`` clipped to ``bounds``: a mean of quantities in ``bounds`` cannot leave them."""
    return [max(bounds[0], low), min(bounds[1], high)]
