"""Summaries of repeated measurements: median and spread, percentiles, ratios."""

from __future__ import annotations

import math
import statistics


def summary(values: list[float]) -> dict[str, float | int] | None:
    """Median, min, max and count (None when nothing was measured)."""
    if not values:
        return None
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "n": len(values)}


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank.

    >>> percentile([5, 1, 4, 2, 3], 0.5), percentile(list(range(1, 101)), 0.99)
    (3, 99)
    """
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def ratio(mine: dict[str, float | int] | None, theirs: dict[str, float | int] | None
          ) -> float | None:
    """Median over median (CatDog / plain)."""
    if not mine or not theirs or not theirs["median"]:
        return None
    return round(mine["median"] / theirs["median"], 3)
