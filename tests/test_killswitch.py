"""The kill switch on real workers: observed by when tasks start (recorded by the tasks in Redis).

None starts more than 2 s after ``engage`` returns, queued tasks stay queued, a worker restarted
while the switch is on stays paused, all run after ``release`` (none twice), and ``hard``
terminates a running task and re-queues it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from catdog import killswitch
from catdog.records import KILLSWITCH_KEY
from catdog.routing import ANY_QUEUE, queue_keys
from ops import api
from ops.results import READY
from ops.status import status

from .conftest import FleetUnderTest, device_spec
from .probe import starts, write_probe

pytestmark = pytest.mark.slow

@pytest.fixture
def probe(tmp_path: Path) -> tuple[str, Any]:
    module = f"ks_probe_{uuid.uuid4().hex[:8]}"
    return module, write_probe([tmp_path], module)


def make(make_fleet, tmp_path: Path, module: str, devices: dict) -> FleetUnderTest:
    fleet = make_fleet(devices, imports=[module])
    write_probe([fleet.folder], module)  # local workers run in the inventory's folder
    return fleet


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
    deadline = time.monotonic() + 20  # the pool notices its lost process in its own time
    while backlog(redis_client) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backlog(redis_client) == 1  # back in its queue, not lost
    assert long_one.state != "SUCCESS"
    killswitch.release(by="pytest")
    assert long_one.get(timeout=30) == 7
    assert [n for n, _, _ in starts(redis_client, module)] == [7, 7]  # terminated, then ran again


def test_a_missed_broadcast_is_caught_up_on_every_other_heartbeat(redis_client: redis.Redis
                                                                  ) -> None:
    """The heartbeat reads the switch back (one ``GET``) on one beat in two, and a worker whose
    cached flag differs from the recorded switch follows it in its event loop."""
    from workers.killswitch import READ_EVERY_BEATS, KillSwitch

    class Hub:
        def __init__(self) -> None:
            self.calls: list[Any] = []

        def call_soon(self, fn: Any, *args: Any) -> None:
            self.calls.append((fn, args))

    switch, hub = KillSwitch(), Hub()
    switch.hub = hub
    redis_client.set(KILLSWITCH_KEY, json.dumps({"on": True, "reason": "t", "by": "t",
                                                 "at": time.time()}))
    queued = []
    try:
        for _ in range(2 * READ_EVERY_BEATS):
            pipe = redis_client.pipeline(transaction=False)
            deliver = switch.on_beat(pipe)
            queued.append(len(pipe))
            if deliver is not None:
                deliver(pipe.execute())
    finally:
        redis_client.delete(KILLSWITCH_KEY)
    assert queued == ([1] + [0] * (READ_EVERY_BEATS - 1)) * 2
    assert len(hub.calls) == 2 and hub.calls[0][1][0].on is True  # to be followed, each read
