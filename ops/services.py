"""The coordinator's own services in tmux: ``catdog-beat`` (the scheduler).

Started like a worker (``exec`` in a tmux session that stays after exit, output appended to
``.catdog/logs/<service>.log``, the broker URL in a mode-600 env file) and called started only once
the service reports itself in Redis.
"""

from __future__ import annotations

import json
import socket
import sys
import time

import redis

from catdog.inventory import Inventory
from catdog.records import exit_status_from
from ops.beat import node_key
from ops.files import write_private
from ops.logfile import rotating_append
from ops.results import ALREADY_RUNNING, FAILED, STOPPED, DeviceResult
from ops.session import run_env
from ops.tmux import Tmux

BEAT = "beat"
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0


def session_name(service: str) -> str:
    return f"catdog-{service}"


def start_beat(inventory: Inventory, broker_url: str) -> DeviceResult:
    """Start the scheduler in tmux; ACTIVE or STANDBY once it has reported, with its role."""
    started = time.monotonic()
    tmux = Tmux(inventory.tmux_socket)
    name = session_name(BEAT)
    pane = tmux.pane(name)
    if pane is not None and not pane.dead:
        return DeviceResult(BEAT, ALREADY_RUNNING, f"tmux session {name} (pid {pane.pid})")
    if pane is not None:
        tmux.kill_session(name)
    run_dir = inventory.state_dir / "run"
    env_file = run_dir / "beat.env"
    write_private(env_file, run_env(inventory, broker_url))
    log = inventory.state_dir / "logs" / "beat.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    tmux.new_session(name, [sys.executable, "-m", "ops.beat", "--inventory", str(inventory.path),
                            "--env-file", str(env_file)], str(inventory.root),
                     pipe=rotating_append(str(log)))
    client = redis.Redis.from_url(broker_url, socket_timeout=5)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        pane = tmux.pane(name)
        if pane is None or pane.dead:
            lines = tmux.last_lines(name, 20)
            status = exit_status_from(lines)
            return DeviceResult(BEAT, FAILED, f"scheduler exited (status {status}) on start",
                                output=lines)
        raw = client.get(node_key(f"{socket.gethostname()}:{pane.pid}"))
        if raw:
            role = json.loads(raw)["role"]
            result = DeviceResult(BEAT, role.upper(), f"tmux session {name}; log {log}")
            result.elapsed_s = round(time.monotonic() - started, 3)
            return result
        time.sleep(0.1)
    return DeviceResult(BEAT, FAILED, f"the scheduler did not report within {START_TIMEOUT_S:g}s",
                        output=tmux.last_lines(name, 20))


def stop_service(inventory: Inventory, service: str) -> DeviceResult | None:
    """Stop a service's tmux session (SIGTERM, then kill); None when it was not there."""
    tmux = Tmux(inventory.tmux_socket)
    name = session_name(service)
    pane = tmux.pane(name)
    if pane is None:
        return None
    if not pane.dead:
        tmux.runner(["kill", "-TERM", str(pane.pid)])
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            pane = tmux.pane(name)
            if pane is None or pane.dead:
                break
            time.sleep(0.1)
    tmux.kill_session(name)
    return DeviceResult(service, STOPPED, f"tmux session {name} removed")
