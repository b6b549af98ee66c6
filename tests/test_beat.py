"""The scheduler: one active fleet-wide however many run (here two, as from two machines sharing
the broker), a standby that takes over within 30 s, no burst after a gap, windows skip ticks, and
``fab beat`` in tmux."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest
import redis

from ops.beat import LAST_RUN_KEY, LOCK_KEY, node_key
from ops.results import READY

from .conftest import ROOT, device_spec
from .probe import starts, write_probe
from .test_cli import _env, fab

pytestmark = pytest.mark.slow


def ticks(client: redis.Redis, module: str, n: int) -> list[float]:
    return sorted(t for m, t, _ in starts(client, module) if m == n)


def closed_window() -> str:
    minute = (dt.datetime.now() + dt.timedelta(minutes=30)).minute
    return f":{minute:02d}-:{minute:02d}"


@pytest.fixture
def beat_fleet(make_fleet, redis_client: redis.Redis):
    module = f"beat_probe_{uuid.uuid4().hex[:8]}"
    fleet = make_fleet({"pa": device_spec([], pool="threads", concurrency=2)}, imports=[module],
                       schedule={
                           "tick": {"task": f"{module}.record", "every": "1s", "on": "pa",
                                    "args": [1]},
                           "closed": {"task": f"{module}.record", "every": "1s", "on": "pa",
                                      "args": [2], "window": closed_window()},
                       })
    write_probe([fleet.folder], module)
    assert fleet.launch()[0].state == READY
    redis_client.delete(LOCK_KEY, LAST_RUN_KEY)
    yield fleet, module
    redis_client.delete(LOCK_KEY, LAST_RUN_KEY)


def start_scheduler(fleet, machine: str, redis_url: str) -> subprocess.Popen[str]:
    """A scheduler as if on another machine: its own copy of the inventory and task module."""
    folder = fleet.folder / machine
    folder.mkdir()
    for path in fleet.folder.glob("*.*"):
        if path.is_file():
            shutil.copy(path, folder / path.name)
    return subprocess.Popen(
        [sys.executable, "-m", "ops.beat", "--inventory", str(folder / "catdog.yaml"),
         "--node", machine], cwd=folder, env={**_env(), "CATDOG_BROKER_URL": redis_url,
                                                "PYTHONPATH": str(ROOT)},
        stdout=open(folder / "beat.log", "w"), stderr=subprocess.STDOUT, text=True)


def roles(client: redis.Redis, machines: list[str]) -> dict[str, str]:
    found = {}
    for machine in machines:
        raw = client.get(node_key(machine))
        if raw:
            found[machine] = json.loads(raw)["role"]
    return found


def test_two_schedulers_fire_once_per_period_and_the_standby_takes_over(
        beat_fleet, redis_client: redis.Redis, redis_url: str) -> None:
    fleet, module = beat_fleet
    machines = ["machine-a", "machine-b"]
    procs = {m: start_scheduler(fleet, m, redis_url) for m in machines}
    try:
        time.sleep(8)
        first = ticks(redis_client, module, 1)
        assert 5 <= len(first) <= 9, first  # one scheduler's worth (two would give ~16)
        assert sorted(roles(redis_client, machines).values()) == ["active", "standby"]
        gaps = [b - a for a, b in itertools.pairwise(first)]
        assert min(gaps) > 0.5, gaps  # never two ticks of one period

        active = next(m for m, r in roles(redis_client, machines).items() if r == "active")
        procs[active].send_signal(signal.SIGKILL)
        procs[active].wait(timeout=10)
        killed_at = time.time()
        deadline = time.monotonic() + 35
        while (not [t for t in ticks(redis_client, module, 1) if t > killed_at]
               and time.monotonic() < deadline):
            time.sleep(0.2)
        after = [t for t in ticks(redis_client, module, 1) if t > killed_at]
        assert after, "the standby never took over"
        takeover = after[0] - killed_at
        assert takeover <= 30, takeover
        time.sleep(4)
        resumed = [t for t in ticks(redis_client, module, 1) if t > killed_at]
        assert len(resumed) <= 6, resumed  # the missed ticks did not fire in a burst
        standby = next(m for m in machines if m != active)
        assert roles(redis_client, [standby]) == {standby: "active"}
        assert ticks(redis_client, module, 2) == []  # outside its window: skipped
        print(f"beat takeover after the active scheduler was killed: {takeover:.1f}s")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=10)


def test_fab_beat_runs_in_tmux_once_and_fab_stop_stops_it(beat_fleet,
                                                          redis_client: redis.Redis,
                                                          redis_url: str) -> None:
    fleet, module = beat_fleet
    env = {**_env(), "CATDOG_BROKER_URL": redis_url}
    started = fab("beat", "--inventory", str(fleet.path), "--json", env=env)
    assert started.returncode == 0, started.stdout + started.stderr
    assert [(r["device"], r["state"]) for r in json.loads(started.stdout)] == [("beat", "ACTIVE")]
    assert "catdog-beat" in fleet.sessions()
    again = fab("beat", "--inventory", str(fleet.path), "--json", env=env)
    assert [r["state"] for r in json.loads(again.stdout)] == ["ALREADY RUNNING"]
    deadline = time.monotonic() + 10
    while len(ticks(redis_client, module, 1)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(ticks(redis_client, module, 1)) >= 2
    stopped = fab("stop", "--inventory", str(fleet.path), "--json", env=env)
    rows = {r["device"]: r["state"] for r in json.loads(stopped.stdout)}
    assert rows == {"pa": "STOPPED", "beat": "STOPPED"}, stopped.stderr
    assert fleet.sessions() == []
    assert redis_client.get(LOCK_KEY) is None  # released on a clean stop
    assert os.path.exists(fleet.folder / ".catdog" / "logs" / "beat.log")
