"""A worker that is connected but no longer consuming is noticed and restarted.

The state is made for real: Celery's own ``cancel_consumer`` remote control stops the worker
fetching from its capability queue while it stays connected, heartbeating and answering pings
(what celery/celery#8091 leaves behind after a reconnect). Tasks then wait on that queue. The
worker's watchdog sees the backlog, its free slot and no take for 30 s, and restarts the worker
in place: same process id and tmux pane, fresh consumer. Every task then runs, once.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import redis

from catdog import app
from catdog.records import Heartbeat, heartbeat_key
from catdog.routing import capability_queue
from ops import logs
from ops.results import READY
from tests.conftest import device_spec
from tests.probe import starts, write_probe

from .ledger import settle

pytestmark = [pytest.mark.slow, pytest.mark.chaos]


def heartbeat(client: redis.Redis, device: str) -> Heartbeat:
    raw = client.get(heartbeat_key(device))
    assert raw, f"no heartbeat from {device}"
    return Heartbeat.loads(raw)


def test_a_worker_connected_but_not_consuming_restarts_itself_and_drains(
        make_fleet, tmp_path: Path, redis_client: redis.Redis) -> None:
    module = f"chaos_{uuid.uuid4().hex[:8]}"
    fleet = make_fleet({"pw": device_spec(["chaos"], pool="solo")}, imports=[module])
    record = write_probe([fleet.folder, tmp_path], module).record  # type: ignore[attr-defined]
    assert [r.state for r in fleet.launch()] == [READY]
    before = heartbeat(redis_client, "pw")
    cancelled = app.control.cancel_consumer(capability_queue(["chaos"]),
                                            destination=[before.nodename], reply=True)
    assert cancelled and "ok" in next(iter(cancelled[0].values()))

    stuck_from = time.time()
    results = {n: record.on("cap:chaos").delay(n) for n in range(8)}
    time.sleep(5)
    assert starts(redis_client, module) == []  # stuck: a backlog the worker does not take
    assert app.control.ping(destination=[before.nodename], timeout=2)  # yet it answers
    assert time.time() - heartbeat(redis_client, "pw").time < 5  # and heartbeats

    tally = settle("connected but not consuming", results, redis_client, module, timeout=120)
    after = heartbeat(redis_client, "pw")
    tally.notes["restarted_after_s"] = round(after.started - stuck_from, 1)
    tally.report()
    assert tally.lost == 0 and tally.duplicates == 0 and tally.completed == 8
    assert after.pid == before.pid and after.started > before.started  # restarted in place
    log = logs.recent(fleet.inventory, fleet.inventory.devices["pw"], 200)
    assert "connected but not consuming" in log and "restarting the worker" in log
    fleet.stop(force=True)
