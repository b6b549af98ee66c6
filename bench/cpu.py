"""CPU time of a worker's process tree (its main process and pool children), from ``/proc``."""

from __future__ import annotations

import contextlib
import os

from workers.usage import stat_fields, tree

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int) -> float:
    """User and system CPU seconds ``pid`` and its descendants have used so far."""
    ticks = 0
    for member in tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat_fields(member)
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / TICKS_PER_S
