"""``fab stop``: warm shutdown of workers (running tasks finish), bounded; ``force`` kills.

A session another inventory started is refused (FAILED, naming it), never signalled.
A warm stop sends SIGTERM to the worker (Celery's warm shutdown: no new task starts, running
ones finish), waits up to ``timeout`` for it to exit, then kills its process group. The tmux
session is removed either way. SSH devices get the same signals over SSH.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

import redis

from catdog.context import FleetContext
from catdog.inventory import Device
from catdog.records import heartbeat_key
from ops.fanout import EventCallback, on_each, quiet
from ops.results import FAILED, NOT_RUNNING, STOPPED, DeviceResult
from ops.session import WorkerSession

DEFAULT_TIMEOUT_S = 30.0
#: how long a stop waits for a killed worker to be gone
KILL_WAIT_S = 5.0


class Stopper:
    """Stops devices of the fleet ``context``; without a broker (the embedded Redis is not
    running) it stops the sessions and forgets nothing in Redis."""

    def __init__(self, context: FleetContext, *, timeout: float = DEFAULT_TIMEOUT_S,
                 force: bool = False, on_event: EventCallback | None = None) -> None:
        self.inventory = context.inventory
        self.timeout = timeout
        self.force = force
        self.on_event = on_event or quiet
        self.redis = context.redis() if context.broker_url else None

    def stop(self, devices: Sequence[Device]) -> list[DeviceResult]:
        """Stop ``devices`` in parallel; one result per device, in the order given."""
        return on_each(self.inventory, devices, self._stop, self.on_event)

    def _stop(self, session: WorkerSession, started: float) -> DeviceResult:
        device = session.device
        pane = session.pane()
        if pane is None:
            return DeviceResult(device.name, NOT_RUNNING, f"no session {session.name}")
        if clash := session.clash(pane):
            return DeviceResult(device.name, FAILED, clash)
        reason = "worker had already exited"
        if not pane.dead:
            self.on_event(device.name, "stopping", "")
            reason = self._end(session, pane.pid)
        session.kill()
        self._forget(device.name)
        return DeviceResult(device.name, STOPPED, reason)

    def _end(self, session: WorkerSession, pid: int) -> str:
        if self.force:
            self._kill(session, pid)
            return "killed (--force)"
        session.signal(pid, "TERM")
        if self._exited(session, self.timeout):
            return "warm shutdown (running tasks finished)"
        self._kill(session, pid)
        return f"killed after {self.timeout:g}s warm-shutdown timeout"

    def _kill(self, session: WorkerSession, pid: int) -> None:
        """SIGKILL the worker's process group and wait (briefly) until it is gone: a worker
        still dying when the command returns could yet take a message sent next (Redis pops it
        for the worker's pending BRPOP), and that message would die with it."""
        session.signal(pid, "KILL", group=True)
        self._exited(session, KILL_WAIT_S)

    @staticmethod
    def _exited(session: WorkerSession, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            pane = session.pane()
            if pane is None or pane.dead:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def _forget(self, device: str) -> None:
        if self.redis is not None:
            with contextlib.suppress(redis.RedisError):
                self.redis.delete(heartbeat_key(device))
