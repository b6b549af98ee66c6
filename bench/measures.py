"""What is measured on the sides of the comparison, once their workers are up: end-to-end
throughput (one side), sequential round trips and fan-out to every device (sides interleaved)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import redis
from celery.result import ResultSet

from bench.cpu import tree_cpu_s
from bench.roundtrips import counting
from bench.sides import Side
from bench.stats import percentile

WARM_UP_CALLS = 20


def warm_up(side: Side) -> None:
    """First calls open connections and subscriptions on both ends: not measured."""
    side.gather([side.call() for _ in range(WARM_UP_CALLS)])


def throughput(side: Side, tasks: int, broker: redis.Redis, sender_url: str | None = None
               ) -> dict[str, float]:
    """Send ``tasks`` no-ops routed by capability and gather every result: tasks per second;
    the CPU time per task of the side's workers (their process trees) and of this process
    (the producer, which also gathers the results); and the commands the broker ran per task
    meanwhile (producer and workers, both sides' background work included), from Redis's own
    counters.

    ``sender_url``: the producer publishes through its own connection to that Redis (the
    coordinator next to its Redis, the devices behind the link) and gathers the results with
    ``ResultSet.join_native()`` (one read of them all, then the published results), so that
    what is measured is the devices' pace, not one producer's round trips on the link; else
    it publishes with the side's app and reads each result with ``.get()``."""
    commands, workers_cpu = broker_commands(broker), _cpu_s(side)
    producer_cpu, started = time.process_time(), time.perf_counter()
    if sender_url is None:
        done = side.gather([side.call() for _ in range(tasks)])
    else:
        with side.app.connection_for_write(sender_url) as conn:
            producer = side.app.amqp.Producer(conn.default_channel)
            results = [side.call(producer=producer) for _ in range(tasks)]
            done = ResultSet(results, app=side.app).join_native(timeout=120)
    elapsed = time.perf_counter() - started
    producer_cpu = time.process_time() - producer_cpu
    workers_cpu = _cpu_s(side) - workers_cpu
    commands = broker_commands(broker) - commands - 1  # the first INFO counts itself
    if len(done) != tasks:
        raise RuntimeError(f"{side.name}: {len(done)} results for {tasks} tasks")
    return {"tasks_per_s": tasks / elapsed, "worker_cpu_us": workers_cpu / tasks * 1e6,
            "producer_cpu_us": producer_cpu / tasks * 1e6, "commands_per_task": commands / tasks}


def _cpu_s(side: Side) -> float:
    return sum(tree_cpu_s(pid) for pid in side.pids)


def broker_commands(broker: redis.Redis) -> int:
    """How many commands the broker has run since it started (``INFO commandstats``)."""
    return sum(int(stat["calls"]) for stat in broker.info("commandstats").values())


def latency_ms_alternating(sides: list[Side], calls: int) -> dict[str, dict[str, float]]:
    """Sequential calls (send, wait for the result) of several sides, interleaved (A, B, B, A,
    A, B, ...) so drift in the machine's state reaches every side alike: p50, p95, p99 in
    milliseconds, per side."""
    times: dict[str, list[float]] = {side.name: [] for side in sides}
    for side in _interleaved(sides, calls):
        started = time.perf_counter()
        side.gather([side.call()])
        times[side.name].append((time.perf_counter() - started) * 1000)
    return {name: {f"p{q}": round(percentile(found, q / 100), 3) for q in (50, 95, 99)}
            for name, found in times.items()}


def fanout_alternating(sides: list[Side], times: int) -> dict[str, dict[str, list[float]]]:
    """One no-op to every device, ``times`` times per side, the sides interleaved as in
    :func:`latency_ms_alternating`: the producer's time (until the call returns), the total
    time (until every result is in), and the producer's Redis round trips and result
    subscriptions per fan-out."""
    found: dict[str, dict[str, list[float]]] = {
        side.name: {"producer_ms": [], "total_ms": [], "writes": [], "subscriptions": []}
        for side in sides}
    for side in _interleaved(sides, times):
        into = found[side.name]
        with counting() as trips:
            started = time.perf_counter()
            results = side.fanout()
            sent = time.perf_counter()
        side.gather(results)
        into["total_ms"].append((time.perf_counter() - started) * 1000)
        into["producer_ms"].append((sent - started) * 1000)
        into["writes"].append(trips.writes)
        into["subscriptions"].append(trips.subscriptions)
    return found


def _interleaved(sides: list[Side], times: int) -> Iterator[Side]:
    """Each side ``times`` times, in the order A, B, B, A, A, B, ..."""
    for n in range(times):
        yield from sides if n % 2 == 0 else sides[::-1]
