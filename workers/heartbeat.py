"""What a worker tells the coordinator: "ready" once (with what each of its tasks needs, for
tasks sent by name), then a heartbeat every few seconds (:class:`catdog.records.Heartbeat`).

Counts are kept in the worker's main process (where Celery settles every request, whatever the
pool), so counting costs no Redis round trip per task. The heartbeat is one of the worker's
extensions (:mod:`workers.extension`); its record goes first on each beat's pipeline. It carries
the device's facts (:mod:`workers.facts`), as the health check (:mod:`workers.health`) judged
them on the same beat.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import TYPE_CHECKING, Any

import redis
from celery.worker import state

from catdog import release
from catdog.records import (
    FACTS_TTL_S,
    HEARTBEAT_TTL_S,
    TASKS_KEY,
    Heartbeat,
    Live,
    facts_key,
    heartbeat_key,
    live_key,
    ready_key,
    task_records,
)
from workers import usage
from workers.extension import Extension, Worker
from workers.facts import FactReader
from workers.killswitch import KillSwitch

if TYPE_CHECKING:
    from workers.health import Health

#: seconds the ready records of a device are kept
READY_TTL_S = 120


class HeartbeatRecord(Extension):
    """The ready record and the heartbeat of ``device``'s worker (paused when ``switch`` is)."""

    def __init__(self, device: str, queues: list[str], switch: KillSwitch,
                 facts: FactReader | None = None, health: Health | None = None) -> None:
        self.device = device
        self.facts = facts or FactReader()
        self.health = health
        self.queues = queues
        self.switch = switch
        self.started = time.time()
        self.nodename = ""
        self.failed = 0
        self.redis: Any = None
        self.release = release.running()

    def on_start(self, worker: Worker) -> None:
        self.nodename = worker.consumer.hostname
        self.redis = worker.redis

    def on_ready(self, pipe: Any) -> None:
        beat = self.heartbeat()
        pipe.set(heartbeat_key(self.device), beat.dumps(), ex=HEARTBEAT_TTL_S)
        pipe.set(live_key(self.device), Live.of(beat).dumps(), ex=HEARTBEAT_TTL_S)
        pipe.set(facts_key(self.device), json.dumps({**self.facts.static,
                                                     "started": self.started}), ex=FACTS_TTL_S)
        pipe.rpush(ready_key(self.device), beat.dumps())
        pipe.expire(ready_key(self.device), READY_TTL_S)
        records: dict[Any, Any] = self.task_records()
        if records:  # what each task needs, for whoever sends one by name
            pipe.hset(TASKS_KEY, mapping=records)

    def on_beat(self, pipe: Any) -> None:
        beat = self.heartbeat()
        pipe.set(heartbeat_key(self.device), beat.dumps(), ex=HEARTBEAT_TTL_S)
        pipe.set(live_key(self.device), Live.of(beat).dumps(), ex=HEARTBEAT_TTL_S)

    def on_failure(self, request: Any) -> None:
        self.failed += 1

    def on_stop(self) -> None:
        if self.redis is not None:
            with contextlib.suppress(redis.RedisError):
                self.redis.delete(heartbeat_key(self.device), live_key(self.device))

    @staticmethod
    def task_records() -> dict[str, str]:
        from catdog import app

        return task_records(app.tasks)

    def done(self) -> int:
        """Tasks finished without failing: received, no longer held, and not failed."""
        return state.all_total_count[0] - len(state.requests) - self.failed

    def heartbeat(self) -> Heartbeat:
        active = list(state.active_requests)
        facts = self.facts.read()
        degraded = self.health.judge(facts) if self.health is not None else ""
        return Heartbeat(
            device=self.device, nodename=self.nodename, pid=os.getpid(), time=time.time(),
            started=self.started, active=len(active),
            active_names=sorted({r.name for r in active}), done=self.done(),
            failed=self.failed, queues=self.queues, paused=self.switch.engaged,
            load=facts["load"], rss_mb=usage.tree_rss_mb(),
            mem_available_mb=facts["mem"], release=self.release, facts=facts,
            degraded=degraded,
        )
