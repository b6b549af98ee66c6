"""The tasks the CatDog side of the benchmarks runs (workers import this module through the bench
inventory's ``imports:``)."""

from __future__ import annotations

import os
import time

import redis

from catdog import app

#: the Redis list the kill-switch benchmark reads task starts from
STARTS_KEY = "bench:starts"

_client: redis.Redis | None = None


@app.task(name="bench.noop", requires=("bench",))
def noop() -> None:
    """Nothing: what is measured is everything around a task."""


@app.task(name="bench.started")
def started(n: int, seconds: float) -> int:
    """Record when it started (``"<n> <time>"`` on :data:`STARTS_KEY`), then sleep."""
    global _client
    _client = _client or redis.Redis.from_url(os.environ["CATDOG_BROKER_URL"])
    _client.rpush(STARTS_KEY, f"{n} {time.time()}")
    time.sleep(seconds)
    return n
