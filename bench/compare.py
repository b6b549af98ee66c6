"""CatDog against plain Celery on the same local fleet and Redis, in one run, for several
rounds; each round starts both sides' workers on the same devices (which first alternates).

Per round and side: idle memory of each worker's process tree, sequential round-trip latency
(the two sides' calls interleaved), end-to-end throughput and the broker's commands per task
(one side at a time, the other idle; two devices with capability ``bench``); and fan-out to
every device of the fleet (interleaved too). Ratios are CatDog / plain of the medians over rounds.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import redis

from bench import measures
from bench.memory import usage_mb
from bench.sides import Side, catdog_side, plain_side
from bench.stats import ratio, summary
from bench.testbed import Bed, local_fleet
from catdog.inventory import Device

#: the two devices throughput, latency and memory use (the fan-out uses the whole fleet)
PAIR = 2
#: how long a freshly started worker idles before its memory is read
IDLE_S = 2.0
SIDES: dict[str, Callable[[Bed, list[Device], str | None], AbstractContextManager[Side]]] = {
    "catdog": catdog_side, "plain": plain_side}


def run(pool: str, concurrency: int, rounds: int, tasks: int, calls: int,
        loglevel: str | None = None) -> dict[str, Any]:
    """Throughput, latency and idle memory for one worker profile (pool and concurrency);
    ``loglevel``: both sides' workers log at it (default: each side's own default).

    Each round starts both fleets (which first alternates). Idle memory is read per side;
    round trips alternate call by call between the sides, so both meet the same machine; the
    throughput runs go one side at a time (the other idle), in alternating order.
    """
    found: dict[str, dict[str, list[float]]] = {name: {} for name in SIDES}
    with local_fleet(PAIR, pool=pool, concurrency=concurrency, imports=("bench.tasks",)) as bed:
        devices = bed.inventory.select(None)
        broker = redis.Redis.from_url(bed.broker_url)
        for round_ in range(rounds):
            with contextlib.ExitStack() as stack:
                sides = [stack.enter_context(SIDES[name](bed, devices, loglevel))
                         for name in _order(round_)]
                time.sleep(IDLE_S)
                for side in sides:
                    _add(found[side.name], _memory(side))
                    measures.warm_up(side)
                for name, times in measures.latency_ms_alternating(sides, calls).items():
                    _add(found[name], times)
                for side in sides:
                    _add(found[side.name], measures.throughput(side, tasks, broker))
    return {"pool": pool, "concurrency": concurrency, "devices": PAIR, "rounds": rounds,
            "tasks": tasks, "calls": calls, "loglevel": loglevel or "default (CatDog INFO, "
            "plain WARNING)", **_compared(found)}


def run_fanout(rounds: int, times: int, devices: int) -> dict[str, Any]:
    """``all:`` fan-out to ``devices`` solo workers, ``times`` per round and side; both fleets
    up in each round, the fan-outs interleaved."""
    found: dict[str, dict[str, list[float]]] = {name: {} for name in SIDES}
    with local_fleet(devices, imports=("bench.tasks",)) as bed:
        fleet = bed.inventory.select(None)
        for round_ in range(rounds):
            with contextlib.ExitStack() as stack:
                sides = [stack.enter_context(SIDES[name](bed, fleet, None))
                         for name in _order(round_)]
                for side in sides:
                    measures.warm_up(side)
                    side.gather(side.fanout())  # the first opens this side's producer channels
                for name, done in measures.fanout_alternating(sides, times).items():
                    for key, values in done.items():
                        found[name].setdefault(key, []).extend(values)
    return {"devices": devices, "messages": devices, "rounds": rounds, "times": times,
            **_compared(found)}


def _order(round_: int) -> list[str]:
    names = list(SIDES)
    return names if round_ % 2 == 0 else names[::-1]


def _memory(side: Side) -> dict[str, float]:
    """The side's idle workers, per worker (the mean of its devices' process trees)."""
    trees = [usage_mb(pid) for pid in side.pids]
    return {key: statistics.mean(t[key] for t in trees) for key in ("rss_mb", "pss_mb")}


def _add(into: dict[str, list[float]], values: dict[str, float]) -> None:
    for key, value in values.items():
        into.setdefault(key, []).append(value)


def _compared(found: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """Per measure: each side's summary and the ratio CatDog / plain."""
    out: dict[str, Any] = {}
    for key in found["catdog"]:
        mine, theirs = summary(found["catdog"][key]), summary(found["plain"].get(key, []))
        out[key] = {"catdog": mine, "plain": theirs, "ratio": ratio(mine, theirs)}
    return out
