"""Fleet-wide rate limits and run windows on real workers, and the deferral store behind both."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

import pytest
import redis

from catdog import UsageError, settings
from catdog.deferral import DEFERRED_KEY
from catdog.routing import ANY_QUEUE, queue_keys
from ops.results import READY

from .conftest import device_spec
from .probe import starts, write_probe

UNACKED = str(settings.broker_transport_options["unacked_key"])

pytestmark = pytest.mark.slow


def probe_fleet(make_fleet, devices: dict, **top) -> tuple[str, Any]:
    module = f"ctl_probe_{uuid.uuid4().hex[:8]}"
    fleet = make_fleet(devices, imports=[module], **top)
    tasks = write_probe([fleet.folder], module)
    launched = fleet.launch()
    assert {r.state for r in launched} == {READY}, [r.as_dict() for r in launched]
    return module, tasks


def test_a_limit_of_4_per_second_holds_across_two_devices(make_fleet,
                                                          redis_client: redis.Redis) -> None:
    module, tasks = probe_fleet(make_fleet, {
        "pa": device_spec([], concurrency=2), "pb": device_spec([], pool="threads", concurrency=2),
    }, limits={"burst": "4/s"})
    sent = [tasks.limited.delay(n, 0.05) for n in range(24)]  # type: ignore[attr-defined]
    assert sorted(r.get(timeout=60) for r in sent) == list(range(24))  # none dropped
    seen = starts(redis_client, module)
    times = sorted(t for _, t, _ in seen)
    assert sorted(n for n, _, _ in seen) == list(range(24))  # each started once
    # any 5 consecutive starts span at least a second (a few ms allowed: the task records its
    # start just after the limiter counted it)
    tightest = min(times[i + 4] - times[i] for i in range(len(times) - 4))
    assert tightest >= 0.97, tightest
    assert {d for _, _, d in seen} == {"pa", "pb"}
    assert times[-1] - times[0] < 8  # released as the limit allows, not in a long backoff
    assert redis_client.zcard(DEFERRED_KEY) == 0


def test_a_window_opening_next_minute_defers_without_holding_a_slot(
        make_fleet, redis_client: redis.Redis) -> None:
    module, tasks = probe_fleet(make_fleet, {"solo1": device_spec([], pool="solo")})
    now = dt.datetime.now().astimezone()
    opening = (now + dt.timedelta(minutes=1)).replace(second=0, microsecond=0)
    window = f"{opening:%H:%M}-{opening:%H:%M}"
    waiting = tasks.record.apply_async((1,), window=window)  # type: ignore[attr-defined]
    free = tasks.record.delay(2)  # type: ignore[attr-defined]
    assert free.get(timeout=20) == 2  # the deferred task holds no slot on the one-slot device
    assert redis_client.zcard(DEFERRED_KEY) == 1
    deadline = time.monotonic() + 3  # (the free task's own ack may trail its result briefly)
    while redis_client.hlen(UNACKED) and time.monotonic() < deadline:
        time.sleep(0.05)
    # nothing held by a worker while it waits
    assert not redis_client.hlen(UNACKED), redis_client.hgetall(UNACKED)
    assert waiting.get(timeout=90) == 1
    started = {n: t for n, t, _ in starts(redis_client, module)}
    assert opening.timestamp() <= started[1] < opening.timestamp() + 3, (
        started[1] - opening.timestamp())
    assert redis_client.zcard(DEFERRED_KEY) == 0


def test_unknown_limits_and_bad_windows_are_refused_at_the_call(
        make_fleet, redis_client: redis.Redis) -> None:
    _, tasks = probe_fleet(make_fleet, {"pa": device_spec([])})
    with pytest.raises(UsageError, match=r"uses limit 'burst', which catdog\.yaml does not define"):
        tasks.limited.delay(1)  # type: ignore[attr-defined]
    with pytest.raises(UsageError, match="window '25:00-26:00': expected"):
        tasks.record.apply_async((1,), window="25:00-26:00")  # type: ignore[attr-defined]
    assert sum(redis_client.llen(k) for k in queue_keys(ANY_QUEUE)) == 0  # nothing was sent


def test_window_close_stop_gives_a_running_task_a_soft_time_limit_at_the_close(
        make_fleet, redis_client: redis.Redis) -> None:
    _, tasks = probe_fleet(make_fleet, {"pa": device_spec([], concurrency=2)})  # prefork
    if dt.datetime.now().second >= 55:  # leave the calls a few seconds inside the window
        time.sleep(6)
    now = dt.datetime.now().astimezone()
    window = f":{now:%M}-:{now:%M}"  # open now, closes at the end of this minute
    closes = now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    running = tasks.stoppable.apply_async((1, 90), window=window,  # type: ignore[attr-defined]
                                          window_close="stop")
    finishing = tasks.stoppable.apply_async((2, 0.1), window=window)  # type: ignore[attr-defined]
    assert "finished_at" in finishing.get(timeout=30)
    stopped = running.get(timeout=90)
    assert "stopped_at" in stopped, stopped
    assert abs(stopped["stopped_at"] - closes.timestamp()) < 2.5


def test_priority_zero_runs_before_the_default_and_nine_after(
        make_fleet, redis_client: redis.Redis) -> None:
    # the queue fills while the device is down, then its worker starts: what it takes first
    # shows the order (a paused worker would not do: Redis hands the message its last fetch
    # was waiting for to the cancelled consumer, and kombu puts it back at the end of its list)
    module = f"ctl_probe_{uuid.uuid4().hex[:8]}"
    fleet = make_fleet({"solo1": device_spec([], pool="solo")}, imports=[module])
    tasks = write_probe([fleet.folder], module)
    sent = [tasks.record.apply_async(  # type: ignore[attr-defined]
        (n,), **({} if p is None else {"priority": p}))
        for n, p in ((1, 9), (2, None), (3, 0), (4, 9), (5, None), (6, 0))]
    pinned = tasks.record.on("solo1").clone(args=(7,)).apply_async()  # type: ignore[attr-defined]
    urgent = tasks.record.apply_async((8,), priority=0)  # type: ignore[attr-defined]
    sent += [pinned, urgent]
    assert fleet.launch()[0].state == READY
    assert sorted(r.get(timeout=30) for r in sent) == list(range(1, 9))
    order = [n for n, _, _ in starts(redis_client, module)]
    # 0 first, the default 5 next, 9 last; FIFO within a level, across the worker's queues
    assert [n for n in order if n != 7] == [3, 6, 8, 2, 5, 1, 4], order
    assert order.index(8) < order.index(7) < order.index(1), order
