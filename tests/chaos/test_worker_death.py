"""A power cut of a worker mid-task: its tasks run again elsewhere, within the bound.

Two devices share the capability ``chaos``. ``pa`` (prefork, 2 processes) is SIGKILLed, whole
process tree, while it runs two tasks. Its unacknowledged messages stop being renewed, and a
sweep by ``pb`` puts them back on their queue 60 s after ``pa``'s last heartbeat (the contract
allows 5 minutes). Meanwhile a task on ``pb`` that runs longer than that visibility timeout is
*not* delivered a second time: its live worker keeps renewing it. Tasks sent to ``pa`` itself
while it is down wait, and run once it is launched again.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import redis

from ops.results import READY
from tests.conftest import device_spec
from tests.probe import starts, write_probe

from .breaks import power_cut
from .ledger import settle

pytestmark = [pytest.mark.slow, pytest.mark.chaos, pytest.mark.timeout(420)]

REDELIVERY_BOUND_S = 300  # the contract: "within 5 minutes by default"
LONG_TASK_S = 75  # longer than the visibility timeout (60 s)


def test_a_power_cut_mid_task_reruns_its_tasks_elsewhere_and_loses_none(
        make_fleet, tmp_path: Path, redis_client: redis.Redis) -> None:
    module = f"chaos_{uuid.uuid4().hex[:8]}"
    fleet = make_fleet({"pa": device_spec(["chaos"], concurrency=2),
                        "pb": device_spec(["chaos"], pool="threads", concurrency=2)},
                       imports=[module])
    record = write_probe([fleet.folder, tmp_path], module).record  # type: ignore[attr-defined]
    assert [r.state for r in fleet.launch()] == [READY, READY]

    results = {0: record.on("pb").delay(0, LONG_TASK_S)}
    time.sleep(0.5)  # pb's first slot is taken by the long task
    results.update({n: record.on("cap:chaos").delay(n, 2.0) for n in range(1, 21)})
    deadline = time.monotonic() + 30
    while len([d for _, _, d in starts(redis_client, module) if d == "pa"]) < 2:
        assert time.monotonic() < deadline, "pa never started two tasks"
        time.sleep(0.05)
    cut_at = time.time()
    killed = power_cut(fleet, "pa")
    running_on_pa = {n for n, t, d in starts(redis_client, module) if d == "pa" and t > cut_at - 2}
    assert len(killed) >= 3 and len(running_on_pa) == 2  # main process, 2 pool processes

    results.update({n: record.on("pa").delay(n) for n in (101, 102)})  # pa is down: they wait
    deadline = time.time() + REDELIVERY_BOUND_S
    while not running_on_pa <= {n for n, t, _ in starts(redis_client, module) if t > cut_at}:
        assert time.time() < deadline, f"not re-run within {REDELIVERY_BOUND_S} s"
        time.sleep(0.5)
    rerun = [(n, t, d) for n, t, d in starts(redis_client, module) if t > cut_at and
             n in running_on_pa]
    assert {d for _, _, d in rerun} == {"pb"}  # on the device that could take them
    assert not [n for n, _, _ in starts(redis_client, module) if n in (101, 102)]  # waiting

    assert [r.state for r in fleet.launch(["pa"])] == [READY]  # pa is back: its queue drains
    tally = settle("worker power cut", results, redis_client, module, timeout=LONG_TASK_S + 60,
                   rerun_after_s=round(max(t for _, t, _ in rerun) - cut_at, 1)).report()
    assert tally.lost == 0 and tally.completed == tally.sent == 23
    assert tally.duplicates == len(running_on_pa)  # exactly the two cut off mid-run
    assert [n for n, _, _ in starts(redis_client, module)].count(0) == 1  # the long task: once
    fleet.stop(force=True)
