"""The coordinator's own services in tmux: ``catdog-beat`` (the scheduler) and
``catdog-flower`` (the dashboard).

Started like a worker (``exec`` in a tmux session that stays after exit, output appended to
``.catdog/logs/<service>.log``, the broker URL in a mode-600 env file) and called started only once
the service reports itself in Redis. A session another inventory started is left alone
(:mod:`ops.ownership`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import time
import urllib.request

from catdog.context import FleetContext
from catdog.errors import UsageError
from catdog.inventory import Inventory
from catdog.records import exit_status_from
from ops import ownership
from ops.beat import node_key
from ops.files import write_private
from ops.logfile import rotating_append
from ops.results import ALREADY_RUNNING, FAILED, RUNNING, STOPPED, DeviceResult
from ops.session import run_env, session_name
from ops.tmux import Tmux

BEAT = "beat"
FLOWER = "flower"
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0


def _launch(inventory: Inventory, service: str, argv: list[str], env: str
            ) -> tuple[Tmux, DeviceResult | None]:
    """Start ``argv`` in the service's tmux session with ``env`` in its mode-600 env file;
    a result already when the service was running."""
    tmux = Tmux(inventory.tmux_socket)
    name = session_name(service)
    pane = tmux.pane(name)
    if pane is not None and (clash := ownership.clash(inventory, tmux, name, pane)):
        return tmux, DeviceResult(service, FAILED, f"{service}: {clash}")
    if pane is not None and not pane.dead:
        return tmux, DeviceResult(service, ALREADY_RUNNING, f"tmux session {name} (pid {pane.pid})")
    if pane is not None:
        tmux.kill_session(name)
    env_file = inventory.state_dir / "run" / f"{service}.env"
    write_private(env_file, env)
    log = inventory.state_dir / "logs" / f"{service}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    tmux.new_session(name, [sys.executable, "-m", f"ops.{service}", "--inventory",
                            str(inventory.path), "--env-file", str(env_file), *argv],
                     str(inventory.root), pipe=rotating_append(str(log)),
                     owner=ownership.record(inventory))
    return tmux, None


def _died(tmux: Tmux, service: str) -> DeviceResult:
    lines = tmux.last_lines(session_name(service), 20)
    status = exit_status_from(lines)
    why = f"{service} exited" + (f" with status {status}" if status is not None else "")
    last = next((ln for ln in reversed(lines) if ln.strip()), "")
    return DeviceResult(service, FAILED, f"{why} on start" + (f": {last}" if last else ""),
                        output=lines)


def start_beat(context: FleetContext) -> DeviceResult:
    """Start the scheduler in tmux; ACTIVE or STANDBY once it has reported, with its role.
    A broker that does not answer raises BrokerUnreachable before anything starts."""
    started = time.monotonic()
    inventory = context.inventory
    client = context.answering()
    tmux, already = _launch(inventory, BEAT, [], run_env(inventory, context.url))
    if already:
        return already
    name, log = session_name(BEAT), inventory.state_dir / "logs" / "beat.log"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        pane = tmux.pane(name)
        if pane is None or pane.dead:
            return _died(tmux, BEAT)
        raw = client.get(node_key(f"{socket.gethostname()}:{pane.pid}"))
        if raw:
            role = json.loads(raw)["role"]
            result = DeviceResult(BEAT, role.upper(), f"tmux session {name}; log {log}")
            result.elapsed_s = round(time.monotonic() - started, 3)
            return result
        time.sleep(0.1)
    return DeviceResult(BEAT, FAILED, f"the scheduler did not report within {START_TIMEOUT_S:g}s",
                        output=tmux.last_lines(name, 20))


def start_flower(context: FleetContext, port: int, address: str,
                 environ: dict[str, str] | None = None) -> DeviceResult:
    """Start Flower in tmux; RUNNING once its HTTP server answers, with the URL.

    Beyond loopback it needs ``$CATDOG_FLOWER_AUTH`` (``user:password``), refused otherwise; a
    broker that does not answer raises BrokerUnreachable before Flower starts (Flower would
    serve an empty dashboard, retrying the broker in the background)."""
    from ops.flower import AUTH_ENV, is_loopback

    environ = dict(os.environ) if environ is None else environ
    auth = environ.get(AUTH_ENV, "")
    if not auth and not is_loopback(address):
        raise UsageError(f"Flower on {address} would be open to anyone who reaches it: export "
                         f"{AUTH_ENV}=user:password (basic auth; keep it out of the inventory), "
                         f"or use the default --address 127.0.0.1")
    started = time.monotonic()
    inventory = context.inventory
    context.answering().close()
    env = run_env(inventory, context.url) + (f"FLOWER_BASIC_AUTH={auth}\n" if auth else "")
    tmux, already = _launch(inventory, FLOWER, [f"--port={port}", f"--address={address}"], env)
    host = "127.0.0.1" if address in ("0.0.0.0", "::") else address
    url = f"http://{host}:{port}/"
    if already:
        if already.ok:
            already.reason += f"; {url}"
        return already
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        pane = tmux.pane(session_name(FLOWER))
        if pane is None or pane.dead:
            return _died(tmux, FLOWER)
        try:
            with urllib.request.urlopen(f"{url}healthcheck", timeout=1) as answer:
                if answer.status == 200:
                    result = DeviceResult(FLOWER, RUNNING, url)
                    result.elapsed_s = round(time.monotonic() - started, 3)
                    return result
        except OSError:
            time.sleep(0.1)
    return DeviceResult(FLOWER, FAILED, f"Flower did not answer at {url} within "
                                        f"{START_TIMEOUT_S:g}s",
                        output=tmux.last_lines(session_name(FLOWER), 20))


def stop_service(inventory: Inventory, service: str) -> DeviceResult | None:
    """Stop a service's tmux session (SIGTERM, then kill); None when it was not there, FAILED
    (untouched) when another inventory started it."""
    tmux = Tmux(inventory.tmux_socket)
    name = session_name(service)
    pane = tmux.pane(name)
    if pane is None:
        return None
    if clash := ownership.clash(inventory, tmux, name, pane):
        return DeviceResult(service, FAILED, f"{service}: {clash}")
    if not pane.dead:
        with contextlib.suppress(ProcessLookupError):  # services run on the coordinator itself
            os.kill(pane.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            pane = tmux.pane(name)
            if pane is None or pane.dead:
                break
            time.sleep(0.1)
    tmux.kill_session(name)
    return DeviceResult(service, STOPPED, f"tmux session {name} removed")
