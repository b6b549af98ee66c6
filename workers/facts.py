"""Reading a device's facts (:mod:`catdog.facts`) cheaply enough for every heartbeat.

The static facts are read once, when the worker starts; each beat reads two small files (the
available memory and the temperature) and, every :data:`THROTTLE_EVERY_S` seconds, the
throttling flags: from the firmware's sysfs file where the kernel has one, else from
``vcgencmd get_throttled`` (a process start, too dear for every beat on a Pi Zero).

Every path is read under a root (``/`` unless ``$CATDOG_FACTS_ROOT`` says otherwise; under
another root ``vcgencmd`` is ``<root>/usr/bin/vcgencmd``), so a test fakes a hot, throttled Pi
with a few files, as the kernel lays them out.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT_ENV = "CATDOG_FACTS_ROOT"
THROTTLE_EVERY_S = 10.0
VCGENCMD_TIMEOUT_S = 2.0
FIRMWARE_THROTTLED = "sys/devices/platform/soc/soc:firmware/get_throttled"
#: what each ``detect:`` name looks for under ``/dev``
DETECT_PATTERNS = {"camera": ("video*",), "gpio": ("gpiomem",), "i2c": ("i2c-*",),
                   "gpu": ("dri/renderD*", "nvidia0")}


def _text(path: Path) -> str | None:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return path.read_text().replace("\x00", "").strip()
    return None


def _meminfo(root: Path) -> dict[str, float]:
    """MemTotal and MemAvailable in MB (empty when unreadable)."""
    found: dict[str, float] = {}
    text = _text(root / "proc/meminfo") or ""
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("MemTotal", "MemAvailable") and rest.split():
            found[name] = round(int(rest.split()[0]) / 1024, 1)
    return found


def _cores(root: Path) -> int | None:
    """CPUs online (``0-3,5`` in sysfs counts 5), else the count Python sees."""
    online = _text(root / "sys/devices/system/cpu/online")
    if online:
        with contextlib.suppress(ValueError):
            count = 0
            for part in online.split(","):
                low, _, high = part.partition("-")
                count += int(high or low) - int(low) + 1
            return count
    return os.cpu_count()


def _os_release(root: Path) -> str | None:
    for line in (_text(root / "etc/os-release") or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return None


def detected(root: Path, wanted: Iterable[str]) -> list[str]:
    """The ``detect:`` names whose device nodes exist under ``root/dev``."""
    dev = root / "dev"
    return [name for name in wanted
            if any(next(dev.glob(p), None) is not None for p in DETECT_PATTERNS.get(name, ()))]


class FactReader:
    """The facts of this device; :meth:`read` returns them all, re-reading only what changes."""

    def __init__(self, detect: Iterable[str] = (), root: str | os.PathLike[str] | None = None
                 ) -> None:
        self.root = Path(root or os.environ.get(ROOT_ENV) or "/")
        self.detect = tuple(detect)
        self._throttled: int | None = None
        self._throttle_read_at = -THROTTLE_EVERY_S
        self._thermal = self._thermal_file()
        self.static = self._static()
        #: the last facts read (what the health check and the heartbeat share)
        self.last: dict[str, Any] = {}

    def _static(self) -> dict[str, Any]:
        mem = _meminfo(self.root)
        arch = _text(self.root / "proc/sys/kernel/arch") or platform.machine() or None
        return {"arch": arch, "cores": _cores(self.root), "mem_total": mem.get("MemTotal"),
                "python": platform.python_version(), "os": _os_release(self.root),
                "model": _text(self.root / "proc/device-tree/model") or None,
                "detected": detected(self.root, self.detect)}

    def _thermal_file(self) -> Path | None:
        """The CPU's thermal zone: the first one named like a CPU's, else the first."""
        zones = sorted((self.root / "sys/class/thermal").glob("thermal_zone*"))
        for zone in zones:
            kind = (_text(zone / "type") or "").lower()
            if any(word in kind for word in ("cpu", "soc", "x86_pkg")):
                return zone / "temp"
        return zones[0] / "temp" if zones else None

    def temperature(self) -> float | None:
        raw = _text(self._thermal) if self._thermal is not None else None
        with contextlib.suppress(TypeError, ValueError):
            return round(int(raw) / 1000, 1)  # type: ignore[arg-type]
        return None

    def throttled(self, now: float | None = None) -> int | None:
        """The throttling flags, read at most every :data:`THROTTLE_EVERY_S` seconds."""
        now = time.monotonic() if now is None else now
        if now - self._throttle_read_at >= THROTTLE_EVERY_S:
            self._throttle_read_at = now
            self._throttled = self._read_throttled()
        return self._throttled

    def _read_throttled(self) -> int | None:
        raw = _text(self.root / FIRMWARE_THROTTLED)
        if raw is None:
            raw = self._vcgencmd()
        with contextlib.suppress(TypeError, ValueError):
            return int(str(raw).rpartition("=")[2], 16)
        return None

    def _vcgencmd(self) -> str | None:
        program = (shutil.which("vcgencmd") if self.root == Path("/")
                   else str(self.root / "usr/bin/vcgencmd"))
        if not program or not os.access(program, os.X_OK):
            return None
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run([program, "get_throttled"], capture_output=True, text=True,
                                  timeout=VCGENCMD_TIMEOUT_S, check=False)
            return done.stdout.strip() if done.returncode == 0 else None
        return None

    def read(self) -> dict[str, Any]:
        """Every fact now (the static ones as read at start)."""
        load = None
        with contextlib.suppress(OSError):
            load = round(os.getloadavg()[0], 2)
        self.last = {**self.static, "mem": _meminfo(self.root).get("MemAvailable"),
                     "temp": self.temperature(), "throttled": self.throttled(), "load": load}
        return self.last
