"""A device's facts root faked the way the kernel lays it out (``$CATDOG_FACTS_ROOT``,
:mod:`workers.facts`): ``/proc``, ``/sys``, ``/etc/os-release``, ``/dev`` nodes and a ``vcgencmd``
program, so a worker on this machine reports the facts of a hot, throttled Pi (or a cool PC)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class FakeRoot:
    """A facts root under ``path``; the readings can be changed while a worker reads them."""

    def __init__(self, path: Path, *, arch: str = "aarch64", cores: int = 4,
                 mem_total_mb: int = 3800, mem_free_mb: int = 3000,
                 model: str | None = "Raspberry Pi 4 Model B Rev 1.4", temp_c: float = 50.0,
                 throttled: int = 0, devices: tuple[str, ...] = (),
                 os_release: str = "Debian GNU/Linux 12 (bookworm)") -> None:
        self.path = path
        self._write("proc/sys/kernel/arch", arch + "\n")
        self._write("sys/devices/system/cpu/online", f"0-{cores - 1}\n")
        self.memory(mem_total_mb, mem_free_mb)
        if model is not None:
            self._write("proc/device-tree/model", model + "\x00")
        self._write("sys/class/thermal/thermal_zone0/type", "cpu-thermal\n")
        self.temperature(temp_c)
        self.throttle(throttled)
        self._write("etc/os-release", f'PRETTY_NAME="{os_release}"\nID=debian\n')
        for node in devices:  # like "video0", "gpiomem", "i2c-1", "dri/renderD128"
            self._write(f"dev/{node}", "")

    def _write(self, relative: str, text: str) -> Path:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".new")
        partial.write_text(text)
        os.replace(partial, target)  # a reader never sees half a file
        return target

    def memory(self, total_mb: int, free_mb: int) -> None:
        self._write("proc/meminfo", f"MemTotal: {total_mb * 1024} kB\nMemFree: {free_mb * 1024} kB"
                                    f"\nMemAvailable: {free_mb * 1024} kB\n")

    def temperature(self, celsius: float) -> None:
        self._write("sys/class/thermal/thermal_zone0/temp", f"{int(celsius * 1000)}\n")

    def throttle(self, flags: int) -> None:
        """The flags as ``vcgencmd get_throttled`` prints them (a real program run each time)."""
        program = self._write("usr/bin/vcgencmd",
                              f"#!/bin/sh\n[ \"$1\" = get_throttled ] && echo throttled={flags:#x}\n")
        program.chmod(0o755)


def wait_for(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """``check()``'s first true value within ``timeout`` seconds, else fail saying ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)
