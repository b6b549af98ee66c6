"""``fab launch`` of 1 and of N SSH devices, alternating, and each worker's serve-to-READY delay.

Also, to explain the ratio: how busy the machine's cores were during each launch, the CPU the
coordinator itself spends (SSH, SFTP, Redis, pings: one Python process) and the CPU each worker
spends to start (its own user+system time at READY). On this machine all "devices" share the
same cores, so N starting workers compete for CPU that real devices would each have to themselves.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Any

import redis

from bench.stats import summary
from bench.testbed import ssh_fleet
from catdog.context import open_fleet
from catdog.records import heartbeat_key
from ops.launch import Launcher
from ops.results import READY
from ops.stop import Stopper


def worker_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a local process so far (the worker's main process)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot (``/proc/stat``)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run(rounds: int, many: int = 8) -> dict[str, Any]:
    """Launch 1, one per core (each device then has a core to itself) and ``many`` devices."""
    cores = os.cpu_count() or 1
    sizes = sorted({1, min(cores, many), many})
    walls: dict[int, list[float]] = {n: [] for n in sizes}
    own_cpu: dict[int, list[float]] = {n: [] for n in sizes}
    busy: dict[int, list[float]] = {n: [] for n in sizes}
    delays: list[float] = []
    cpu: list[float] = []
    failures: list[str] = []
    with ssh_fleet(many) as bed:
        launcher = Launcher(open_fleet(bed.inventory, bed.broker_url), timeout=60)
        stopper = Stopper(open_fleet(bed.inventory, bed.broker_url), force=True)
        client = redis.Redis.from_url(bed.broker_url)
        names = list(bed.inventory.devices)
        for round_ in range(rounds):
            for count in (sizes if round_ % 2 == 0 else sizes[::-1]):
                devices = bed.inventory.select(names[:count])
                started, cpu_before = time.monotonic(), time.process_time()
                busy_before = machine_busy_s()
                results = launcher.launch(devices)
                wall = time.monotonic() - started
                own_cpu[count].append(time.process_time() - cpu_before)
                busy[count].append((machine_busy_s() - busy_before) / (wall * cores))
                failures += [f"{r.device}: {r.reason}" for r in results if r.state != READY]
                walls[count].append(wall)
                delays += [r.serve_to_ready_s for r in results if r.serve_to_ready_s is not None]
                cpu += [c for c in (_cpu_of(client, r.nodename) for r in results) if c is not None]
                stopper.stop(devices)
        kind = bed.kind
    one = statistics.median(walls[1])
    found: dict[str, Any] = {"testbed": kind, "rounds": rounds, "devices": many, "cores": cores,
                             "sizes": sizes}
    for n in sizes:
        found[f"launch_{n}_s"] = summary(walls[n])
        found[f"ratio_{n}"] = round(statistics.median(walls[n]) / one, 2)
        found[f"coordinator_cpu_{n}_s"] = summary(own_cpu[n])
        found[f"machine_busy_{n}"] = summary(busy[n])
    found.update({
        "ratio": found[f"ratio_{many}"],
        "serve_to_ready_s": summary(delays),
        "worker_start_cpu_s": summary(cpu),
        "cpu_bound_s": round(statistics.median(cpu) * many / cores, 2) if cpu else None,
        "failures": failures,
    })
    return found


def _cpu_of(client: redis.Redis, nodename: str | None) -> float | None:
    if not nodename:
        return None
    device = nodename.split("@", 1)[0]
    raw = client.get(heartbeat_key(device))
    return worker_cpu_s(int(json.loads(raw)["pid"])) if raw else None

