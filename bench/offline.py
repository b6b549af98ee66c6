"""How long after a worker's power cut each monitor counts it offline, side by side.

``python -m bench.offline [--runs 5] [--output FILE]``. One device, launched for real; its whole
worker (every process of its session) is SIGKILLed, as a power cut would, and three monitors are
polled every 50 ms until each says offline. The cuts fall at evenly spread moments of the 2 s
heartbeat period (1 s, then 1 + 2/runs s, ... after all three saw the worker online):

- ``fab status`` (``ops.status``): CatDog's heartbeat record, offline when older than 8 s; for a
  ``host: local`` device also at once when its tmux pane has died;
- Celery's event state (``celery.events.state.State``, what ``celery events`` shows), fed by a
  receiver in this process: a worker is alive until its last ``worker-heartbeat`` (sent every
  ``freq`` = 2 s) plus ``freq * HEARTBEAT_EXPIRE_WINDOW / 100`` = 4 s;
- Flower, started as ``fab flower`` starts it, through its API (``/api/workers?status=1``, the
  ``alive`` of its own event state).

Twice: a ``host: local`` device, and an SSH device (``bench.testbed.ssh_fleet``: its own network
namespace, else loopback), where the coordinator sees no pane, only heartbeats: as a Pi.
Each bed runs in its own process (a Celery app's broker is fixed once per process).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

from bench.stats import summary
from bench.testbed import Bed, local_fleet, ssh_fleet
from bench.tmuxserver import session_pids
from catdog.context import open_fleet
from ops.launch import Launcher
from ops.results import READY, RUNNING
from ops.services import start_flower
from ops.status import OFFLINE, status
from ops.stop import Stopper

MONITORS = ("fab status", "celery events", "flower")
POLL_S = 0.05
#: both heartbeats (CatDog's record, Celery's event) come every 2 s, and a launched worker sends
#: both at once: the cuts are spread evenly over that period, not all just after a heartbeat
PHASES_S = 2.0
#: how long to wait for every monitor to see the worker (online) or lose it (offline)
WAIT_S = 60.0


def run(kind: str, runs: int) -> dict[str, Any]:
    """``runs`` power cuts of one device of the ``kind`` bed ("local" or "ssh")."""
    bed_of: Callable[[], contextlib.AbstractContextManager[Bed]] = (
        (lambda: local_fleet(1)) if kind == "local" else (lambda: ssh_fleet(1)))
    found: dict[str, list[float]] = {m: [] for m in MONITORS}
    with bed_of() as bed:
        from catdog.application import app

        devices = bed.inventory.select(None)
        client = redis.Redis.from_url(bed.broker_url)
        flower = start_flower(open_fleet(bed.inventory, bed.broker_url), _free_port(), "127.0.0.1")
        if flower.state != RUNNING:
            raise RuntimeError(f"Flower did not start: {flower.reason}")
        try:
            with _event_state(app) as state:
                for i in range(runs):
                    launched = Launcher(open_fleet(bed.inventory, bed.broker_url), timeout=60).launch(devices)
                    if launched[0].state != READY:
                        raise RuntimeError(f"launch: {launched[0].reason}")
                    app.control.enable_events()  # as `celery events` and Flower ask
                    look = _monitors(bed, client, state, flower.reason)
                    _wait_until(look, lambda seen: not any(seen.values()), "online")
                    time.sleep(1.0 + PHASES_S * i / runs)  # each run cuts at another phase
                    cut = _power_cut(_worker_pid(state))
                    offline_at = _wait_until(look, lambda seen: all(seen.values()), "offline")
                    for monitor, when in offline_at.items():
                        found[monitor].append(round(when - cut, 2))
        finally:
            Stopper(open_fleet(bed.inventory, bed.broker_url), force=True).stop(devices)
    return {"bed": bed.kind, "runs": runs, "offline_after_kill_s": {
        m: {**(summary(v) or {}), "each": v} for m, v in found.items()}}


Look = Callable[[], dict[str, bool]]


def _monitors(bed: Bed, client: redis.Redis, state: Any, flower_url: str) -> Look:
    """Each monitor's verdict now: True when it counts the device offline."""
    devices = bed.inventory.select(None)

    def look() -> dict[str, bool]:
        workers = dict(state.workers)
        with urllib.request.urlopen(f"{flower_url}api/workers?status=1", timeout=5) as answer:
            in_flower = json.load(answer)
        return {"fab status": status(bed.inventory, devices, client)[0]["state"] == OFFLINE,
                "celery events": not any(w.alive for w in workers.values()),
                "flower": not any(in_flower.values())}
    return look


def _wait_until(look: Look, done: Callable[[dict[str, bool]], bool], what: str
                ) -> dict[str, float]:
    """Poll until ``done``; when each monitor first said offline (wall clock)."""
    first: dict[str, float] = {}
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        seen = look()
        now = time.time()
        for monitor, offline in seen.items():
            if offline:
                first.setdefault(monitor, now)
            else:
                first.pop(monitor, None)
        if done(seen):
            return first
        time.sleep(POLL_S)
    raise RuntimeError(f"not every monitor saw the worker {what} within {WAIT_S:g}s: {look()}")


@contextlib.contextmanager
def _event_state(app: Any) -> Iterator[Any]:
    """Celery's event state, fed from the broker by a receiver thread (as ``celery events``)."""
    state = app.events.State()
    stop = threading.Event()

    def receive() -> None:
        with app.connection_for_read() as connection:
            receiver = app.events.Receiver(connection, handlers={"*": state.event})
            while not stop.is_set():
                with contextlib.suppress(socket.timeout, TimeoutError):
                    receiver.capture(limit=None, timeout=0.5, wakeup=False)

    thread = threading.Thread(target=receive, name="bench-events", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        thread.join(5)


def _worker_pid(state: Any) -> int:
    """The worker's main process, as its own events report it (the newest alive one)."""
    alive = [w for w in dict(state.workers).values() if w.alive and w.pid]
    if not alive:
        raise RuntimeError("no alive worker in Celery's event state")
    return int(max(alive, key=lambda w: w.heartbeats[-1]).pid)


def _power_cut(pid: int) -> float:
    """SIGKILL every process of the worker's session at once; when (wall clock)."""
    pids = session_pids(pid)
    cut = time.time()
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    return cut


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def table(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for kind, found in results.items():
        lines.append(f"offline after a SIGKILL of the whole worker ({kind} device, "
                     f"{found['bed']} bed, {found['runs']} runs), seconds:")
        for monitor, got in found["offline_after_kill_s"].items():
            lines.append(f"  {monitor:<14} median {got['median']:5.2f}  (min {got['min']:.2f}, "
                         f"max {got['max']:.2f})")
    return lines


def main(argv: list[str] | None = None) -> int:
    from bench.offline import run as measure  # by its module's name, for the spawned child
    from bench.run import isolated

    parser = argparse.ArgumentParser(prog="python -m bench.offline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="power cuts per device (default 5)")
    parser.add_argument("--kinds", default="local,ssh", help="devices to measure: local,ssh")
    parser.add_argument("--output", type=Path, help="also write the results here (JSON)")
    args = parser.parse_args(argv)
    results = {kind: isolated(measure, kind, args.runs) for kind in args.kinds.split(",")}
    print("\n".join(table(results)))
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
