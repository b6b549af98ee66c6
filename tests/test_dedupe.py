"""``apply_async(dedupe_key=..., dedupe_for=...)`` on a real worker: a second call within the
period returns the first one's result instead of sending, across producer processes at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import pytest
import redis

from catdog.dedupe import dedupe_key
from catdog.errors import UsageError
from catdog.inventory import INVENTORY_ENV
from tests.conftest import ROOT, FleetUnderTest, device_spec
from tests.probe import starts, write_probe

PRODUCER = """
import sys
from {module} import record
r = record.apply_async((int(sys.argv[1]),), dedupe_key=sys.argv[2], dedupe_for=60)
print(r.id, flush=True)
"""

pytestmark = pytest.mark.slow


@pytest.fixture
def probed(make_fleet: Callable[..., FleetUnderTest]) -> tuple[FleetUnderTest, str, object]:
    module = f"dd_probe_{uuid.uuid4().hex[:8]}"
    f = make_fleet({"pi": device_spec([], concurrency=2)}, imports=[module])
    tasks = write_probe([f.folder], module)
    assert [r.state for r in f.launch()] == ["READY"]
    yield f, module, tasks
    f.stop(force=True)


def test_a_second_call_within_the_period_returns_the_first_result(
        probed: tuple, redis_client: redis.Redis) -> None:
    _, module, tasks = probed
    first = tasks.record.apply_async((1,), dedupe_key="nightly-2026-12-02", dedupe_for=60)
    again = tasks.record.apply_async((2,), dedupe_key="nightly-2026-12-02", dedupe_for=60)
    assert again.id == first.id and again.get(timeout=20) == 1
    other = tasks.record.apply_async((3,), dedupe_key="nightly-2026-12-03", dedupe_for=0.5)
    assert other.id != first.id and other.get(timeout=20) == 3
    time.sleep(0.6)  # the period of that key is over: the next call sends anew
    later = tasks.record.apply_async((4,), dedupe_key="nightly-2026-12-03", dedupe_for=0.5)
    assert later.id != other.id and later.get(timeout=20) == 4
    assert sorted(n for n, _, _ in starts(redis_client, module)) == [1, 3, 4]
    assert 0 < redis_client.pttl(dedupe_key(f"{module}.record", "nightly-2026-12-02")) <= 60000


def test_producers_racing_with_one_key_send_one_message(
        probed: tuple, redis_client: redis.Redis) -> None:
    f, module, _ = probed
    env = {**os.environ, INVENTORY_ENV: str(f.path),
           "PYTHONPATH": os.pathsep.join([str(f.folder), str(ROOT)])}
    script = PRODUCER.format(module=module)
    runs = [subprocess.Popen([sys.executable, "-c", script, str(n), "race"], env=env,
                             cwd=f.folder, stdout=subprocess.PIPE, text=True) for n in range(6)]
    ids = {run.communicate(timeout=60)[0].strip() for run in runs}
    assert all(run.returncode == 0 for run in runs)
    assert len(ids) == 1 and ids != {""}
    deadline = time.monotonic() + 20
    while not starts(redis_client, module) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # (a second message, had one been sent, would have started by now)
    assert len(starts(redis_client, module)) == 1


def test_bad_dedupe_options_are_refused_at_the_call(probed: tuple) -> None:
    _, _, tasks = probed
    for given, message in [({"dedupe_key": "k", "dedupe_for": 0}, "dedupe_for must be a "
                            "positive number of seconds"),
                           ({"dedupe_key": "k", "dedupe_for": -5}, "got -5"),
                           ({"dedupe_for": 60}, "dedupe_for without dedupe_key"),
                           ({"dedupe_key": ""}, "dedupe_key must be a non-empty string")]:
        with pytest.raises(UsageError, match=message):
            tasks.record.apply_async((1,), **given)
    from catdog.tasks.shell import run_on

    with pytest.raises(UsageError, match="sends one per device"):
        run_on.apply_async(("all", "true"), dedupe_key="k")
