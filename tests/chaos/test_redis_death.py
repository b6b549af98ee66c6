"""SIGKILL of the embedded Redis with tasks queued and tasks running: none is lost.

As a user runs it: `fab` commands and a producer script, each its own process, on the inventory's
own embedded Redis (append-only file, fsync every second, never evicting). ``cam`` is working
when Redis dies; ``probe`` is not running, so its 20 tasks wait in the queue. `fab launch`
restarts Redis on its port: ``cam`` reconnects by itself (ALREADY RUNNING) and goes back to
consuming, ``probe`` starts and drains its queue.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import redis
import yaml

from ops.embedded_redis import EmbeddedRedis
from tests.conftest import device_spec
from tests.probe import write_probe
from tests.test_cli import fab
from tests.tmuxserver import end_server

from .ledger import tally_of
from .producer import produce

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

@pytest.fixture
def inventory(tmp_path: Path):
    socket = f"catdog-chaos-{uuid.uuid4().hex[:8]}"
    module = f"chaos_{uuid.uuid4().hex[:8]}"
    path = tmp_path / "catdog.yaml"
    path.write_text(yaml.safe_dump({
        "tmux_socket": socket, "imports": [module],
        "devices": {"cam": device_spec(["camera"], concurrency=2),
                    "probe": device_spec(["sensor"], pool="solo")},
    }))
    write_probe([tmp_path], module)
    yield path, module
    fab("stop", "--force", "--inventory", str(path))
    end_server(socket)


def test_a_killed_embedded_redis_loses_no_task_and_workers_come_back(inventory) -> None:
    path, module = inventory
    assert fab("launch", "--inventory", str(path), "--devices", "cam").returncode == 0
    sent = produce(path, module, "send", "probe", "0", "20", "0")  # probe is not running: queued
    sent |= produce(path, module, "send", "cam", "100", "10", "0.5")  # cam works on these
    time.sleep(1.5)  # the append-only file is synced every second
    state = path.parent / ".catdog"
    pid = int((state / "redis.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    killed_at = time.time()

    relaunched = fab("launch", "--inventory", str(path), "--json", "--timeout", "60")
    assert relaunched.returncode == 0, relaunched.stdout + relaunched.stderr
    assert {r["device"]: r["state"] for r in json.loads(relaunched.stdout)} == {
        "cam": "ALREADY RUNNING", "probe": "READY"}  # cam reconnected to the new Redis itself
    assert int((state / "redis.pid").read_text()) != pid
    sent |= produce(path, module, "send", "cam", "200", "3", "0")  # consuming again

    done = produce(path, module, "get", stdin=json.dumps(sent))
    client = redis.Redis.from_url(EmbeddedRedis(state).url)
    runs = [(int(n), float(t), d) for n, t, d in
            (raw.decode().split() for raw in client.lrange(f"{module}:starts", 0, -1))]
    tally = tally_of("embedded Redis SIGKILL", done, runs,
                     back_after_s=round(min(t for _, t, _ in runs if t > killed_at) - killed_at,
                                        1)).report()
    assert tally.lost == 0 and tally.completed == tally.sent == 33
    assert {n for n, _, d in runs if d == "probe"} == set(range(20))
