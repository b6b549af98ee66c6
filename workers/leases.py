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

An acknowledgement that cannot reach Redis (the device is cut off as its task finishes) is owed,
not dropped. kombu's Redis transport raises before it forgets the message locally, Celery logs
"Couldn't ack" and moves on, and the message would stay held by this worker for good: renewed
with every heartbeat, never run again, and taking one of the worker's prefetch slots. Enough such
finished tasks and the worker takes nothing more, even once it is back. So the message is
forgotten here at once (the slot is free), and its ``unacked`` entry is removed by the first
heartbeat that reaches Redis again. A cut shorter than ``visibility_timeout`` therefore runs the
task once; a longer one may run it again elsewhere (at least once).

Leases are one of the worker's extensions (:mod:`workers.extension`): renewals and owed
acknowledgements ride on the heartbeat's pipeline (``on_beat``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from kombu.transport import virtual

from workers.extension import Extension, Replies, Worker

log = logging.getLogger(__name__)

UNACKED_INDEX_KEY = "unacked_index"  # kombu's default (Channel.unacked_index_key)
UNACKED_KEY = "unacked"  # kombu's default (Channel.unacked_key)

#: an acknowledgement not yet recorded in Redis: (index key, hash key, delivery tag)
Owed = tuple[str, str, str]


class Leases(Extension):
    """The delivery tags this worker holds, read from its task channel's QoS."""

    def __init__(self) -> None:
        self.consumer: Any = None
        self._owed: list[Owed] = []
        self._lock = threading.Lock()

    def attach(self, consumer: Any) -> None:
        self.consumer = consumer

    def on_start(self, worker: Worker) -> None:
        self.attach(worker.consumer)

    def on_beat(self, pipe: Any) -> Replies:
        self.renew(pipe)
        owed = self.pay(pipe)
        return lambda _replies: self.paid(owed)

    def on_ack_lost(self, request: Any, error: BaseException) -> bool:
        self.owe(request.message, error)
        return True

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

    def owe(self, message: Any, error: BaseException) -> None:
        """``message`` ran, but its acknowledgement did not reach Redis: forget it here (as the
        transport would have), and owe its removal from ``unacked`` to :meth:`pay`."""
        channel = message.channel
        virtual.QoS.ack(channel.qos, message.delivery_tag)  # the local half of kombu's ack
        owed = (str(getattr(channel, "unacked_index_key", UNACKED_INDEX_KEY)),
                str(getattr(channel, "unacked_key", UNACKED_KEY)), str(message.delivery_tag))
        with self._lock:
            self._owed.append(owed)
        log.warning("acknowledgement of %s did not reach Redis (%s); it is sent with the next "
                    "heartbeat that gets through", owed[2], error)

    def pay(self, pipe: Any) -> list[Owed]:
        """Queue on ``pipe`` every owed acknowledgement (kombu's own two writes); after the
        pipeline went through, hand the returned list to :meth:`paid`."""
        with self._lock:
            owed = list(self._owed)
        for index, unacked, tag in owed:
            pipe.zrem(index, tag)
            pipe.hdel(unacked, tag)
        return owed

    def paid(self, owed: list[Owed]) -> None:
        with self._lock:
            done = set(owed)
            self._owed = [o for o in self._owed if o not in done]

    @property
    def owed(self) -> int:
        return len(self._owed)

