"""One freshness test for a worker's heartbeat: ``fab status``, the metrics' and the kill switch's
list of live workers all read the record in Redis and agree on who is alive."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import redis
import yaml

from catdog import killswitch
from catdog.loader import load_inventory
from catdog.records import OFFLINE_AFTER_S, Heartbeat, heartbeat_key, live_nodes
from ops.status import OFFLINE, status


def test_status_metrics_and_the_kill_switch_agree_on_which_heartbeat_is_fresh(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis) -> None:
    tag = uuid.uuid4().hex[:6]
    # just fresh, just stale (by less than status rounds its age to), and long gone
    ages = {f"fresh-{tag}": OFFLINE_AFTER_S - 0.04, f"stale-{tag}": OFFLINE_AFTER_S + 0.04,
            f"gone-{tag}": 3 * OFFLINE_AFTER_S}
    path = tmp_path / "catdog.yaml"
    path.write_text(yaml.safe_dump({"broker": redis_url, "devices": {
        name: {"host": f"10.0.0.{i + 1}", "allow_root": True} for i, name in enumerate(ages)}}))
    inventory = load_inventory(path)
    now = time.time()
    for name, age in ages.items():
        beat = Heartbeat(name, f"celery@{name}", 1, time=now - age, started=now - 60)
        redis_client.set(heartbeat_key(name), beat.dumps(), ex=60)

    rows = status(inventory, list(inventory.devices.values()), redis_client, now=now)
    by_status = {r["device"] for r in rows if r["state"] != OFFLINE}
    by_metrics = set(live_nodes(redis_client, list(ages), now=now))
    assert by_status == by_metrics == {f"fresh-{tag}"}
    assert {r["device"]: r["reason"] for r in rows if r["state"] == OFFLINE} == {
        f"stale-{tag}": "last heartbeat 8s ago", f"gone-{tag}": "last heartbeat 24s ago"}

    # the kill switch's report reads the clock itself: time only moves on, so the stale stay stale
    reported = {name: killswitch._reported(beat, on=False)
                for name, beat in killswitch._heartbeats(redis_client, inventory).items()}
    assert reported[f"stale-{tag}"] == reported[f"gone-{tag}"] == "offline"


def test_a_heartbeat_is_fresh_for_offline_after_s_seconds() -> None:
    beat = Heartbeat("pi", "celery@pi", 1, time=1000.0, started=990.0)
    assert beat.age(1003.0) == 3.0
    assert beat.is_fresh(1000.0 + OFFLINE_AFTER_S)
    assert not beat.is_fresh(1000.0 + OFFLINE_AFTER_S + 0.01)
