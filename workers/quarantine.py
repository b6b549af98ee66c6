"""Counting each message's lost workers, and quarantining it after ``max_deliveries``.

A worker can be lost two ways while it runs a task, and both count:

- a pool process dies (prefork: out of memory, a segfault, ``os._exit``): Celery's main process
  sees a ``WorkerLostError`` with the exit status or signal, and would re-queue the message at
  once (``task_reject_on_worker_lost``). :meth:`Quarantine.on_lost` records the loss first, with
  whether the kernel's OOM killer was involved (:class:`OomCounter`);
- the whole worker dies (solo or threads pool, a SIGKILL, a power cut): nobody sees it end; its
  message comes back after the visibility timeout (:mod:`workers.leases`). The delivery record
  still says the delivery started and never settled, and the next delivery counts that as a loss.

Every delivery that passes the gate (it is about to start: :meth:`Quarantine.before_start`) is
recorded. Only a message delivered again (kombu marks what it puts back ``redelivered``) can have
lost a worker: it is counted in one Redis script before it may start, which also says whether
its losses reach its ``max_deliveries``; then it is held in the quarantine
(:mod:`catdog.quarantine`), acknowledged only after its entry is written, and its result says
why. A first delivery's record costs no round trip: the take that fetched the message wrote it
with the message's hold (:mod:`catdog.carry`; the gate removes it when the message does not
start); one the take did not write rides on a prefork worker's next heartbeat, and costs a solo
or threads worker one ``SET`` (a task there can kill the very process that would write it later).
A message that settles (success, a failure by raising, a
retry) has its record removed with the next heartbeat. A pool process killed by the hard kill
switch (:mod:`workers.killswitch`) is not counted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from typing import TYPE_CHECKING, Any

from celery.worker import state

from catdog import carry
from catdog.errors import UsageError
from catdog.records import (
    DEFAULT_MAX_DELIVERIES,
    DELIVERY_TTL_S,
    MAX_DELIVERIES_HEADER,
    POOL_PROCESS_DIED,
    WORKER_LOST,
    checked_max_deliveries,
    delivery_key,
)
from workers.extension import Extension, Replies, Worker, running
from workers.oom import OomCounter
from workers.stored import stored

if TYPE_CHECKING:
    from catdog.quarantine import Entry, Loss

log = logging.getLogger(__name__)

#: a request the hard kill switch cut short carries this attribute: its loss is not counted
TERMINATED_ATTRIBUTE = "_catdog_terminated"
SETTLED = ("task-succeeded", "task-failed", "task-retried", "task-revoked")

#: KEYS: the record; ARGV: device, node, pid, now, max_deliveries, ttl. A delivery left running
#: (its worker was lost whole) becomes a loss; returns {1, losses} when they reach the limit
#: (nothing starts), else {0, count} with this delivery recorded as running.
_START = """
local rec = {}
local raw = redis.call('GET', KEYS[1])
if raw then rec = cjson.decode(raw) end
local losses = rec['losses'] or {}
if rec['current'] then table.insert(losses, rec['current']) end
rec['current'] = nil
rec['losses'] = losses
if #losses < tonumber(ARGV[5]) then
  rec['current'] = {device=ARGV[1], node=ARGV[2], pid=tonumber(ARGV[3]),
                    started=tonumber(ARGV[4]), how=ARGV[7]}
