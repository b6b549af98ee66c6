"""The soak's faults, struck for real on a :class:`~tests.chaos.soakfleet.SoakFleet` and healed.

Each fault runs in a thread of its own: strike, hold, heal, and a record of what happened
(:class:`Struck`). A fault waits for the one before it on the same device to have healed (the
schedule leaves room, a slow relaunch may not), so two faults never hold one device at once. A
fault that finds its device's worker dead though nothing killed it (a worker that died by itself,
say of a broker kill) notes it (:attr:`Faults.found_dead`), relaunches it, then strikes.

- ``kill_worker``: SIGKILL of the worker's main process (a prefork pool is orphaned, as under the
  OOM killer); 20 s later it is launched again, as a user seeing it offline would.
- ``kill_redis``: SIGKILL of the broker's server; 2 s later it starts again on its port, with
  its append-only file (workers and producer reconnect by themselves).
- ``link_down``: the device's cable pulled for 20 s; then it must rejoin by itself (a fresh
  heartbeat), nobody relaunches it.
- ``stop_worker``: SIGSTOP of the worker's whole process tree for 15 s, then SIGCONT.
- ``reboot``: :meth:`SoakFleet.reboot`, 5 s down. On a device that boots (``net-b``) a power
  cut and a boot, the worker back by its ``fab enable`` unit with nobody launching it (recorded
  ``"form": "unit"``, with the boot's and the worker's seconds); elsewhere every process of the
  worker and its session gone, then a relaunch (``"form": "relaunch"``).

On a device that boots, its unit starts a dead worker again: a ``kill_worker`` there records
whether it had within the 20 s (``"unit_restarted"``), and a worker found dead is given
:data:`UNIT_BACK_S` for its unit before anything relaunches it.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .breaks import signal_all
from .schedule import KILL_REDIS, KILL_WORKER, LINK_DOWN, REBOOT, STOP_WORKER, Fault
from .soakfleet import SoakFleet

WORKER_DOWN_S = 20.0
REDIS_DOWN_S = 2.0
LINK_DOWN_S = 20.0
STOP_S = 15.0
REBOOT_DOWN_S = 5.0
REJOIN_WITHIN_S = 60.0
#: a unit starts a dead worker again within seconds (workers.autostart's grace, RestartSec)
UNIT_BACK_S = 30.0


@dataclass
class Struck:
    kind: str
    device: str | None
    planned_s: float
    struck_s: float = 0.0  # after the soak's start
    struck_at: float = 0.0  # time.time() of the strike
    healed_after_s: float | None = None  # from the strike to healed
    detail: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Faults:
    def __init__(self, fleet: SoakFleet, started: float) -> None:
        self.fleet = fleet
        self.started = started  # time.monotonic() of the soak's start
        self.struck: list[Struck] = []
        self._threads: list[threading.Thread] = []
        self._device_locks = {name: threading.Lock() for name in fleet.names}
        self._redis_lock = threading.Lock()
        #: workers a fault found dead though nothing had killed them, relaunched before it struck
        self.found_dead: list[dict[str, Any]] = []

    def strike(self, fault: Fault) -> None:
        """Strike ``fault`` now, in a thread of its own (it holds and heals there)."""
        record = Struck(fault.kind, fault.device, fault.at_s)
        self.struck.append(record)
        thread = threading.Thread(target=self._run, args=(fault, record), daemon=True,
                                  name=f"fault-{fault.kind}-{fault.device}")
        self._threads.append(thread)
        thread.start()

    def wait(self, timeout: float) -> None:
        """Until every fault has healed (or ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for record in self.struck:
            if record.error is None:
                found[record.kind] = found.get(record.kind, 0) + 1
        return found

    def _run(self, fault: Fault, record: Struck) -> None:
        lock = self._redis_lock if fault.device is None else self._device_locks[fault.device]
        with lock:
            try:
                if fault.device is not None:
                    self._revive(fault.device)
                record.struck_s = round(time.monotonic() - self.started, 1)
                record.struck_at = time.time()
                at = time.monotonic()
                record.detail = getattr(self, f"_{fault.kind}")(fault.device)
                record.healed_after_s = round(time.monotonic() - at, 1)
            except Exception as exc:  # reported in the ledger: a fault that did not strike
                record.error = f"{type(exc).__name__}: {exc}"
            print(f"soak: t+{record.struck_s:.0f}s {fault.kind} {fault.device or ''} "
                  f"{record.error or record.detail} healed after {record.healed_after_s} s",
                  file=sys.stderr, flush=True)

    def note_dead(self, devices: list[str], when: str) -> None:
        """Note each device whose worker died by itself (before the fleet is healed)."""
        for device in devices:
            if self.fleet.worker_pid(device) is None:
                self.found_dead.append({"device": device, "found": when})

    def _revive(self, device: str) -> None:
        """A device whose worker died by itself is noted, and relaunched (as its user would)."""
        if self.fleet.worker_pid(device) is not None:
            return
        found_s = round(time.monotonic() - self.started, 1)
        print(f"soak: t+{found_s:.0f}s {device}'s worker found dead; relaunching it",
              file=sys.stderr, flush=True)
        self.found_dead.append({"device": device, "found_s": found_s,
                                "unit_restarted": self._unit_restarted(device),
                                "relaunch_s": round(self.fleet.relaunch(device), 1)})

    def _unit_restarted(self, device: str) -> bool | None:
        """On a device that boots, whether its unit started a worker again (within
        :data:`UNIT_BACK_S`); None elsewhere (nothing there would)."""
        if device not in self.fleet.boxes:
            return None
        deadline = time.monotonic() + UNIT_BACK_S
        while time.monotonic() < deadline:
            if self.fleet.worker_pid(device) is not None and self.fleet.heartbeat_fresh(device):
                return True
            time.sleep(0.5)
        return False

    def _kill_worker(self, device: str) -> dict[str, Any]:
        pid = self.fleet.worker_pid(device)
        if pid is None:
            raise RuntimeError(f"{device} has no live worker to kill")
        signal_all([pid], signal.SIGKILL)
        time.sleep(WORKER_DOWN_S)
        back = self.fleet.worker_pid(device) not in (None, pid) if device in self.fleet.boxes \
            else None  # its unit started a new one meanwhile
        return {"pid": pid, "unit_restarted": back,
                "relaunch_s": round(self.fleet.relaunch(device), 1)}

    def _kill_redis(self, _device: None) -> dict[str, Any]:
        lan = self.fleet.lan
        assert lan.redis is not None
        pid = lan.redis.pid
        lan.redis.send_signal(signal.SIGKILL)
        lan.redis.wait(timeout=10)
        time.sleep(REDIS_DOWN_S)
        at = time.monotonic()
        lan.restart_redis()
        return {"pid": pid, "restart_s": round(time.monotonic() - at, 1)}

    def _link_down(self, device: str) -> dict[str, Any]:
        host = self.fleet.hosts[device]
        host.link(up=False)
        time.sleep(LINK_DOWN_S)
        host.link(up=True)
        at = time.monotonic()
        while not self.fleet.heartbeat_fresh(device):
            if time.monotonic() - at > REJOIN_WITHIN_S:
                raise RuntimeError(f"{device} did not rejoin within {REJOIN_WITHIN_S:.0f} s")
            time.sleep(0.5)
        return {"rejoined_s": round(time.monotonic() - at, 1)}

    def _stop_worker(self, device: str) -> dict[str, Any]:
        pids = self.fleet.worker_tree(device)
        if not pids:
            raise RuntimeError(f"{device} has no live worker to stop")
        signal_all(pids, signal.SIGSTOP)
        try:
            time.sleep(STOP_S)
        finally:
            signal_all(pids, signal.SIGCONT)
        return {"processes": len(pids)}

    def _reboot(self, device: str) -> dict[str, Any]:
        return self.fleet.reboot(device, REBOOT_DOWN_S)

    def reboot_forms(self) -> dict[str, int]:
        """The reboots struck, by how the worker came back: "unit" or "relaunch"."""
        found: dict[str, int] = {}
        for record in self.struck:
            if record.kind == REBOOT and record.error is None:
                form = record.detail.get("form", "?")
                found[form] = found.get(form, 0) + 1
        return found


__all__ = ["KILL_REDIS", "KILL_WORKER", "LINK_DOWN", "REBOOT", "STOP_WORKER", "Faults", "Struck"]
