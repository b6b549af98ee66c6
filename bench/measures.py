"""What is measured on one side of the comparison, once its workers are up: end-to-end
throughput, sequential round trips, and fan-out to every device."""

from __future__ import annotations

import time
from typing import Any

from bench.roundtrips import counting
from bench.sides import Side
from bench.stats import percentile

WARM_UP_CALLS = 20


def warm_up(side: Side) -> None:
    """First calls open connections and subscriptions on both ends: not measured."""
    side.gather([side.call() for _ in range(WARM_UP_CALLS)])


def throughput(side: Side, tasks: int) -> float:
    """Tasks per second: send ``tasks`` no-ops routed by capability, gather every result."""
    started = time.perf_counter()
    results = [side.call() for _ in range(tasks)]
    done = side.gather(results)
    elapsed = time.perf_counter() - started
    if len(done) != tasks:
        raise RuntimeError(f"{side.name}: {len(done)} results for {tasks} tasks")
    return tasks / elapsed


def latency_ms(side: Side, calls: int) -> dict[str, float]:
    """Sequential calls (send, wait for the result): p50, p95, p99 in milliseconds."""
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        side.gather([side.call()])
        times.append((time.perf_counter() - started) * 1000)
    return {f"p{q}": round(percentile(times, q / 100), 3) for q in (50, 95, 99)}


def fanout(side: Side, times: int) -> dict[str, Any]:
    """One no-op to every device, ``times`` times: the producer's time (until the call returns),
    the total time (until every result is in) and the producer's Redis round trips per fan-out."""
    producer, total, writes, subscriptions = [], [], [], []
    for _ in range(times):
        with counting() as trips:
            started = time.perf_counter()
            results = side.fanout()
            sent = time.perf_counter()
        side.gather(results)
        total.append((time.perf_counter() - started) * 1000)
        producer.append((sent - started) * 1000)
        writes.append(trips.writes)
        subscriptions.append(trips.subscriptions)
    return {"producer_ms": producer, "total_ms": total, "writes": writes, "subscriptions": subscriptions,
            "messages": len(side.devices)}
