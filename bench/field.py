"""``python -m bench --profile field``: CatDog against plain Celery where a fleet really is:
Pi-sized devices (a CPU quota of a Pi Zero 2W's core, 512 MB) reaching Redis over a link that
adds 2 ms (LAN) or 10 ms (Wi-Fi) to every round trip (:mod:`bench.fieldbed`).

One run: the link's own round trip (and the proxy's cost at 0 ms); then for each fleet size
both sides up on the same devices, and for each link round trips (interleaved call by call),
throughput of short tasks (one side at a time) and, at the largest size (``all:`` is every
device of the inventory, which then are all up), fan-out; CatDog's ``fab launch`` of the
fleet against one device, READY after start, ``fab status`` of 100 devices' heartbeats and the
broker's CPU and memory while the devices heartbeat; and, one side alone on one device, the
idle worker's memory and broker traffic.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any

import redis
from celery.exceptions import TimeoutError as CeleryTimeout

from bench import measures
from bench.cpu import tree_cpu_s
from bench.fieldbed import FieldBed, field_fleet
from bench.memory import usage_mb
from bench.sides import Side, catdog_side, plain_side
from bench.stats import percentile, ratio, summary

#: round trips the link adds (ms): 0 (the proxy alone), a LAN, Wi-Fi under load
LINKS_MS = (0.0, 2.0, 10.0)
LAN_MS = 2.0
#: the least link round trips one call needs: the message to the worker, the result back
FLOOR_TRIPS = 2
IDLE_SETTLE_S = 4.0
STATUS_DEVICES = 100


def run(sizes: list[int], links_ms: list[float], calls: int, tasks_per_device: int,
        fanouts: int, idle_s: float, factor: float) -> dict[str, Any]:
    found: dict[str, Any] = {"sizes": sizes, "links_ms": links_ms, "calls": calls,
                             "tasks_per_device": tasks_per_device, "fanouts": fanouts,
                             "idle_window_s": idle_s, "factor": factor, "failures": []}
    with field_fleet(max(sizes), factor) as field:
        found["quota"] = {"period_us": 10_000, "quota_us": field.cgroups.quota_us,
                          "memory_mb": field.cgroups.memory_bytes // 2**20}
        found["calibration"] = _calibration(field)
        found["link"] = _link(field, links_ms)
        field.set_round_trip_ms(LAN_MS)
        found["idle"] = _idle(field, idle_s)
        for size in sizes:
            found[f"size_{size}"] = _size(field, size, links_ms, calls, tasks_per_device,
                                          fanouts, found)
    return found


def _calibration(field: FieldBed) -> dict[str, float]:
    """``python -c 'import celery'``: on a core here, and in a Pi-sized cgroup."""
    import subprocess
    import sys

    native, pi = [], []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import celery"], check=True)
        native.append(time.perf_counter() - started)
        pi.append(field.cgroups.timed("calibration", ["-c", "import celery"]))
    return {"import_celery_here_s": round(min(native), 3), "import_celery_pi_s":
            round(min(pi), 3), "slowdown": round(min(pi) / min(native), 2)}


def _ping_ms(client: redis.Redis, n: int = 200) -> dict[str, float]:
    client.ping()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        client.ping()
        times.append((time.perf_counter() - started) * 1000)
    return {"p50": round(percentile(times, 0.5), 3), "p95": round(percentile(times, 0.95), 3)}


def _link(field: FieldBed, links_ms: list[float]) -> dict[str, Any]:
    """A Redis PING's round trip: direct, and through the proxy at each link."""
    out: dict[str, Any] = {"direct": _ping_ms(field.direct())}
    for added in links_ms:
        field.set_round_trip_ms(added)
        out[f"{added:g}"] = _ping_ms(redis.Redis.from_url(field.bed.broker_url))
    out["proxy_cost_ms"] = round(out["0"]["p50"] - out["direct"]["p50"], 3) if "0" in out \
        else None
    return out


def _commands(client: redis.Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(stat["calls"])
            for name, stat in client.info("commandstats").items()}


def _idle(field: FieldBed, window_s: float) -> dict[str, Any]:
    """One side alone on ``d1``: its idle worker's memory (process tree, and what the cgroup is
    charged) and the Redis commands it sends a second, by command."""
    devices = field.bed.inventory.select(["d1"])
    out: dict[str, Any] = {}
    direct = field.direct()
    for name, side_of in (("catdog", lambda: catdog_side(field.bed, devices)),
                          ("plain", lambda: plain_side(field.bed, devices,
                                                       python=field.plain_python))):
        with side_of() as side:
            measures.warm_up(side)
            time.sleep(IDLE_SETTLE_S)
            before = _commands(direct)
            time.sleep(window_s)
            after = _commands(direct)
            delta = {k: v - before.get(k, 0) for k, v in after.items()}
            delta["info"] = delta.get("info", 1) - 1  # the first INFO counts itself
            per_s = {k: round(v / window_s, 2) for k, v in sorted(delta.items()) if v > 0}
            memory = usage_mb(side.pids[0])
            out[name] = {"commands_per_s": round(sum(delta.values()) / window_s, 2),
                         "by_command_per_s": per_s, "rss_mb": memory["rss_mb"],
                         "pss_mb": memory["pss_mb"],
                         "cgroup_mb": round(field.cgroups.memory_mb(f"d1-{name}"), 1)}
    for key in ("commands_per_s", "rss_mb", "pss_mb", "cgroup_mb"):
        out[f"{key}_ratio"] = round(out["catdog"][key] / out["plain"][key], 3) \
            if out["plain"][key] else None
    return out


