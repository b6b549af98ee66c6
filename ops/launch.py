"""``fab launch``: start each device's worker in tmux and call it READY only once it answers.

Per device, in parallel: an existing live session is checked (ALREADY RUNNING when its worker
answers a ping); otherwise the worker starts in tmux session ``catdog-<device>``. The launcher then
waits on the worker's ready record in Redis (a blocking pop, no fixed sleeps), pings the node by
name, and reports READY. A worker that dies on start is reported FAILED with its exit status and
its last output lines, which tmux keeps because the pane remains after exit.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis

from catdog.inventory import Device, Inventory
from catdog.records import exit_status_from, heartbeat_key, ready_key
from ops.pinging import ping
from ops.results import ALREADY_RUNNING, FAILED, READY, DeviceResult
from ops.tmux import Tmux

SESSION_PREFIX = "catdog-"
DEFAULT_TIMEOUT_S = 30.0
#: a ping addressed to one node returns as soon as it replies; a short timeout only bounds the
#: wait when the worker's control channel is not listening yet (then the next try catches it)
PING_TIMEOUT_S = 0.5
OUTPUT_LINES = 30

#: ``on_event(device, event, detail)``; events: starting, ready, already-running, failed
EventCallback = Callable[[str, str, str], None]


def session_name(device: str) -> str:
    return f"{SESSION_PREFIX}{device}"


class Launcher:
    def __init__(self, inventory: Inventory, broker_url: str, *,
                 timeout: float = DEFAULT_TIMEOUT_S, on_event: EventCallback | None = None) -> None:
        self.inventory = inventory
        self.broker_url = broker_url
        self.timeout = timeout
        self.on_event = on_event or (lambda device, event, detail: None)
        self.redis = redis.Redis.from_url(broker_url, socket_timeout=10)
        self.tmux = Tmux(inventory.tmux_socket)

    def launch(self, devices: Sequence[Device]) -> list[DeviceResult]:
        """Launch ``devices`` in parallel; one result per device, in the order given."""
        if not devices:
            return []
        with ThreadPoolExecutor(max_workers=min(32, len(devices))) as pool:
            return list(pool.map(self.launch_one, devices))

    def launch_one(self, device: Device) -> DeviceResult:
        started = time.monotonic()
        try:
            result = self._launch(device, started)
        except Exception as exc:  # one device's failure never stops the others
            result = DeviceResult(device.name, FAILED, f"{type(exc).__name__}: {exc}")
        result.elapsed_s = round(time.monotonic() - started, 3)
        self.on_event(device.name, result.state.lower().replace(" ", "-"), result.reason)
        return result

    def _launch(self, device: Device, started: float) -> DeviceResult:
        if not device.is_local:
            return DeviceResult(device.name, FAILED,
                                "SSH devices are not supported by this version yet; use host: local")
        name = session_name(device.name)
        pane = self.tmux.pane(name)
        if pane is not None and not pane.dead:
            return self._await(device, started, ALREADY_RUNNING, owned=False)
        python = device.python or sys.executable
        if not os.access(python, os.X_OK):
            return DeviceResult(device.name, FAILED,
                                f"python {python} not found or not executable; fix "
                                f"devices.{device.name}.python in {self.inventory.path.name}")
        if pane is not None:  # a worker that died earlier: start afresh
            self.tmux.kill_session(name)
        self.redis.delete(ready_key(device.name), heartbeat_key(device.name))
        self.on_event(device.name, "starting", "")
        cwd = device.workdir or str(self.inventory.root)
        if not self.tmux.new_session(name, self.worker_command(device), cwd):
            return self._await(device, started, ALREADY_RUNNING, owned=False)
        return self._await(device, started, READY, owned=True)

    def worker_command(self, device: Device) -> list[str]:
        env_file = self._write_env_file(device)
        return [device.python or sys.executable, "-m", "workers", "--device", device.name,
                "--inventory", str(self.inventory.path), "--env-file", str(env_file)]

    def _write_env_file(self, device: Device) -> Path:
        """The broker URL reaches the worker in a mode-600 file, never on a command line."""
        run_dir = self.inventory.state_dir / "run"
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = run_dir / f"{device.name}.env"
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(f"CATDOG_BROKER_URL={self.broker_url}\nPYTHONUNBUFFERED=1\n")
        return path

    def _await(self, device: Device, started: float, success: str, owned: bool) -> DeviceResult:
        name = session_name(device.name)
        deadline = started + self.timeout
        while time.monotonic() < deadline:
            pane = self.tmux.pane(name)
            if pane is None or pane.dead:
                return self._died(device, pane is None)
            nodename = self._announced_node(device.name)
            if nodename and ping(nodename, timeout=PING_TIMEOUT_S):
                return DeviceResult(device.name, success, f"{nodename} answered ping",
                                    nodename=nodename)
        output = self.tmux.last_lines(name, OUTPUT_LINES)
        if owned:
            self.tmux.kill_session(name)
            why = f"no answer to ping within {self.timeout:g}s; session stopped"
        else:
            why = (f"session {name} exists but its worker does not answer within "
                   f"{self.timeout:g}s; try `fab restart --devices {device.name}`")
        return DeviceResult(device.name, FAILED, why, output=output)

    def _announced_node(self, device: str) -> str | None:
        """The node name from the worker's heartbeat, or its ready record (blocking briefly)."""
        raw = self.redis.get(heartbeat_key(device))
        if not raw:
            item = self.redis.blpop([ready_key(device)], timeout=0.2)
            raw = item[1] if item else None
        if not raw:
            return None
        nodename = json.loads(raw).get("nodename")
        return str(nodename) if nodename else None

    def _died(self, device: Device, vanished: bool) -> DeviceResult:
        name = session_name(device.name)
        if vanished:
            return DeviceResult(device.name, FAILED, f"tmux session {name} vanished during start")
        status = self.tmux.dead_status(name, wait_s=1.0)
        output = self.tmux.last_lines(name, OUTPUT_LINES + 1)
        if status is None:
            status = exit_status_from(output)
        output = [ln for ln in output if exit_status_from([ln]) is None][-OUTPUT_LINES:]
        shown = "unknown" if status is None else str(status)
        last = next((ln for ln in reversed(output) if ln.strip()), "")
        reason = f"worker exited with status {shown} during start" + (f": {last}" if last else "")
        return DeviceResult(device.name, FAILED, reason, exit_status=status, output=output)
