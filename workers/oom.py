"""Whether the kernel's OOM killer ended a worker's pool process, where the device lets us read it.

The OOM killer ends its victim with SIGKILL and counts it: in the memory cgroup of the victim
(cgroup v1 ``memory.oom_control``, v2 ``memory.events``: ``oom_kill N``) and machine-wide
(``/proc/vmstat``, Linux 4.13 and later; before, a v1 cgroup's ``memory.failcnt``, how often it
hit its limit, stands in). :class:`OomCounter` reads the most specific count as
a delivery starts and again when its process died by SIGKILL (:mod:`workers.quarantine`): a kill
counted in between was the OOM killer's.
"""

from __future__ import annotations

import os
from pathlib import Path

SIGKILL = 9
#: how often a v1 memory cgroup hit its limit: with a SIGKILL, the OOM killer's mark where the
#: kernel (before 4.13) counts no OOM kill
FAILCNT = "memory.failcnt"


def _read(path: str | Path) -> str | None:
    """A small kernel file's text (one system call: read as each task starts)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 65536).decode(errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


class OomCounter:
    """The kernel's count of OOM kills where this worker runs: its memory cgroup's (v1
    ``memory.oom_control``, v2 ``memory.events``), else the machine's (``/proc/vmstat``). Read
    as a delivery starts and again when its pool process dies by SIGKILL: a kill counted in
    between was the OOM killer's. None where no count can be read."""

    def __init__(self, proc: Path = Path("/proc"), cgroups: Path = Path("/sys/fs/cgroup")
                 ) -> None:
        self.proc, self.cgroups = proc, cgroups
        self._membership: str | None = None
        self._files: list[str] = []

    def files(self) -> list[str]:
        """Where the count is kept, the most specific first (looked up each time: the worker
        may have been moved to another cgroup since it started)."""
        membership = _read(self.proc / "self" / "cgroup") or ""
        if membership != self._membership:
            found: list[str] = []
            for entry in membership.splitlines():
                fields = entry.split(":", 2)
                if len(fields) != 3:
                    continue
                _, controllers, path = fields
                relative = path.lstrip("/")
                if "memory" in controllers.split(","):
                    group = self.cgroups / "memory" / relative
                    found += [str(group / "memory.oom_control"), str(group / FAILCNT)]
                elif controllers == "" and relative:
                    found.append(str(self.cgroups / relative / "memory.events"))
            self._membership, self._files = membership, [*found, str(self.proc / "vmstat")]
        return self._files

    def read(self) -> tuple[str, int] | None:
        """(where, count), or None when no count can be read."""
        for path in self.files():
            text = _read(path) or ""
            if path.endswith(FAILCNT):  # (a kernel before 4.13: no oom_kill count above it)
                if text.strip().isdigit():
                    return path, int(text)
                continue
            for row in text.splitlines():
                name, _, value = row.partition(" ")
                if name == "oom_kill" and value.strip().isdigit():
                    return path, int(value)
        return None

    def involved(self, signal: int | None, before: tuple[str, int] | None) -> bool | None:
        """Whether the OOM killer ended a process that died of ``signal`` (it sends SIGKILL),
        given the count ``before`` it started."""
        if signal != SIGKILL:
            return False
        after = self.read()
        if after is None or before is None or after[0] != before[0]:
            return None
        return after[1] > before[1]
