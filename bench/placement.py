"""What a predicate costs the producer: placing ``cap:sensor&mem>=300&temp<70`` against 32 devices'
heartbeats in Redis, next to the plain ``cap:sensor`` (goal: under 1 ms more), and the plain
target through the placing path against the route alone (goal: nothing more).

No workers: the 32 heartbeats are written as workers write them (facts included, written again
before each series so they stay fresh), into an embedded Redis of its own; the calls are timed
in the process.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

PLAIN = "cap:sensor"
PREDICATE = "cap:sensor&mem>=300&temp<70"


def _heartbeats(client: Any, names: list[str]) -> None:
    """Each device's records as its worker writes them: heartbeat, live record, static facts."""
    from catdog.records import (
        FACTS_TTL_S,
        HEARTBEAT_TTL_S,
        Heartbeat,
        Live,
        facts_key,
        heartbeat_key,
        live_key,
    )

    now = time.time()
    for i, name in enumerate(names):
        facts = {"arch": "aarch64", "cores": 4, "mem_total": 3800.0, "mem": 200.0 + 50 * i,
                 "python": "3.11.2", "os": "Debian GNU/Linux 12 (bookworm)",
                 "model": "Raspberry Pi 4 Model B Rev 1.4", "temp": 40.0 + i, "throttled": 0,
                 "load": 0.1, "detected": ["camera"]}
        beat = Heartbeat(name, f"{name}@bench", 100 + i, time=now, started=now,
                         active=i % 3, queues=["catdog.any"], facts=facts)
        client.set(heartbeat_key(name), beat.dumps(), ex=HEARTBEAT_TTL_S)
        client.set(live_key(name), Live.of(beat).dumps(), ex=HEARTBEAT_TTL_S)
        static = {k: v for k, v in facts.items() if k not in ("mem", "temp", "throttled", "load")}
        client.set(facts_key(name), json.dumps({**static, "started": now}), ex=FACTS_TTL_S)


def _times_us(call: Callable[[], Any], samples: int) -> dict[str, float]:
    for _ in range(20):  # connections made, caches warm
        call()
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1e6)
    ordered = sorted(times)
    return {"median_us": round(statistics.median(times), 1),
            "p95_us": round(ordered[int(len(ordered) * 0.95) - 1], 1),
            "max_us": round(ordered[-1], 1)}


def run(samples: int = 2000, count: int = 32) -> dict[str, Any]:
    import redis

    from catdog.inventory import BROKER_ENV
    from ops.embedded_redis import EmbeddedRedis

    folder = Path(tempfile.mkdtemp(prefix="catdog-bench-placement-"))
    server = EmbeddedRedis(folder / ".catdog")
    url = server.ensure_running()
    try:
        os.environ[BROKER_ENV] = url
        names = [f"pi{i:02d}" for i in range(count)]
        inventory = folder / "catdog.yaml"
        inventory.write_text(yaml.safe_dump({"devices": {
            n: {"host": f"10.9.0.{i + 1}", "capabilities": ["sensor"]}
            for i, n in enumerate(names)}}))
        from catdog.fleet import fleet

        fleet.use(inventory)
        client = redis.Redis.from_url(url)
        found: dict[str, Any] = {"devices": count, "samples": samples}
        for key, call in (("route_plain", lambda: fleet.route((), PLAIN)),
                          ("place_plain", lambda: fleet.place((), PLAIN)),
                          ("place_predicate", lambda: fleet.place((), PREDICATE))):
            _heartbeats(client, names)
            found[key] = _times_us(call, samples)
        chosen = fleet.place((), PREDICATE).queue
    finally:
        server.stop()
    found["chosen"] = chosen
    found["extra_us"] = round(found["place_predicate"]["median_us"]
                              - found["place_plain"]["median_us"], 1)
    found["plain_extra_us"] = round(found["place_plain"]["median_us"]
                                    - found["route_plain"]["median_us"], 2)
    return found


def rows(found: dict[str, Any]) -> list[str]:
    def cell(key: str) -> str:
        t = found[key]
        return f"median {t['median_us']:.1f} us (p95 {t['p95_us']:.1f}, max {t['max_us']:.1f})"

    return [f"placement with {found['devices']} devices' heartbeats ({found['samples']} calls)",
            f"  {PLAIN!r} route only      {cell('route_plain')}",
            f"  {PLAIN!r} placed          {cell('place_plain')}  "
            f"(+{found['plain_extra_us']:.2f} us; goal: nothing more)",
            f"  {PREDICATE!r}  {cell('place_predicate')}  "
            f"(+{found['extra_us']:.1f} us; goal < 1000 us)"]
