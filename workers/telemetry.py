"""What a worker tells the coordinator: "ready" once, then a heartbeat every few seconds.

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

from catdog.records import (
    HEARTBEAT_INTERVAL_S,
    HEARTBEAT_TTL_S,
    Heartbeat,
    heartbeat_key,
    ready_key,
)

log = logging.getLogger(__name__)


class Counts:
    failed = 0

    @classmethod
    def done(cls) -> int:
        """Tasks finished without failing: received, no longer held, and not failed."""
        return state.all_total_count[0] - len(state.requests) - cls.failed


class CountingRequest(Request):
    """Celery's request, counting failures for the heartbeat (in the main process)."""

    def on_failure(self, exc_info: Any, send_failed_event: bool = True,
                   return_ok: bool = False) -> Any:
        Counts.failed += 1
        return super().on_failure(exc_info, send_failed_event=send_failed_event,
                                  return_ok=return_ok)


ANNOUNCE_AFTER_TICK_S = 0.005


class Telemetry:
    """Pushes the ready record and keeps the heartbeat fresh from a daemon thread."""

    def __init__(self, device: str, broker_url: str, queues: list[str]) -> None:
        self.device = device
        self.queues = queues
        self.redis = redis.Redis.from_url(broker_url, socket_timeout=5, health_check_interval=30)
        self.nodename = ""
        self.started = time.time()
        self._stop = threading.Event()

    def on_ready(self, nodename: str, hub: Any = None) -> None:
        """Announce the worker once its event loop has run one tick.

        Celery signals ``worker_ready`` before the loop starts, and the Redis transport sends
        the SUBSCRIBE of the control (pidbox) channel from the loop's first tick: a ping sent
        before that is lost, and the launcher would wait out a ping timeout. A callback queued
        now runs at the start of the first iteration, and the timer it sets fires in the next
        one, after that tick.
        """
        if hub is None:  # no event loop (a green pool): the control channel listens already
            self._announce(nodename)
            return
        hub.call_soon(lambda: hub.call_later(ANNOUNCE_AFTER_TICK_S, self._announce, nodename))

    def _announce(self, nodename: str) -> None:
        self.nodename = nodename
        beat = self.heartbeat()
        pipe = self.redis.pipeline()
        pipe.set(heartbeat_key(self.device), beat.dumps(), ex=HEARTBEAT_TTL_S)
        pipe.rpush(ready_key(self.device), beat.dumps())
        pipe.expire(ready_key(self.device), 120)
        pipe.execute()
        threading.Thread(target=self._beat, name="catdog-heartbeat", daemon=True).start()

    def heartbeat(self) -> Heartbeat:
        active = list(state.active_requests)
        return Heartbeat(
            device=self.device, nodename=self.nodename, pid=os.getpid(), time=time.time(),
            started=self.started, active=len(active),
            active_names=sorted({r.name for r in active}), done=Counts.done(),
            failed=Counts.failed, queues=self.queues,
        )

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(redis.RedisError):
            self.redis.delete(heartbeat_key(self.device))

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_INTERVAL_S):
            try:
                self.redis.set(heartbeat_key(self.device), self.heartbeat().dumps(),
                               ex=HEARTBEAT_TTL_S)
            except redis.RedisError as exc:  # the broker is down: keep trying
                log.warning("heartbeat not recorded: %s", exc)
