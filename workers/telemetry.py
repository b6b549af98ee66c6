"""What a worker tells the coordinator: "ready" once (with what each of its tasks needs, for
tasks sent by name), then a heartbeat every few seconds.

Counts are kept in the worker's main process (where Celery settles every request, whatever the
pool), so counting costs no Redis round trip per task.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Any

import redis
from celery.worker import state
from celery.worker.request import Request

from catdog import broker
from catdog.records import (
    HEARTBEAT_INTERVAL_S,
    HEARTBEAT_TTL_S,
    KILLSWITCH_KEY,
    TASKS_KEY,
    Heartbeat,
    Switch,
    drop_stale_bindings,
    heartbeat_key,
    ready_key,
    task_records,
)
from catdog.routing import queue_keys
from workers import usage
from workers.gate import gate
from workers.killswitch import switch
from workers.leases import leases
from workers.metrics import recorder
from workers.watchdog import restart_in_place, watchdog

log = logging.getLogger(__name__)


class Counts:
    failed = 0

    @classmethod
    def done(cls) -> int:
        """Tasks finished without failing: received, no longer held, and not failed."""
        return state.all_total_count[0] - len(state.requests) - cls.failed


class CountingRequest(Request):
    """Celery's request, counting failures for the heartbeat and asking the gate before a task
    starts (both in the worker's main process)."""

    def send_event(self, type_: str, **fields: Any) -> Any:
        """Every settled task passes here in the main process (Celery's per-task request
        class overrides ``on_success`` but still sends its event): record its metrics."""
        recorder.record(self, type_, fields.get("runtime"))
        return super().send_event(type_, **fields)

    def revoked(self) -> bool:
        """Celery asks this just before a task goes to the pool: revoked or expired, or held
        back by the kill switch, its window or its rate limit (:mod:`workers.gate`)."""
        return bool(super().revoked()) or gate.hold(self)

    def acknowledge(self) -> None:
        """Celery's late ack, except that one Redis cannot take now is owed, not lost
        (:mod:`workers.leases`): kombu would keep the message held, and its slot taken, for good."""
        if self.acknowledged:  # type: ignore[has-type]  # (Celery's, untyped)
            return
        try:
            self.message.ack()
        except self._connection_errors as exc:
            leases.owe(self.message, exc)
        self.acknowledged = True

    def on_failure(self, exc_info: Any, send_failed_event: bool = True,
                   return_ok: bool = False) -> Any:
        Counts.failed += 1
        return super().on_failure(exc_info, send_failed_event=send_failed_event,
                                  return_ok=return_ok)


ANNOUNCE_AFTER_TICK_S = 0.005


class Telemetry:
    """Pushes the ready record, then from a daemon thread keeps the heartbeat fresh, renews the
    worker's hold on its messages (:mod:`workers.leases`) and watches that it still consumes
    (:mod:`workers.watchdog`)."""

    def __init__(self, device: str, broker_url: str, queues: list[str],
                 argv: list[str] | None = None) -> None:
        self.device = device
        self.queues = queues
        self.queue_keys = [key for q in queues for key in queue_keys(q)]
        self.argv = argv or ["--device", device]
        self.redis = broker.connect(broker_url)
        self.nodename = ""
        self.started = time.time()
        self.hub: Any = None
        self.consumer: Any = None
        self._stop = threading.Event()
        self._wake = threading.Event()

    def on_ready(self, consumer: Any) -> None:
        """At ``worker_ready``: honour the kill switch now, then announce after one loop tick.

        Celery signals ``worker_ready`` before the event loop starts, so before any task is
        fetched: a switch that is on cancels the task queues here. The Redis transport sends the
        SUBSCRIBE of the control (pidbox) channel from the loop's first tick: a ping sent before
        that is lost, and the launcher would wait out a ping timeout. A callback queued now runs
        at the start of the first iteration, and the timer it sets fires in the next one, after
        that tick.
        """
        self.hub = getattr(consumer, "hub", None)
        self.consumer = consumer
        leases.attach(consumer)
        switch.attach(consumer, self.queues)
        switch.on_change = self._wake.set
        recorded = Switch.loads(self.redis.get(KILLSWITCH_KEY))
        if recorded.on:
            switch.apply(True, at=recorded.at)
        nodename = consumer.hostname
        if self.hub is None:  # no event loop (a green pool): the control channel listens already
            self._announce(nodename)
            return
        hub = self.hub
        hub.call_soon(lambda: hub.call_later(ANNOUNCE_AFTER_TICK_S, self._announce, nodename))

    def _announce(self, nodename: str) -> None:
        self.nodename = nodename
        beat = self.heartbeat()
        pipe = self.redis.pipeline()
        pipe.set(heartbeat_key(self.device), beat.dumps(), ex=HEARTBEAT_TTL_S)
        pipe.rpush(ready_key(self.device), beat.dumps())
        pipe.expire(ready_key(self.device), 120)
        records: dict[Any, Any] = self.task_records()
        if records:  # what each task needs, for whoever sends one by name
            pipe.hset(TASKS_KEY, mapping=records)
        pipe.get(KILLSWITCH_KEY)
        # the switch again, now that the control channel listens: one turned on between the
        # first read and the subscription reached no broadcast to this worker
        self._follow(Switch.loads(pipe.execute()[-1]))
        with contextlib.suppress(redis.RedisError):
            if drop_stale_bindings(self.redis):
                log.info("removed an older CatDog's entries from Celery's own binding tables")
        threading.Thread(target=self._beat, name="catdog-heartbeat", daemon=True).start()

    @staticmethod
    def task_records() -> dict[str, str]:
        from catdog import app

        return task_records(app.tasks)

    def heartbeat(self) -> Heartbeat:
        active = list(state.active_requests)
        return Heartbeat(
            device=self.device, nodename=self.nodename, pid=os.getpid(), time=time.time(),
            started=self.started, active=len(active),
            active_names=sorted({r.name for r in active}), done=Counts.done(),
            failed=Counts.failed, queues=self.queues, paused=switch.engaged,
            load=usage.load1(), rss_mb=usage.tree_rss_mb(),
            mem_available_mb=usage.mem_available_mb(),
        )

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with contextlib.suppress(redis.RedisError):
            self.redis.delete(heartbeat_key(self.device))

    def _beat(self) -> None:
        while True:
            self._wake.wait(HEARTBEAT_INTERVAL_S)  # or at once, when the switch changed
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                pipe = self.redis.pipeline(transaction=False)
                pipe.set(heartbeat_key(self.device), self.heartbeat().dumps(), ex=HEARTBEAT_TTL_S)
                pipe.get(KILLSWITCH_KEY)
                for key in self.queue_keys:
                    pipe.llen(key)
                leases.renew(pipe)
                owed = leases.pay(pipe)
                replies = pipe.execute()
            except redis.RedisError as exc:  # the broker is down: keep trying
                log.warning("heartbeat not recorded: %s", exc)
                continue
            leases.paid(owed)
            wanted = Switch.loads(replies[1])
            if wanted.on != switch.engaged and self.hub is not None:
                self.hub.call_soon(self._follow, wanted)  # a missed broadcast: catch up
            backlog = sum(replies[2:2 + len(self.queue_keys)])
            if watchdog.check(backlog, self._has_room(), switch.engaged):
                restart_in_place(f"{backlog} task(s) waiting on {', '.join(self.queues)} but "
                                 f"none taken for {watchdog.stuck_after:.0f} s while able to "
                                 f"take one (connected but not consuming)", self.argv)

    def _has_room(self) -> bool:
        """Whether the worker may take another message (its prefetch allows it)."""
        channel = getattr(getattr(self.consumer, "task_consumer", None), "channel", None)
        qos = getattr(channel, "qos", None)
        return bool(qos is not None and qos.can_consume())

    def _follow(self, wanted: Switch) -> None:
        """Bring the switch to ``wanted`` (in the event-loop thread), unless the worker already
        follows a newer one (a read from before a broadcast must not undo it)."""
        if wanted.on != switch.engaged and wanted.at > switch.at:
            switch.apply(wanted.on, at=wanted.at)
