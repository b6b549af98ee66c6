"""Many workers pinged at once through one app (``fab launch`` of a fleet waits for each device's
ping in a thread of its own): on the session's real Redis, with kombu's real pools."""

from __future__ import annotations

import threading
import time

from celery import Celery

from ops.pinging import ping

#: more at once than kombu's pools hold connections (``broker_pool_limit``, 10 by default)
AT_ONCE = 32


def test_pings_from_many_threads_all_return(redis_url: str) -> None:
    """Each ping holds a pooled connection and then asks the producer pool for another: with more
    pings at once than the pool has connections, every one waited for the others for ever (the
    launch of 32 devices hung). Each of these has no worker to answer it, so each says False,
    after its own timeout."""
    app = Celery("ping-many", broker=redis_url, set_as_current=False)
    answers: list[bool] = []
    threads = [threading.Thread(target=lambda n=n: answers.append(
        ping(app, f"nobody-{n}@nowhere", timeout=0.5)), daemon=True) for n in range(AT_ONCE)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60 - (time.monotonic() - started))
    assert [t for t in threads if t.is_alive()] == []
    assert answers == [False] * AT_ONCE
