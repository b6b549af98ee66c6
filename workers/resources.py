"""The worker's side of per-device resources (:mod:`catdog.resources`).

Before a task whose class ``uses`` resources starts (after the gate let it: right device, its
window, its limit), the worker takes the units in one atomic script; a task that cannot have
them is deferred, unstarted and holding no worker slot, and tried again every
:data:`RETRY_S` (the gate's deferral: :mod:`catdog.deferral`). The units are renewed on every
heartbeat and given back as the task settles or its pool process is lost. A task that uses what
this device does not declare fails, its result saying what to declare.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from celery.worker import state

from catdog.errors import UsageError
from catdog.inventory import Device
from catdog.resources import ACQUIRE, LEASE_S, lacking, members, resource_key
from workers.extension import Extension, Replies, Worker
from workers.gate import Gate

log = logging.getLogger(__name__)

#: seconds a task waiting for a resource waits before it is tried again
RETRY_S = 0.5
SETTLED = ("task-succeeded", "task-failed", "task-retried", "task-revoked")


class Resources(Extension):
    """Holds ``device``'s resources for its running tasks, deferring through ``gate``."""

    def __init__(self, device: Device, gate: Gate) -> None:
        self.device = device
        self.gate = gate
        self.client: redis.Redis | None = None
        self._acquire: Any = None
        #: task id -> what it holds
        self.held: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()

    def on_start(self, worker: Worker) -> None:
        self.client = worker.redis
        self._acquire = worker.redis.register_script(ACQUIRE)

    def before_start(self, request: Any) -> bool:
        uses = getattr(request.task, "uses", None)
        if not uses or self.client is None or request.id in self.held:
            return False
        missing = lacking(self.device, uses)
        if missing:
            self.gate.fail(request, UsageError(
                f"task {request.name!r} uses {', '.join(missing)} on device "
                f"{self.device.name!r}; declare it under devices.{self.device.name}.resources"))
            return True
        if not self._take(request.id, uses):
            self.gate.defer(request, time.time() + RETRY_S,
                            f"waiting for {', '.join(f'{k}: {v}' for k, v in uses.items())}")
            return True
        return False

    def _take(self, holder: str, uses: dict[str, int]) -> bool:
        names = sorted(uses)
        now = time.time()
        args: list[Any] = [now, now + LEASE_S, holder]
        for name in names:
            args += [uses[name], self.device.resources[name]]
        try:
            taken = bool(self._acquire(keys=[resource_key(self.device.name, n) for n in names],
                                       args=args))
        except redis.RedisError as exc:  # the broker is away: try again later
            log.warning("resources not taken for %s: %s", holder, exc)
            return False
        if taken:
            with self._lock:
                self.held[holder] = dict(uses)
        return taken

    def _give_back(self, request: Any) -> None:
        with self._lock:
            uses = self.held.pop(request.id, None)
        if uses is None or self.client is None:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for name, units in uses.items():
                pipe.zrem(resource_key(self.device.name, name), *members(request.id, units))
            pipe.execute()
        except redis.RedisError as exc:  # the lease runs out instead
            log.warning("resources of %s not given back (freed in %.0fs): %s", request.id,
                        LEASE_S, exc)

    def on_settled(self, request: Any, event: str, runtime: float | None) -> None:
        if event in SETTLED:
            self._give_back(request)

    def on_lost(self, request: Any, error: BaseException) -> bool:
        self._give_back(request)
        return False

    def on_beat(self, pipe: Any) -> Replies | None:
        """Renew every unit held (``ZADD XX``: a unit given back meanwhile stays given back);
        give back those of a task the worker no longer holds (another extension held it back
        after the units were taken)."""
        with self._lock:
            gone = [h for h in self.held if h not in _requests()]
            for holder in gone:
                for name, units in self.held.pop(holder).items():
                    pipe.zrem(resource_key(self.device.name, name), *members(holder, units))
            held = dict(self.held)
        until = time.time() + LEASE_S
        for holder, uses in held.items():
            for name, units in uses.items():
                pipe.zadd(resource_key(self.device.name, name),
                          dict.fromkeys(members(holder, units), until), xx=True)
        return None


def _requests() -> set[str]:
    """The ids of the requests this worker holds (Celery's state, changed by the main thread)."""
    for _ in range(3):
        try:
            return set(state.requests)
        except RuntimeError:  # changed size while copied
            continue
    return set(state.requests.copy())
