"""The soak's device that boots: a LAN host that is a real systemd box (:mod:`bench.systemdbox`),
its worker started at boot by the unit ``fab enable`` installed there.

Its "reboot" is a power cut (every process of the box at once, SIGKILL to its PID 1) and a boot;
then nobody launches anything: the unit starts the worker, and :meth:`BootedDevice.reboot` only
watches for it (a heartbeat from a worker started after the power came back). Its processes live
in the box's own PID namespace: :meth:`BootedDevice.machine_pid` turns a pid as the box sees it
(its tmux pane's, found over SSH) into the machine's, so the soak's kills and stops reach them.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.lan import Lan, LanHost, _wait_for_port
from bench.systemdbox import PRIVATE_TMPFS, SystemdBox, guard_files, lan_box
from catdog.records import Heartbeat

#: a unit-booted worker must answer within this long after the power comes back
BACK_WITHIN_S = 90.0
CANARY = "the soak's boots must leave this file alone\n"


class BootedDevice:
    """Device ``name`` of ``lan`` as a box that boots (booted at once, sshd up)."""

    def __init__(self, lan: Lan, name: str) -> None:
        self.name = name
        self.host: LanHost
        self.box: SystemdBox
        self.host, self.box = lan_box(lan, name)
        #: canaries in the machine's own /tmp, /var/tmp and /run: every boot must leave them be
        self.canaries = [Path(d) / f"catdog-soak-canary-{self.box.uid}" for d in PRIVATE_TMPFS]
        for canary in self.canaries:
            canary.write_text(CANARY)
        try:
            self.boot_s = self._boot()
        except BaseException:
            self.close()  # a box half booted: powered off, nothing left behind
            raise

    def _boot(self) -> float:
        seconds = self.box.boot()
        _wait_for_port(self.host.address, 22, self.box.folder / "console.log")
        return seconds

    def machine_pid(self, pid: int) -> int | None:
        """The machine's pid of the box's process ``pid`` (None when there is none)."""
        try:
            namespace = os.readlink(f"/proc/{self.box.pid}/ns/pid")
        except (OSError, RuntimeError):  # the box is down
            return None
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if os.readlink(entry / "ns" / "pid") != namespace:
                    continue
                for line in (entry / "status").read_text().splitlines():
                    if line.startswith("NSpid:") and int(line.split()[-1]) == pid:
                        return int(entry.name)
        return None

    def reboot(self, down_s: float, beat: Callable[[], Heartbeat | None]) -> dict[str, Any]:
        """Power cut, ``down_s`` seconds off, boot; then wait (touching nothing) until ``beat``
        shows a worker started after the power came back. What it took, for the fault record:
        ``boot_s`` until systemd said the box was up and its sshd listened (systemd counts the
        worker's unit in: ``Type=notify``, ready once the heartbeat is fresh), ``ready_s`` from
        the power coming back to that fresh heartbeat."""
        self.box.power_off()
        time.sleep(down_s)
        powered = time.time()
        boot_s = self._boot()
        while True:
            found = beat()
            if found is not None and found.started >= powered and found.is_fresh(time.time()):
                break
            if time.time() - powered > BACK_WITHIN_S:
                raise RuntimeError(f"{self.name}: no worker {BACK_WITHIN_S:.0f} s after the "
                                   f"boot, though its unit should start one: "
                                   f"{self.box.console_tail()}")
            time.sleep(0.2)
        return {"form": "unit", "boot_s": round(boot_s, 1),
                "ready_s": round(time.time() - powered, 1), "boots": self.box.boots}

    def untouched(self) -> list[str]:
        """What the boots touched outside the box: each canary changed or gone, each seen from
        inside the box, each boot guard left behind (none: an empty list)."""
        found = [f"{c} changed or gone" for c in self.canaries
                 if not c.exists() or c.read_text() != CANARY]
        with contextlib.suppress(RuntimeError, OSError):  # the box down: nothing to look from
            seen = self.box.run("ls", "-A", *PRIVATE_TMPFS, check=False).stdout.split()
            found += [f"{c} visible inside the box" for c in self.canaries if c.name in seen]
        return found + [f"{g} left behind" for g in guard_files(self.box.uid) if g.exists()]

    def close(self) -> None:
        """Power off, the canaries removed."""
        self.box.power_off()
        for canary in self.canaries:
            canary.unlink(missing_ok=True)
