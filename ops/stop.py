"""``fab stop``: warm shutdown of workers (running tasks finish), bounded; ``force`` kills.

A warm stop sends SIGTERM to the worker (Celery's warm shutdown: no new task starts, running
ones finish), waits up to ``timeout`` for it to exit, then kills its process group. The tmux
session is removed either way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import redis

from catdog.inventory import Device, Inventory
from catdog.records import heartbeat_key
from ops.launch import EventCallback, session_name
from ops.results import FAILED, NOT_RUNNING, STOPPED, DeviceResult
from ops.tmux import Tmux

DEFAULT_TIMEOUT_S = 30.0


class Stopper:
    def __init__(self, inventory: Inventory, *, broker_url: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, force: bool = False,
                 on_event: EventCallback | None = None) -> None:
        self.inventory = inventory
        self.timeout = timeout
        self.force = force
        self.on_event = on_event or (lambda device, event, detail: None)
        self.redis = redis.Redis.from_url(broker_url, socket_timeout=2) if broker_url else None
        self.tmux = Tmux(inventory.tmux_socket)

    def stop(self, devices: Sequence[Device]) -> list[DeviceResult]:
        if not devices:
            return []
        with ThreadPoolExecutor(max_workers=min(32, len(devices))) as pool:
            return list(pool.map(self.stop_one, devices))

    def stop_one(self, device: Device) -> DeviceResult:
        started = time.monotonic()
        try:
            result = self._stop(device)
        except Exception as exc:  # one device's failure never stops the others
            result = DeviceResult(device.name, FAILED, f"{type(exc).__name__}: {exc}")
        result.elapsed_s = round(time.monotonic() - started, 3)
        self.on_event(device.name, result.state.lower().replace(" ", "-"), result.reason)
        return result

    def _stop(self, device: Device) -> DeviceResult:
        if not device.is_local:
            return DeviceResult(device.name, FAILED, "SSH devices are not supported yet")
        name = session_name(device.name)
        pane = self.tmux.pane(name)
        if pane is None:
            return DeviceResult(device.name, NOT_RUNNING, f"no session {name}")
        reason = "worker had already exited"
        if not pane.dead:
            self.on_event(device.name, "stopping", "")
            reason = self._end(name, pane.pid)
        self.tmux.kill_session(name)
        self._forget(device.name)
        return DeviceResult(device.name, STOPPED, reason)

    def _end(self, name: str, pid: int) -> str:
        if self.force:
            _kill_group(pid)
            return "killed (--force)"
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            pane = self.tmux.pane(name)
            if pane is None or pane.dead:
                return "warm shutdown (running tasks finished)"
            time.sleep(0.1)
        _kill_group(pid)
        return f"killed after {self.timeout:g}s warm-shutdown timeout"

    def _forget(self, device: str) -> None:
        if self.redis is not None:
            with contextlib.suppress(redis.RedisError):
                self.redis.delete(heartbeat_key(device))


def _kill_group(pid: int) -> None:
    """Kill the worker and its pool processes (the pane's process leads its own group)."""
    if pid <= 1:
        return
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid and pid != os.getpgid(0):
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
