"""A live worker keeps the messages it holds; a dead worker's come back within a minute.

On Redis, a message a worker has taken but not acknowledged sits in kombu's ``unacked`` hash,
indexed by when it was taken (``unacked_index``). Every worker's event loop sweeps that index
(every ``unacked_restore_interval`` seconds) and puts back on its queue any message taken more
than ``visibility_timeout`` seconds ago. Alone, that either re-delivers long tasks while they
still run (a short timeout) or leaves a dead worker's tasks stranded for a long time (a long one).

So each worker renews its hold: with every heartbeat it moves the index entries of the messages
it holds (running, reserved, or waiting for an ETA) to "now". A message whose worker lost power
stops being renewed and the next sweep by any worker puts it back after ``visibility_timeout``
(celeryconfig.py). A task may run for as long as it needs while its worker lives and reaches
Redis; this also ends kombu's re-delivery loop of ETAs beyond the timeout (celery/kombu#337).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

UNACKED_INDEX_KEY = "unacked_index"  # kombu's default (Channel.unacked_index_key)


class Leases:
    """The delivery tags this worker holds, read from its task channel's QoS."""

    def __init__(self) -> None:
        self.consumer: Any = None

    def attach(self, consumer: Any) -> None:
        self.consumer = consumer

    def held(self) -> list[str]:
        """Tags of the messages taken and not yet acknowledged (a snapshot: the event loop may
        change the set while this thread reads it)."""
        channel = getattr(getattr(self.consumer, "task_consumer", None), "channel", None)
        qos = getattr(channel, "qos", None)
        if qos is None:
            return []
        for _ in range(5):
            with contextlib.suppress(RuntimeError):  # changed during the copy: read again
                dirty = set(qos._dirty)
                return [tag for tag in list(qos._delivered) if tag not in dirty]
        return []

    def key(self) -> str:
        channel = getattr(getattr(self.consumer, "task_consumer", None), "channel", None)
        return str(getattr(channel, "unacked_index_key", UNACKED_INDEX_KEY))

    def renew(self, pipe: Any, now: float | None = None) -> int:
        """Queue on ``pipe`` the renewal of every held message (only entries still indexed:
        one acknowledged meanwhile is not brought back). Returns how many."""
        tags = self.held()
        if tags:
            stamp = time.time() if now is None else now
            pipe.zadd(self.key(), dict.fromkeys(tags, stamp), xx=True)
        return len(tags)


leases = Leases()
