"""The worker's loop around Celery: it runs the worker's extensions (:mod:`workers.extension`)
and knows none of their concerns.

- :class:`ExtendedRequest`, Celery's request in the worker's main process, hands each task's
  moments to the extensions: before it starts (``revoked``), its settling (``send_event``,
  ``on_failure``), a pool process lost while running it (``on_failure``: :func:`lost_error`)
  and an acknowledgement Redis could not take (``acknowledge``);
- :class:`Telemetry` starts them at ``worker_ready``, sends the ready announcement after one
  loop tick, then from a daemon thread beats every few seconds: one pipelined round trip in which
  each extension queues its own commands and gets back its own replies; it stops them at an
  orderly shutdown.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import redis
from billiard.einfo import ExceptionWithTraceback
from celery.exceptions import WorkerLostError
from celery.worker.request import Request

from catdog import broker
from catdog.records import HEARTBEAT_INTERVAL_S, drop_stale_bindings
from workers.extension import Extensions, Worker, running

log = logging.getLogger(__name__)


class ExtendedRequest(Request):
    """Celery's request, asking the running worker's extensions (:func:`running`) at each of a
    task's moments, in the worker's main process."""

    def send_event(self, type_: str, **fields: Any) -> Any:
        """Every settled task passes here in the main process (Celery's per-task request
        class overrides ``on_success`` but still sends its event)."""
        running(self._app).settled(self, type_, fields.get("runtime"))
        return super().send_event(type_, **fields)

    def revoked(self) -> bool:
        """Celery asks this just before a task goes to the pool: revoked or expired, or held
        back by an extension (the gate: :mod:`workers.gate`)."""
        return bool(super().revoked()) or running(self._app).before_start(self)

    def acknowledge(self) -> None:
        """Celery's late ack, except that one Redis cannot take now is handed to the extensions
        (the leases owe it: :mod:`workers.leases`); kombu would keep the message held, and its
        slot taken, for good."""
        if self.acknowledged:  # type: ignore[has-type]  # (Celery's, untyped)
            return
        try:
            self.message.ack()
        except self._connection_errors as exc:
            if not running(self._app).ack_lost(self, exc):
                log.error("Couldn't ack %r, reason:%r", self.message.delivery_tag, exc)
        self.acknowledged = True

    def on_failure(self, exc_info: Any, send_failed_event: bool = True,
                   return_ok: bool = False) -> Any:
        """A pool process lost while it ran the task is the extensions' first (the quarantine
        may hold the message instead of Celery re-queueing it: :mod:`workers.quarantine`)."""
        extensions = running(self._app)
        lost = lost_error(self, exc_info)
        if lost is not None and extensions.lost(self, lost):
            return None
        extensions.failure(self)
        return super().on_failure(exc_info, send_failed_event=send_failed_event,
                                  return_ok=return_ok)


def lost_error(request: Any, exc_info: Any) -> BaseException | None:
    """The error of ``exc_info`` when it says ``request``'s pool process was lost (Celery's
    ``WorkerLostError``, or the ``SystemExit`` billiard reports first), else None."""
    error = getattr(exc_info, "exception", None)
    if isinstance(error, ExceptionWithTraceback):
        error = error.exc
    if isinstance(error, WorkerLostError):
        return error
    if isinstance(error, SystemExit | KeyboardInterrupt) and not (
            getattr(request, "_already_cancelled", False)
            or getattr(request, "_already_revoked", False)):
        code = error.code if isinstance(error, SystemExit) else 1
        return WorkerLostError(f"Worker exited prematurely: exitcode "
                               f"{code if isinstance(code, int) else 1}.")
    return None


ANNOUNCE_AFTER_TICK_S = 0.005


class Telemetry:
    """Runs ``extensions`` for the worker of ``device`` consuming ``queues``."""

    def __init__(self, device: str, broker_url: str, queues: list[str],
                 extensions: Extensions, argv: list[str] | None = None) -> None:
        self.device = device
        self.queues = queues
        self.extensions = extensions
        self.argv = argv or ["--device", device]
        self.redis = broker.connect(broker_url)
        self._stop = threading.Event()
        self._wake = threading.Event()

    def on_ready(self, consumer: Any) -> None:
        """At ``worker_ready``: start the extensions now, then announce after one loop tick.

        Celery signals ``worker_ready`` before the event loop starts, so before any task is
        fetched: a kill switch that is on cancels the task queues here. The Redis transport sends
        the SUBSCRIBE of the control (pidbox) channel from the loop's first tick: a ping sent
        before that is lost, and the launcher would wait out a ping timeout. A callback queued
        now runs at the start of the first iteration, and the timer it sets fires in the next
        one, after that tick.
        """
        hub = getattr(consumer, "hub", None)
        self.extensions.start(Worker(device=self.device, queues=self.queues, argv=self.argv,
                                     redis=self.redis, consumer=consumer, hub=hub,
                                     wake=self._wake.set))
        if hub is None:  # no event loop (a green pool): the control channel listens already
            self._announce()
            return
        hub.call_soon(lambda: hub.call_later(ANNOUNCE_AFTER_TICK_S, self._announce))

    def _announce(self) -> None:
        pipe = self.redis.pipeline()
        deliver = self.extensions.ready(pipe)
        deliver(pipe.execute())
        with contextlib.suppress(redis.RedisError):
            if drop_stale_bindings(self.redis):
                log.info("removed an older CatDog's entries from Celery's own binding tables")
        threading.Thread(target=self._beat, name="catdog-heartbeat", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self.extensions.stop()

    def _beat(self) -> None:
        while True:
            self._wake.wait(HEARTBEAT_INTERVAL_S)  # or at once, when an extension asks
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                pipe = self.redis.pipeline(transaction=False)
                deliver = self.extensions.beat(pipe)
                replies = pipe.execute()
            except redis.RedisError as exc:  # the broker is down: keep trying
                log.warning("heartbeat not recorded: %s", exc)
                continue
            deliver(replies)