def _size(field: FieldBed, size: int, links_ms: list[float], calls: int, per_device: int,
          fanouts: int, found: dict[str, Any]) -> dict[str, Any]:
    devices = field.bed.inventory.select([f"d{i}" for i in range(1, size + 1)])
    out: dict[str, Any] = {"devices": size}
    field.set_round_trip_ms(LAN_MS)
    with contextlib.ExitStack() as stack:
        started = time.monotonic()
        catdog = stack.enter_context(catdog_side(field.bed, devices))
        out["launch_s"] = round(time.monotonic() - started, 3)
        out["serve_to_ready_s"] = summary(list(catdog.ready_delays))
        plain = stack.enter_context(plain_side(field.bed, devices, python=field.plain_python))
        sides: list[Side] = [catdog, plain]
        out["broker_while_idle"] = _broker_load(field, 5.0)
        if size >= 32 or size == max(found["sizes"]):
            out["status"] = _status(field, devices)
        for added in links_ms:
            field.set_round_trip_ms(added)
            link_rtt = found["link"][f"{added:g}"]["p50"]
            for side in sides:
                measures.warm_up(side)
            per: dict[str, Any] = {}
            latency = measures.latency_ms_alternating(sides, calls)
            for side in sides:
                tp = measures.throughput(side, per_device * size, field.direct(),
                                         sender_url=field.direct_url)
                per[side.name] = {**latency[side.name], **tp,
                                  "per_device_tasks_per_s": round(tp["tasks_per_s"] / size, 2)}
            if size > 1 and size == max(found["sizes"]) and fanouts:  # `all:` is every device
                try:
                    done = measures.fanout_alternating(sides, fanouts)
                except CeleryTimeout as exc:  # said in the results, the rest still measured
                    found["failures"].append(f"{size} devices, +{added:g} ms: a fan-out's "
                                             f"results did not all come: {exc!r}")
                    done = {}
                for name, values in done.items():
                    per[name].update({f"fanout_{k}": summary(v) for k, v in values.items()})
            floor = FLOOR_TRIPS * link_rtt
            for name in per:
                per[name]["floor_ms"] = round(floor, 3)
                per[name]["p50_to_floor"] = round(per[name]["p50"] / floor, 2) if floor else None
            per["ratios"] = {key: ratio(_one(per["catdog"][key]), _one(per["plain"][key]))
                             for key in ("p50", "p95", "tasks_per_s", "commands_per_task",
                                         "worker_cpu_us")}
            if "fanout_total_ms" in per["catdog"] and "fanout_total_ms" in per["plain"]:
                for key in ("fanout_producer_ms", "fanout_total_ms", "fanout_writes"):
                    per["ratios"][key] = ratio(per["catdog"][key], per["plain"][key])
            out[f"link_{added:g}"] = per
    return out


def _one(value: float) -> dict[str, float]:
    return {"median": value}


def _broker_load(field: FieldBed, window_s: float) -> dict[str, float]:
    """The broker's (the coordinator's Redis) CPU share and memory while the fleet idles and
    heartbeats (both sides up)."""
    before = tree_cpu_s(field.redis_pid)
    commands = sum(_commands(field.direct()).values())
    time.sleep(window_s)
    cpu = tree_cpu_s(field.redis_pid) - before
    commands = sum(_commands(field.direct()).values()) - commands - 1
    return {"redis_cpu_percent": round(cpu / window_s * 100, 2),
            "redis_rss_mb": usage_mb(field.redis_pid)["rss_mb"],
            "commands_per_s": round(commands / window_s, 1)}


def _status(field: FieldBed, live: list[Any]) -> dict[str, Any]:
    """``fab status`` of :data:`STATUS_DEVICES` devices: the live ones' own heartbeats and, for
    the rest (SSH devices never contacted), copies of those records under their names, fresh."""
    import json

    import yaml

    from catdog.loader import load_inventory
    from catdog.records import heartbeat_key
    from ops.status import status

    folder = field.bed.inventory.path.parent
    spec = yaml.safe_load(field.bed.inventory.path.read_text())
    extra = [f"x{i}" for i in range(len(live) + 1, STATUS_DEVICES + 1)]
    spec["devices"].update({n: {"host": f"10.99.{i // 250}.{i % 250 + 1}", "capabilities":
                                ["bench"]} for i, n in enumerate(extra)})
    path = folder / "status-100.yaml"
    path.write_text(yaml.safe_dump(spec))
    inventory = load_inventory(path)
    direct = field.direct()
    beats = [json.loads(b) for b in direct.mget([heartbeat_key(d.name) for d in live]) if b]
    devices = inventory.select([*(d.name for d in live), *extra])

    def refresh() -> None:
        pipe = direct.pipeline(transaction=False)
        for i, name in enumerate(extra):
            beat = {**beats[i % len(beats)], "device": name, "time": time.time()}
            pipe.set(heartbeat_key(name), json.dumps(beat), ex=60)
        pipe.execute()

    out: dict[str, Any] = {"devices": len(devices)}
    for label, client in (("direct", direct),
                          ("lan", redis.Redis.from_url(field.bed.broker_url))):
        refresh()
        status(inventory, devices, client)
        times, cpu = [], time.process_time()
        for _ in range(50):
            started = time.perf_counter()
            rows = status(inventory, devices, client)
            times.append((time.perf_counter() - started) * 1000)
        out[label] = {"p50_ms": round(statistics.median(times), 2),
                      "p95_ms": round(percentile(times, 0.95), 2),
                      "cpu_ms": round((time.process_time() - cpu) / 50 * 1000, 2),
                      "states": sorted({r["state"] for r in rows}), "rows": len(rows)}
    direct.delete(*[heartbeat_key(n) for n in extra])
    return out
