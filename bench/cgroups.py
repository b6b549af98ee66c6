"""Pi-sized devices for the field profile: each device's worker runs in a cgroup (v1) of its
own whose CPU quota makes one of this machine's cores about as fast as a Pi Zero 2W's, with
the Pi's 512 MB of memory.

A worker is put in its cgroup from its very first instruction: the device's ``python`` is a
small shell script that writes its own pid into the cgroups' ``cgroup.procs`` and then ``exec``s
the real interpreter, so start-up, the pool's children and every task are all inside. The
quota is ``period / factor`` per ``period`` (a short period, so a throttled worker waits a few
milliseconds at most, as a slow core would, not a tenth of a second).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

CPU_ROOT = Path("/sys/fs/cgroup/cpu")
MEMORY_ROOT = Path("/sys/fs/cgroup/memory")
#: this machine's core / a Pi Zero 2W's core, for CatDog's start-up and per-task work (see
#: docs/performance.md, "The field profile", for where the figure comes from)
PI_ZERO_2W_FACTOR = 8.0
PI_MEMORY_BYTES = 512 * 1024 * 1024
#: the CFS period: with a factor of 8, 1.25 ms of CPU in each 10 ms
PERIOD_US = 10_000


class CgroupsUnavailable(RuntimeError):
    """The cgroup v1 ``cpu`` and ``memory`` hierarchies are not writable here."""


class PiCgroups:
    """One parent cgroup per run (``catdog-field-<id>`` in both hierarchies), a child per
    device and side; :meth:`close` moves what is left to the root and removes them all."""

    def __init__(self, folder: Path, factor: float = PI_ZERO_2W_FACTOR,
                 memory_bytes: int = PI_MEMORY_BYTES) -> None:
        if not os.access(CPU_ROOT, os.W_OK) or not os.access(MEMORY_ROOT, os.W_OK):
            raise CgroupsUnavailable(f"{CPU_ROOT} and {MEMORY_ROOT} must be writable (root, "
                                     f"cgroup v1)")
        self.folder, self.factor, self.memory_bytes = folder, factor, memory_bytes
        self.name = f"catdog-field-{uuid.uuid4().hex[:8]}"
        self.groups: list[str] = []
        for root in (CPU_ROOT, MEMORY_ROOT):
            (root / self.name).mkdir()
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def quota_us(self) -> int:
        return max(1000, round(PERIOD_US / self.factor))

    def python(self, group: str) -> str:
        """A ``python`` for a device: the real interpreter, started inside cgroup ``group``."""
        self._make(group)
        script = self.folder / f"python-{group}"
        procs = [CPU_ROOT / self.name / group / "cgroup.procs",
                 MEMORY_ROOT / self.name / group / "cgroup.procs"]
        script.write_text("#!/bin/sh\n" + "".join(f"echo $$ > {shlex.quote(str(p))}\n"
                                                  for p in procs)
                          + f'exec {shlex.quote(sys.executable)} "$@"\n')
        script.chmod(0o755)
        return str(script)

    def _make(self, group: str) -> None:
        if group in self.groups:
            return
        cpu, memory = CPU_ROOT / self.name / group, MEMORY_ROOT / self.name / group
        cpu.mkdir()
        memory.mkdir()
        self.groups.append(group)
        (cpu / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (cpu / "cpu.cfs_quota_us").write_text(str(self.quota_us))
        (memory / "memory.limit_in_bytes").write_text(str(self.memory_bytes))

    def memory_mb(self, group: str) -> float:
        """What the kernel charges the group now (RSS and page cache), in MB."""
        raw = (MEMORY_ROOT / self.name / group / "memory.usage_in_bytes").read_text()
        return int(raw) / 2**20

    def throttled_s(self, group: str) -> float:
        """How long the group's processes have waited for quota so far."""
        for line in (CPU_ROOT / self.name / group / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "throttled_time":
                return int(value) / 1e9
        return 0.0

    def timed(self, group: str, argv: list[str]) -> float:
        """Wall seconds of ``argv`` run in ``group`` (e.g. ``-c 'import celery'``)."""
        started = time.perf_counter()
        subprocess.run([self.python(group), *argv], check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - started

    def close(self) -> None:
        """Move any process left to the root cgroups, then remove every group made."""
        for root in (CPU_ROOT, MEMORY_ROOT):
            for group in [*self.groups, ""]:
                path = root / self.name / group if group else root / self.name
                with contextlib.suppress(OSError):
                    for pid in (path / "cgroup.procs").read_text().split():
                        with contextlib.suppress(OSError):
                            (root / "cgroup.procs").write_text(pid)
                for _ in range(50):  # the kernel frees a group a moment after its last exit
                    try:
                        path.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.1)
