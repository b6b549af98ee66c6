"""Ping a worker by node name with Celery's remote control.

A broadcast ping with no destination always waits its whole timeout; one addressed to the node
returns as soon as that node replies.

Pings from many threads at once (``fab launch`` waits for every device in a thread of its own)
share the app's kombu pools: each ping holds a pooled connection while it asks the producer pool
for a second one, so more pings at once than half the pool's connections (``broker_pool_limit``,
10) waited for each other for ever (a launch of 32 devices hung). At most :func:`slots` of them
run at once per app; the others wait their turn, and a ping takes a few milliseconds.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celery import Celery


def ping(app: Celery, nodename: str, timeout: float = 2.0) -> bool:
    """True when ``nodename`` answers a Celery ping through ``app`` within ``timeout`` seconds
    (the app of the fleet's context: :attr:`catdog.context.FleetContext.app`)."""
    with slots(app):
        replies = app.control.ping(destination=[nodename], timeout=timeout) or []
    return any(nodename in reply for reply in replies)


_SLOTS_LOCK = threading.Lock()


def slots(app: Celery) -> threading.BoundedSemaphore:
    """How many pings of ``app`` may run at once: two pooled connections each, one spare."""
    with _SLOTS_LOCK:
        found: threading.BoundedSemaphore | None = getattr(app, "_catdog_ping_slots", None)
        if found is None:
            limit = app.conf.broker_pool_limit or 16
            found = threading.BoundedSemaphore(max(1, limit // 2 - 1))
            app._catdog_ping_slots = found
        return found
