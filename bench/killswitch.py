"""The kill switch on live workers (CatDog only: plain Celery has none): when the last task
starts after ``engage`` returns, and when the first starts after ``release`` returns (the goal:
both within 2 s). Starts are recorded by the tasks themselves (:func:`bench.tasks.started`)."""

from __future__ import annotations

import time
from typing import Any

import redis

from bench.stats import summary
from bench.tasks import STARTS_KEY, started
from bench.testbed import local_fleet
from catdog import killswitch
from catdog.context import open_fleet
from ops.launch import Launcher
from ops.results import READY
from ops.stop import Stopper

TASKS = 40
TASK_S = 0.1
#: how long to watch for starts after ``engage`` (past the 2 s goal)
WATCH_S = 2.5


def run(rounds: int, count: int = 2) -> dict[str, Any]:
    on_s: list[float] = []
    off_s: list[float] = []
    engage_s: list[float] = []
    with local_fleet(count, imports=("bench.tasks",)) as bed:
        devices = bed.inventory.select(None)
        launched = Launcher(open_fleet(bed.inventory, bed.broker_url), timeout=60).launch(devices)
        failures = [f"{r.device}: {r.reason}" for r in launched if r.state != READY]
        client = redis.Redis.from_url(bed.broker_url)
        try:
            for _ in range(rounds if not failures else 0):
                on, off, took = _round(client)
                on_s.append(on)
                off_s.append(off)
                engage_s.append(took)
        finally:
            Stopper(open_fleet(bed.inventory, bed.broker_url), force=True).stop(devices)
    return {"devices": count, "rounds": rounds, "tasks": TASKS, "task_s": TASK_S,
            "on_to_last_start_s": summary(on_s), "off_to_first_start_s": summary(off_s),
            "engage_s": summary(engage_s), "failures": failures}


def _round(client: redis.Redis) -> tuple[float, float, float]:
    """One round: queue the tasks, switch on while they run, switch off; the delays."""
    client.delete(STARTS_KEY)
    results = [started.delay(n, TASK_S) for n in range(TASKS)]
    while client.llen(STARTS_KEY) < 2:
        time.sleep(0.01)
    called = time.time()
    killswitch.engage("bench: kill switch delay", by="bench")
    on_returned = time.time()
    time.sleep(WATCH_S)
    before = _starts(client)
    killswitch.release(by="bench")
    off_returned = time.time()
    for r in results:
        r.get(timeout=60)
    after = _starts(client)[len(before):]
    if len(before) >= TASKS or not after:
        raise RuntimeError(f"kill switch held nothing back: {len(before)} of {TASKS} started")
    return max(before) - on_returned, min(after) - off_returned, on_returned - called


def _starts(client: redis.Redis) -> list[float]:
    return [float(raw.split()[1]) for raw in client.lrange(STARTS_KEY, 0, -1)]
