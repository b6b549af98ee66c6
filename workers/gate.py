"""The last look before a task starts: the right device, kill switch, run window, rate limit.

Called in the worker's main process for each request just before it goes to the pool (Celery asks
``Request.revoked()`` there; :class:`workers.telemetry.ExtendedRequest` asks the worker's
extensions too, of which the gate is one: :mod:`workers.extension`). A task
that may not start is never dropped and never holds a worker slot:

- a task this device may not run (it lacks a capability the task ``requires``, or the task is
  pinned to another target): the message is handed on to the queue routing names for it
  (:func:`catdog.routing.forward_queue`) and acknowledged here: sent by name, or published by
  hand, to the wrong queue, it still runs only where it may;
- kill switch on: the message goes back to its queue, unstarted;
- outside its window, or over its limit: the message is deferred (:mod:`catdog.deferral`) until
  the window opens or the limit allows a start, and acknowledged here.

The kill switch and the window cost no Redis round trip; a limit costs one (the fleet-wide count).
A thread moves due deferred messages back to their queues.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any

import redis
from celery.worker import state
from kombu import Exchange, Queue

from catdog import carry
from catdog.deferral import Deferrals
from catdog.errors import CatDogError, NoRoute
from catdog.inventory import Device, Inventory, Limit
from catdog.limits import Limiter
from catdog.records import CLOSE_HEADER, HOPS_HEADER, LIMIT_HEADER, WINDOW_HEADER
from catdog.redis_scripts import ring
from catdog.routing import forward_queue, serves
from catdog.windows import next_start, now_in, parsed
from workers.extension import Extension, Worker
from workers.killswitch import KillSwitch
from workers.stored import stored

log = logging.getLogger(__name__)

#: with window_close="stop": seconds between the soft time limit at the close and the kill
STOP_GRACE_S = 10.0
MOVE_EVERY_S = 1.0
#: with nothing due sooner: how often the mover looks anyway (a message deferred by a worker
#: that then stopped; a worker that defers something wakes its own mover at once)
LOOK_EVERY_S = 10.0
#: a message handed on more often than this fails (devices whose inventories disagree)
MAX_HOPS = 5


class Gate(Extension):
    """The gate of a worker serving ``device`` of ``inventory``, held shut by ``switch``."""

    def __init__(self, inventory: Inventory, switch: KillSwitch,
                 device: Device | None = None) -> None:
        self.inventory = inventory
        self.switch = switch
        self.device = device
        self.limits: dict[str, Limit] = dict(inventory.limits)
        self.timezone: str | None = inventory.timezone
        self.limiter: Limiter | None = None
        self.deferrals: Deferrals | None = None
        self.client: redis.Redis | None = None
        self._wake = threading.Event()

    def on_start(self, worker: Worker) -> None:
        self.install(worker.redis)

    def install(self, client: redis.Redis) -> None:
        """Use ``client`` for limits and deferrals; start moving due deferred messages."""
        self.client = client
        self.limiter = Limiter(client)
        self.deferrals = Deferrals(client)
        threading.Thread(target=self._mover, name="catdog-deferrals", daemon=True).start()

    def before_start(self, request: Any) -> bool:
        return self.hold(request)

    def hold(self, request: Any) -> bool:
        """True when ``request`` must not start now (it has been put back or deferred)."""
        if self.switch.engaged:
            self._unstart(request)
            request.reject(requeue=True)
            state.task_ready(request)
            return True
        if getattr(request, "_catdog_cleared", False):
            return False  # (a request may be asked twice: its start is counted once)
        if self.device is not None and self._misplaced(request):
            return True
        if self.deferrals is None:
            return False
        headers = request.request_dict
        window = headers.get(WINDOW_HEADER) or getattr(request.task, "window", None)
        if window:
            opens = next_start(window, self.timezone)
            if opens is not None:
                self.defer(request, opens, f"outside its window {window}")
                return True
            close = headers.get(CLOSE_HEADER) or getattr(request.task, "window_close", "finish")
            if close == "stop":  # Celery's time limits, from the window's close
                left = max(1.0, parsed(window).closes_after(now_in(self.timezone))
                           .timestamp() - time.time())
                request.time_limits = (left + STOP_GRACE_S, left)
        name = headers.get(LIMIT_HEADER) or getattr(request.task, "limit", None)
        limit = self.limits.get(name) if name else None
        if name and limit is None:
            log.error("task %s uses limit %r, which the inventory does not define: run unlimited",
                      request.name, name)
        if limit is not None and self.limiter is not None:
            allowed, when = self.limiter.acquire(limit, f"{request.id}:{uuid.uuid4().hex[:8]}")
            if not allowed:
                self.defer(request, when, f"over its limit {limit.name} ({limit.text})")
                return True
        request._catdog_cleared = True
        return False

    def _misplaced(self, request: Any) -> bool:
        """True when this device may not run ``request``: it has been handed on (or, when no
        device can take it, failed)."""
        assert self.device is not None and self.inventory is not None
        task = request.task
        requires = tuple(getattr(task, "requires", ()) or ())
        target = None
        if getattr(task, "target_arg", False):
            args, kwargs = request.args or (), request.kwargs or {}
            target = args[0] if args else kwargs.get("target")
        if serves(self.device, requires, target):
            return False
        hops = int(request.request_dict.get(HOPS_HEADER) or 0)
        try:
            if hops >= MAX_HOPS:
                raise NoRoute(f"task {request.name!r} was handed on {hops} times and reached no "
                              f"device that may run it (do the devices' inventories differ?)",
                              self.inventory.devices, self.inventory.capabilities)
            queue = forward_queue(self.inventory, requires, target)
        except CatDogError as exc:
            self.fail(request, exc)
            return True
        self._hand_on(request, queue, hops + 1)
        return True

    def _hand_on(self, request: Any, queue: str, hops: int) -> None:
        """Put the very message on ``queue`` (at its priority), then acknowledge it here."""
        assert self.client is not None
        message = request.message
        channel = message.channel
        Queue(queue, Exchange(queue), queue)(channel).declare()  # its binding, for restores
        raw = dict(message._raw)
        raw["headers"] = {**(raw.get("headers") or {}), HOPS_HEADER: hops}
        raw["properties"] = {**raw.get("properties", {}),
                             "delivery_info": {"exchange": queue, "routing_key": queue}}
        priority = channel._get_message_priority(raw, reverse=False)
        pipe = self.client.pipeline(transaction=False)
        self._unstart(request, pipe)
        pipe.lpush(channel._q_for_pri(queue, priority), json.dumps(raw))
        ring(pipe, queue)
        pipe.execute()
        request.acknowledge()
        state.task_ready(request)
        log.warning("task %s[%s] may not run on %s: handed on to %s", request.name, request.id,
                    self.device.name if self.device else "?", queue)

    def fail(self, request: Any, exc: Exception) -> None:
        """No device may run ``request``: its result says why, and the message is acknowledged."""
        log.error("task %s[%s] may not run on %s and no device can take it: %s", request.name,
                  request.id, self.device.name if self.device else "?", exc)
        self._unstart(request)
        request.task.backend.mark_as_failure(request.id, exc, request=request)
        request.acknowledge()
        state.task_ready(request)

    def defer(self, request: Any, due: float, why: str) -> None:
        assert self.deferrals is not None
        where = stored(request)
        self._unstart(request)
        for key in where.keys:
            self.deferrals.add(key, json.dumps(where.raw), due)
        request.acknowledge()
        state.task_ready(request)
        self._wake.set()
        log.info("task %s[%s] deferred %.1fs: %s", request.name, request.id,
                 max(0.0, due - time.time()), why)

    def _unstart(self, request: Any, pipe: Any = None) -> None:
        """The message does not start here: remove the first delivery's record its take wrote
        (:mod:`catdog.carry`), so that its next delivery is not counted as a lost worker."""
        key = carry.starts.forget(str(request.message.delivery_tag))
        target = pipe if pipe is not None else self.client
        if key is not None and target is not None:
            target.delete(key)

    def _mover(self) -> None:
        timeout = MOVE_EVERY_S
        while True:
            self._wake.wait(timeout)  # or at once, when this worker deferred something
            self._wake.clear()
            try:
                assert self.deferrals is not None
                moved, next_due = self.deferrals.move_due()
            except redis.RedisError as exc:
                log.warning("deferred tasks not moved: %s", exc)
                timeout = MOVE_EVERY_S
                continue
            if moved:
                log.info("%d deferred task(s) due: back in their queues", moved)
            timeout = LOOK_EVERY_S if next_due is None else min(
                LOOK_EVERY_S, max(0.01, next_due - time.time()))

