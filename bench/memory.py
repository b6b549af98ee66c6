"""Memory of a worker's process tree (its main process and pool children): RSS and PSS.

PSS shares each page among the processes mapping it, so a prefork pool's copy-on-write pages
count once; RSS counts them in every process.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from workers.usage import tree

PROC = Path("/proc")


def usage_mb(pid: int) -> dict[str, float]:
    """RSS and PSS of ``pid``'s tree in MB (``/proc/<pid>/smaps_rollup``), and its size."""
    totals = {"rss_mb": 0.0, "pss_mb": 0.0}
    processes = tree(pid)
    for member in processes:
        with contextlib.suppress(OSError):
            for line in (PROC / str(member) / "smaps_rollup").read_text().splitlines():
                field, _, rest = line.partition(":")
                if field in ("Rss", "Pss"):
                    totals[f"{field.lower()}_mb"] += int(rest.split()[0]) / 1024
    return {**{k: round(v, 1) for k, v in totals.items()}, "processes": len(processes)}