end
redis.call('SET', KEYS[1], cjson.encode(rec), 'EX', ARGV[6])
if rec['current'] then return {0, #losses} end
return {1, cjson.encode(losses)}
"""

#: KEYS: the record; ARGV: what is known of the loss (JSON), max_deliveries, ttl, device, node,
#: and "1" when it is no loss (the hard kill switch's): the delivery is closed, not counted.
#: Returns {1, losses} when they reach the limit, else {0, count}.
_LOST = """
local rec = {}
local raw = redis.call('GET', KEYS[1])
if raw then rec = cjson.decode(raw) end
local losses = rec['losses'] or {}
if ARGV[6] ~= '1' then
  local loss = rec['current'] or {device=ARGV[4], node=ARGV[5]}
  for k, v in pairs(cjson.decode(ARGV[1])) do loss[k] = v end
  table.insert(losses, loss)
end
rec['current'] = nil
rec['losses'] = losses
redis.call('SET', KEYS[1], cjson.encode(rec), 'EX', ARGV[3])
if #losses >= tonumber(ARGV[2]) then return {1, cjson.encode(losses)} end
return {0, #losses}
"""

_SIGNAL = re.compile(r"signal (\d+)")
_EXITCODE = re.compile(r"exitcode (-?\d+)")


def exit_of(error: BaseException) -> tuple[int | None, int | None]:
    """(exit status, signal) of a lost pool process, from Celery's ``WorkerLostError`` text.

    >>> from celery.exceptions import WorkerLostError
    >>> exit_of(WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL) Job: 3."))
    (None, 9)
    >>> exit_of(WorkerLostError("Worker exited prematurely: exitcode 1 Job: 0."))
    (1, None)
    """
    text = str(error)
    signal, code = _SIGNAL.search(text), _EXITCODE.search(text)
    return (int(code.group(1)) if code else None, int(signal.group(1)) if signal else None)


class Quarantine(Extension):
    """Delivery counts and the quarantine, for the worker of ``device`` (its ``pool``)."""

    def __init__(self, device: str, pool: str = "prefork") -> None:
        self.device = device
        self.node = device
        #: solo and threads pools run tasks in the worker's own process: a task that kills it
        #: leaves only what was written before it started
        self.durable_starts = pool != "prefork"
        self.redis: Any = None
        self.oom = OomCounter()
        self._start: Any = None
        self._lost: Any = None
        self._pending: dict[str, str] = {}  # first deliveries' records, for the next beat
        self._flushing: set[str] = set()
        self._settled: list[str] = []
        self._lock = threading.Lock()

    def on_start(self, worker: Worker) -> None:
        self.redis = worker.redis
        self.node = str(getattr(worker.consumer, "hostname", "") or worker.device)
        self._start = self.redis.register_script(_START)
        self._lost = self.redis.register_script(_LOST)
        current = {"device": self.device, "node": self.node, "pid": os.getpid(),
                   "how": WORKER_LOST}
        head = json.dumps({"losses": [], "current": current}, separators=(",", ":"))
        carry.starts.configure(delivery_key(""), head[:-2] + ',"started":', DELIVERY_TTL_S)

    def limit(self, request: Any) -> int:
        """The request's ``max_deliveries``: the call's, else its task's, else the default."""
        task = request.task
        given = (request.request_dict or {}).get(MAX_DELIVERIES_HEADER)
        default = getattr(task, "max_deliveries", DEFAULT_MAX_DELIVERIES)
        try:
            return checked_max_deliveries(default, f"task {request.name!r}") if given is None \
                else checked_max_deliveries(given, f"task {request.name!r}[{request.id}]")
        except UsageError as exc:
            log.error("%s: counted with the default %d", exc, DEFAULT_MAX_DELIVERIES)
            return DEFAULT_MAX_DELIVERIES

    def before_start(self, request: Any) -> bool:
        """Record the delivery; True (held back) when it is quarantined instead.

        A message delivered for the first time has lost no worker: its record costs no round
        trip on a prefork worker (it rides on the next heartbeat; a pool process lost before
        then is recorded by :meth:`on_lost`), one ``SET`` on solo and threads. One delivered
        again (kombu marks every message it puts back ``redelivered``) is counted in one
        script call before it may start."""
        if self._start is None or getattr(request, "_catdog_delivery", None):
            return False
        tag = str(request.message.delivery_tag)
        request._catdog_delivery, request._catdog_started = tag, time.time()
        request._catdog_oom = self.oom.read()
        try:
            if not redelivered(request):
                return self._first(tag, request._catdog_started)
            limit = self.limit(request)
            held, losses = self._start(keys=[delivery_key(tag)], args=[
                self.device, self.node, os.getpid(), request._catdog_started, limit,
                DELIVERY_TTL_S, WORKER_LOST])
        except Exception as exc:  # Redis is down: the task runs, uncounted, rather than waits
            log.warning("delivery of %s[%s] not counted: %s", request.name, request.id, exc)
            return False
        if not held:
            return False
        self.quarantine(request, losses, limit)
        return True

    def _first(self, tag: str, started: float) -> bool:
        if carry.starts.written(tag):
            return False  # the take wrote it, with the message's hold
        record = json.dumps({"losses": [], "current": {
            "device": self.device, "node": self.node, "pid": os.getpid(), "started": started,
            "how": WORKER_LOST}}, separators=(",", ":"))
        if self.durable_starts:
            self.redis.set(delivery_key(tag), record, nx=True, ex=DELIVERY_TTL_S)
        else:
            with self._lock:
                self._pending[tag] = record
        return False

    def on_lost(self, request: Any, error: BaseException) -> bool:
        """A pool process died running ``request``: record how; True when the message is
        quarantined (acknowledged here) instead of re-queued."""
        tag = getattr(request, "_catdog_delivery", None)
        if self._lost is None or tag is None:
            return False
        with self._lock:  # its record is written here, whole (a beat's SET NX then does nothing)
            self._pending.pop(tag, None)
        terminated = bool(getattr(request, TERMINATED_ATTRIBUTE, False))
        status, signal = exit_of(error)
        loss = {"lost": time.time(), "how": POOL_PROCESS_DIED, "exit_status": status,
                "signal": signal, "started": getattr(request, "_catdog_started", None),
                "oom": self.oom.involved(signal, getattr(request, "_catdog_oom", None)),
                "pid": getattr(request, "worker_pid", None)}
        limit = self.limit(request)
        try:
            held, losses = self._lost(keys=[delivery_key(tag)], args=[
                json.dumps(loss), limit, DELIVERY_TTL_S, self.device, self.node,
                "1" if terminated else "0"])
        except Exception as exc:
            log.warning("loss of %s[%s] not counted: %s", request.name, request.id, exc)
            return False
        stored = getattr(request, "_success_was_stored", lambda: False)
        if terminated or not held or stored():  # (stored: it succeeded, then its process died)
            return False
        self.quarantine(request, losses, limit)
        return True

    def on_settled(self, request: Any, event: str, runtime: float | None) -> None:
        tag = getattr(request, "_catdog_delivery", None)
        if tag is None or event not in SETTLED:
            return
        with self._lock:
            if tag in self._pending and tag not in self._flushing:
                del self._pending[tag]  # never written: nothing to remove
            else:
                self._settled.append(tag)

    def on_beat(self, pipe: Any) -> Replies | None:
        """Write the first deliveries' records (never over one written since), remove those of
        the messages settled since the last beat."""
        with self._lock:
            pending, settled = dict(self._pending), list(self._settled)
            self._flushing = set(pending)
        for tag, record in pending.items():
            pipe.set(delivery_key(tag), record, nx=True, ex=DELIVERY_TTL_S)
        if settled:
            pipe.delete(*(delivery_key(tag) for tag in settled))
        if not (pending or settled):
            return None

        def done(_replies: list[Any]) -> None:
            with self._lock:
                for tag in pending:
                    self._pending.pop(tag, None)
                self._flushing = set()
                del self._settled[:len(settled)]

        return done

    def quarantine(self, request: Any, losses: Any, limit: int) -> None:
        """Hold ``request``'s message: its entry written, then its result, then the ack."""
        from catdog.quarantine import Loss, Quarantined, hold  # (rare: not kept in every worker)

        entry = self.entry(request, [Loss.of(x) for x in json.loads(losses)], limit)
        hold(self.redis, entry)
        error = Quarantined(
            f"task {request.name}[{request.id}] quarantined after {len(entry.losses)} worker "
            f"loss(es) on {', '.join(entry.devices)} (max_deliveries={limit}): `fab quarantine` "
            f"shows it; `fab quarantine --requeue {request.id}` runs it again")
        request.task.backend.mark_as_failure(request.id, error, request=request._context,
                                             store_result=request.store_errors)
        request.acknowledge()
        state.task_ready(request)
        running(request._app).failure(request)
        request.send_event("task-failed", exception=repr(error))
        log.error("%s", error)

    def entry(self, request: Any, losses: list[Loss], limit: int) -> Entry:
        from catdog.quarantine import Entry

        where = stored(request)
        return Entry(id=request.id, task=request.name, args=list(request.args or ()),
                     kwargs=dict(request.kwargs or {}), max_deliveries=limit, losses=losses,
                     held_at=time.time(), held_by=self.device,
                     keys=where.keys, queue=where.routing_key, message=where.raw)


def redelivered(request: Any) -> bool:
    """Whether kombu put the message back on its queue at least once (a worker took it before)."""
    info = request.delivery_info or {}
    headers = getattr(request.message, "_raw", {}).get("headers") or {}
    return bool(info.get("redelivered") or headers.get("redelivered"))
