"""A broker lost mid-work does not end the worker: kombu's restore of held messages is made safe.

When the connection to Redis drops, Celery closes the consumer's connection, and kombu's Redis
QoS puts the messages the worker holds back on their queues (``restore_unacked_once``). If the
transport has already let go of its client by then, kombu (5.x) raises ``AttributeError:
'NoneType' object has no attribute 'hostname'`` while building a Redis client for that restore;
it is not one of the connection errors Celery ignores there, so Celery calls it unrecoverable and
the worker exits (status 0) and stays down until something starts it again. The chaos soak saw it
four times in two minutes of Redis kills (``docs/guarantees.md``).

Here that restore, when it cannot build a client, leaves the messages where they are: in Redis'
``unacked`` hash, which every worker's sweep puts back on their queues once they go
``visibility_timeout`` seconds unrenewed (``workers/leases.py``) — the same path a power cut takes.
A message whose task is still running here is acknowledged when it ends (or its acknowledgement is
owed, :meth:`workers.leases.Leases.owe`). Installed once per worker process, at start.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

log = logging.getLogger(__name__)
_MARK = "_catdog_safe_restore"


def install() -> None:
    """Make kombu's Redis QoS restore at connection close survive a torn-down transport."""
    from kombu.transport import redis as kombu_redis

    qos = kombu_redis.QoS
    if getattr(qos.restore_unacked_once, _MARK, False):
        return
    original = qos.restore_unacked_once

    @functools.wraps(original)
    def restore_unacked_once(self: Any, stderr: Any = None) -> Any:
        try:
            return original(self, stderr)
        except AttributeError as exc:  # the transport's client is gone: no Redis client to build
            held = len(getattr(self, "_delivered", {}) or {})
            log.warning("broker connection torn down before its %d held message(s) could be put "
                        "back (%s): they stay in Redis' unacked record and return to their queues "
                        "after the visibility timeout, unless this worker finishes them first",
                        held, exc)
            return None

    setattr(restore_unacked_once, _MARK, True)
    setattr(qos, "restore_unacked_once", restore_unacked_once)  # noqa: B010
