"""The two sides of the comparison, started on the same devices of one bench fleet: CatDog
workers (``fab launch``) and plain Celery workers (``celery worker`` subprocesses). Each side
sends a no-op routed to any device of the fleet, or one to every device, and gathers results."""

from __future__ import annotations

import abc
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery
from celery.result import AsyncResult

from bench.testbed import ROOT, Bed
from catdog.context import open_fleet
from catdog.inventory import Device
from catdog.records import heartbeat_key

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


@dataclass
class Side(abc.ABC):
    name: str  # "catdog" or "plain"
    app: Celery
    devices: list[str]
    pids: list[int] = field(default_factory=list)  # the workers' main processes
    ready_delays: list[float] = field(default_factory=list)  # serve -> READY (CatDog's)

    @abc.abstractmethod
    def call(self, producer: Any = None) -> AsyncResult:
        """One no-op routed by capability (to any device of the side), published with
        ``producer`` when given."""

    @abc.abstractmethod
    def fanout(self) -> list[AsyncResult]:
        """One no-op to every device of the side."""

    def gather(self, results: Sequence[AsyncResult], timeout: float = 120.0) -> list[Any]:
        """Every result, the same way on both sides: ``.get()`` of each, as users write it."""
        return [r.get(timeout=timeout) for r in results]


class CatDogSide(Side):
    def call(self, producer: Any = None) -> AsyncResult:
        from bench.tasks import noop

        return noop.apply_async(producer=producer)  # requires=("bench",): catdog.cap.bench

    def fanout(self) -> list[AsyncResult]:
        from bench.tasks import noop

        return list(noop.on("all:bench").delay().results)


class PlainSide(Side):
    def call(self, producer: Any = None) -> AsyncResult:
        from bench.plain import SHARED_QUEUE, noop

        return noop.apply_async(queue=SHARED_QUEUE, producer=producer)

    def fanout(self) -> list[AsyncResult]:
        from bench.plain import device_queue, noop

        return [noop.apply_async(queue=device_queue(d)) for d in self.devices]


@contextlib.contextmanager
def catdog_side(bed: Bed, devices: Sequence[Device], loglevel: str | None = None
                ) -> Iterator[Side]:
    """The CatDog fleet: ``fab launch`` of ``devices``, ``fab stop --force`` after.

    ``loglevel``: the workers' (``fab launch --loglevel``), instead of the default INFO.
    """
    from catdog import app
    from ops.launch import Launcher
    from ops.results import READY
    from ops.stop import Stopper

    launcher = Launcher(open_fleet(bed.inventory, bed.broker_url), timeout=READY_TIMEOUT_S, loglevel=loglevel)
    try:
        launched = launcher.launch(devices)
        failed = [f"{r.device}: {r.reason}" for r in launched if r.state != READY]
        if failed:
            raise RuntimeError("CatDog workers did not start: " + "; ".join(failed))
        client = redis.Redis.from_url(bed.broker_url)
        beats = client.mget([heartbeat_key(d.name) for d in devices])
        pids = [int(json.loads(b)["pid"]) for b in beats if b]
        delays = [r.serve_to_ready_s for r in launched if r.serve_to_ready_s is not None]
        yield CatDogSide("catdog", app, [d.name for d in devices], pids, delays)
    finally:
        Stopper(open_fleet(bed.inventory, bed.broker_url), force=True).stop(devices)


@contextlib.contextmanager
def plain_side(bed: Bed, devices: Sequence[Device], loglevel: str | None = None, *,
               python: Mapping[str, str] | None = None) -> Iterator[Side]:
    """Plain Celery workers on the same devices' pool settings, logging at ``loglevel``
    (default: WARNING, ``celery worker``'s own), stopped cleanly after (warm shutdown, then
    SIGKILL of the process group). ``python``: each device's interpreter (default this one's;
    the field profile's start each worker in its cgroup)."""
    from bench.plain import BROKER_ENV, SHARED_QUEUE, app, device_queue

    os.environ[BROKER_ENV] = bed.broker_url
    host = socket.gethostname()
    nodes = [f"plain-{d.name}@{host}" for d in devices]
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryFile() as log:
        try:
            for device, node in zip(devices, nodes, strict=True):
                interpreter = (python or {}).get(device.name, sys.executable)
                argv = [interpreter, "-m", "celery", "-A", "bench.plain", "worker", "-n", node,
                        "-Q", f"{device_queue(device.name)},{SHARED_QUEUE}", "-P", device.pool,
                        "-c", str(device.concurrency), "-l", loglevel or "WARNING",
                        "--without-gossip", "--without-mingle"]
                procs.append(subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=log,
                                              stdin=subprocess.DEVNULL, start_new_session=True))
            _await_pings(app, nodes, procs, log)
            yield PlainSide("plain", app, [d.name for d in devices], [p.pid for p in procs])
        finally:
            for proc in procs:
                _stop(proc)


def _await_pings(app: Celery, nodes: list[str], procs: Sequence[subprocess.Popen[bytes]],
                 log: Any) -> None:
    waiting, deadline = set(nodes), time.monotonic() + READY_TIMEOUT_S
    while waiting and time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            break
        replies = app.control.ping(destination=sorted(waiting), timeout=0.5) or []
        waiting -= {node for reply in replies for node in reply}
    if waiting:
        log.seek(0)
        tail = log.read().decode(errors="replace")[-2000:]
        raise RuntimeError(f"plain Celery workers did not answer: {sorted(waiting)}\n{tail}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_TIMEOUT_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # pool children left behind, if any
    proc.wait()
