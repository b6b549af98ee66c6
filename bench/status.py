"""``fab status`` for N live devices, timed inside the process (the goal: under 50 ms for 8)."""

from __future__ import annotations

import statistics
import time
from typing import Any

import redis

from bench.testbed import local_fleet
from catdog.context import open_fleet
from ops.launch import Launcher
from ops.results import READY
from ops.status import status
from ops.stop import Stopper


def run(samples: int = 200, count: int = 8) -> dict[str, Any]:
    with local_fleet(count) as bed:
        devices = bed.inventory.select(None)
        launched = Launcher(open_fleet(bed.inventory, bed.broker_url), timeout=60).launch(devices)
        failures = [f"{r.device}: {r.reason}" for r in launched if r.state != READY]
        client = redis.Redis.from_url(bed.broker_url)
        try:
            status(bed.inventory, devices, client)  # connect once, as a running command has
            times = []
            for _ in range(samples):
                started = time.perf_counter()
                rows = status(bed.inventory, devices, client)
                times.append((time.perf_counter() - started) * 1000)
            states = sorted({r["state"] for r in rows})
        finally:
            Stopper(open_fleet(bed.inventory, bed.broker_url), force=True).stop(devices)
    ordered = sorted(times)
    return {"devices": count, "samples": samples, "states": states, "failures": failures,
            "median_ms": round(statistics.median(times), 2),
            "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1], 2),
            "max_ms": round(ordered[-1], 2)}
