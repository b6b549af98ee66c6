"""The kill switch on real workers: observed by when tasks start (recorded by the tasks in Redis).

None starts more than 2 s after ``engage`` returns, queued tasks stay queued, a worker restarted
while the switch is on stays paused, all run after ``release`` (none twice), and ``hard``
terminates a running task and re-queues it.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from catdog import killswitch
from catdog.records import KILLSWITCH_KEY
from catdog.routing import ANY_QUEUE
from ops import api
from ops.results import READY
from ops.status import queue_keys, status

from .conftest import FleetUnderTest, device_spec

pytestmark = pytest.mark.slow

PROBE = '''
import os, socket, time
import redis
from catdog import app
from catdog.fleet import fleet

_client = None

@app.task(name="{module}.record")
def record(n, seconds):
    global _client
    _client = _client or redis.Redis.from_url(os.environ["CATDOG_BROKER_URL"])
    _client.rpush("{module}:starts", f"{{n}} {{time.time()}} {{fleet.device.name}}")
    time.sleep(seconds)
    return n
'''


@pytest.fixture
def probe(tmp_path: Path) -> Iterator[tuple[str, object]]:
    """A task module the workers import (``imports:``) that records each start in Redis."""
    module = f"ks_probe_{tmp_path.name[-6:].replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(PROBE.format(module=module))
    sys.path.insert(0, str(tmp_path))
    try:
        yield module, importlib.import_module(module)
    finally:
        sys.path.remove(str(tmp_path))


def make(make_fleet, tmp_path: Path, module: str, devices: dict) -> FleetUnderTest:
    fleet = make_fleet(devices, imports=[module])
    for py in tmp_path.glob("ks_probe_*.py"):  # local workers run in the inventory's folder
        (fleet.folder / py.name).write_text(py.read_text())
    return fleet


def starts(client: redis.Redis, module: str) -> list[tuple[int, float, str]]:
    rows = [raw.decode().split() for raw in client.lrange(f"{module}:starts", 0, -1)]
    return [(int(n), float(t), d) for n, t, d in rows]


def backlog(client: redis.Redis) -> int:
    return sum(client.llen(k) for k in queue_keys(ANY_QUEUE))


@pytest.fixture(autouse=True)
def switch_off(redis_client: redis.Redis) -> Iterator[None]:
    yield
    redis_client.delete(KILLSWITCH_KEY)


def test_kill_switch_stops_starts_holds_across_restart_and_resumes(
        make_fleet, tmp_path: Path, probe, redis_client: redis.Redis) -> None:
    module, tasks_module = probe
    fleet = make(make_fleet, tmp_path, module, {
        "pa": device_spec([], concurrency=2), "pb": device_spec([], pool="threads", concurrency=2)})
    assert [r.state for r in fleet.launch()] == [READY, READY]
    record = tasks_module.record  # type: ignore[attr-defined]
    sent = [record.delay(n, 0.3) for n in range(40)]
    time.sleep(1.0)

    report = killswitch.engage("test: stop everything", by="pytest")
    on_returned = time.time()
    assert [(r["device"], r["state"]) for r in report.devices] == [("pa", "paused"),
                                                                    ("pb", "paused")]
    assert killswitch.current().on and killswitch.current().reason == "test: stop everything"
    time.sleep(3.0)
    before = starts(redis_client, module)
    last_start = max(t for _, t, _ in before)
    assert last_start <= on_returned + 2.0, last_start - on_returned
    assert 0 < len(before) < 40 and backlog(redis_client) == 40 - len(before)
    rows = status(fleet.inventory, fleet.inventory.select(None), redis_client)
    assert [(r["device"], r["state"]) for r in rows] == [("pa", "paused"), ("pb", "paused")]

    restarted = api.restart(str(fleet.path), "pb")
    assert restarted["pb"].state == READY
    time.sleep(2.5)
    assert len(starts(redis_client, module)) == len(before)  # the new worker stayed paused
    assert json.loads(redis_client.get("catdog:heartbeat:pb") or b"{}")["paused"] is True

    killswitch.release(by="pytest")
    off_returned = time.time()
    assert sorted(r.get(timeout=60) for r in sent) == list(range(40))
    after = starts(redis_client, module)
    first_after = min(t for _, t, _ in after[len(before):])
    assert first_after <= off_returned + 2.0, first_after - off_returned
    assert sorted(n for n, _, _ in after) == list(range(40))  # each ran once
    print(f"kill switch: last start {last_start - on_returned:+.3f}s after --on returned; "
          f"first start {first_after - off_returned:+.3f}s after --off returned")


def test_hard_kill_switch_terminates_the_running_task_and_requeues_it(
        make_fleet, tmp_path: Path, probe, redis_client: redis.Redis) -> None:
    module, tasks_module = probe
    fleet = make(make_fleet, tmp_path, module, {"pa": device_spec([], concurrency=1)})
    assert fleet.launch()[0].state == READY
    long_one = tasks_module.record.delay(7, 4.0)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while not starts(redis_client, module) and time.monotonic() < deadline:
        time.sleep(0.05)
    report = killswitch.engage("hard stop", hard=True, by="pytest")
    assert report.devices[0]["state"] == "paused"
    assert "1 running task(s) terminated and re-queued" in report.devices[0]["detail"]
    deadline = time.monotonic() + 5
    while backlog(redis_client) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backlog(redis_client) == 1  # back in its queue, not lost
    assert long_one.state != "SUCCESS"
    killswitch.release(by="pytest")
    assert long_one.get(timeout=30) == 7
    assert [n for n, _, _ in starts(redis_client, module)] == [7, 7]  # terminated, then ran again
