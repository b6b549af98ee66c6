"""Durations: ``60`` (seconds), ``"30s"``, ``"5m"``, ``"1.5h"``, ``"1d"``.

>>> parse_duration("1.5h"), parse_duration(90), parse_duration("0s")
(5400.0, 90.0, None)
"""

from __future__ import annotations

import math
import re

DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([smhd]?)\s*$")
DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
WHAT_DURATION = "a positive duration like 30s, 5m, 1h, 1d or a number of seconds"


def parse_duration(value: object) -> float | None:
    """``value`` as a positive number of seconds (``60``, ``"30s"``, ``"1.5h"``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (match := DURATION_RE.match(value)):
        seconds = float(match[1]) * DURATION_UNITS[match[2]]
    else:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None
