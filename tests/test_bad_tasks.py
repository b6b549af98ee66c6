"""Bad input never crashes the fleet: a task raising, hanging past its time limit, returning
something that is not JSON or too large, and oversized arguments; the worker keeps serving."""

from __future__ import annotations

import sys
import uuid

import pytest

from catdog import TooLarge
from catdog.routing import ANY_QUEUE, queue_keys
from catdog.task import MAX_ARGS_BYTES
from ops.results import READY
from tasks import run_on

from .conftest import device_spec

pytestmark = pytest.mark.slow

SOURCE = '''
import time
from catdog import app


@app.task(name="{module}.boom")
def boom():
    raise RuntimeError("the sensor is unplugged")


@app.task(name="{module}.hang", time_limit=1)
def hang():
    time.sleep(30)


@app.task(name="{module}.weird")
def weird():
    return object()


@app.task(name="{module}.huge")
def huge(n):
    return "x" * n
'''


def test_bad_tasks_fail_clearly_and_the_worker_keeps_serving(make_fleet, redis_client) -> None:
    module = f"bad_tasks_{uuid.uuid4().hex[:8]}"
    fleet = make_fleet({"pi": device_spec([])}, imports=[module])  # prefork: time limits work
    (fleet.folder / f"{module}.py").write_text(SOURCE.format(module=module))
    sys.path.insert(0, str(fleet.folder))
    try:
        bad = __import__(module)
    finally:
        sys.path.remove(str(fleet.folder))
    assert fleet.launch()[0].state == READY

    def serving() -> None:
        assert run_on.delay("pi", "echo ok").get(timeout=30)["stdout"] == "ok\n"

    with pytest.raises(RuntimeError, match="the sensor is unplugged"):
        bad.boom.delay().get(timeout=30)
    serving()
    with pytest.raises(Exception, match=r"TimeLimitExceeded|time limit"):
        bad.hang.delay().get(timeout=30)
    serving()
    with pytest.raises(TypeError, match="returned a object, which is not JSON"):
        bad.weird.delay().get(timeout=30)
    serving()
    with pytest.raises(TooLarge, match="over the 1048576-byte limit; write it to a file"):
        bad.huge.delay(2 * 1024 * 1024).get(timeout=30)
    serving()
    assert bad.huge.delay(1000).get(timeout=30) == "x" * 1000

    with pytest.raises(TooLarge, match=r"arguments of \d+ bytes as JSON, over the"):
        bad.huge.delay("y" * (MAX_ARGS_BYTES + 1))
    assert sum(redis_client.llen(k) for k in queue_keys(ANY_QUEUE)) == 0  # nothing was sent
