"""Units of the watchdog's decision and of the lease renewal (on the session's real Redis).

The real breaks (a killed worker, a worker that stops consuming) are in ``tests/chaos``.
"""

from __future__ import annotations

from collections import OrderedDict
from types import SimpleNamespace
from typing import Any

import redis
from kombu import Connection, Queue

from workers.leases import Leases
from workers.watchdog import Watchdog, rerun_argv


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_watchdog_reads_the_backlog_in_one_command_every_fifth_beat(redis_client: redis.Redis
                                                                    ) -> None:
    """An idle worker's backlog check: one ``EXISTS`` over every priority list of its queues
    (not an ``LLEN`` each), on one heartbeat in :data:`CHECK_EVERY_BEATS`; it counts the lists
    that hold a message, whichever priority they are."""
    from catdog.routing import queue_keys
    from workers.watchdog import CHECK_EVERY_BEATS

    queues = ["catdog.wd-a", "catdog.wd-b"]
    seen: list[int] = []
    dog = Watchdog(stuck_after=30, clock=Clock())
    dog.check = lambda backlog, room, paused: seen.append(backlog) or False  # type: ignore
    dog.on_start(SimpleNamespace(queues=queues, argv=[], consumer=None))  # type: ignore[arg-type]
    redis_client.delete(*[k for q in queues for k in queue_keys(q)])
    redis_client.lpush(queue_keys(queues[1])[3], "m1")  # one message at priority 3
    redis_client.lpush(queue_keys(queues[0])[0], "m2", "m3")  # two on one list
    queued = []
    for _ in range(2 * CHECK_EVERY_BEATS):
        pipe = redis_client.pipeline(transaction=False)
        deliver = dog.on_beat(pipe)
        queued.append(len(pipe))
        if deliver is not None:
            deliver(pipe.execute())
    assert queued == ([1] + [0] * (CHECK_EVERY_BEATS - 1)) * 2
    assert seen == [2, 2]  # two of the twenty lists hold work
    redis_client.delete(*[k for q in queues for k in queue_keys(q)])


def test_watchdog_fires_once_after_a_backlog_waits_with_room_and_nothing_taken() -> None:
    clock = Clock()
    dog = Watchdog(stuck_after=30, clock=clock)
    assert not dog.check(backlog=5, room=True, paused=False)
    clock.now += 29
    assert not dog.check(backlog=5, room=True, paused=False)
    clock.now += 2
    assert dog.check(backlog=5, room=True, paused=False)
    clock.now += 60
    assert not dog.check(backlog=5, room=True, paused=False)  # once: a restart is under way


def test_watchdog_waits_while_work_flows_or_cannot_flow() -> None:
    clock = Clock()
    dog = Watchdog(stuck_after=30, clock=clock)
    for _ in range(10):  # a long backlog drained steadily: takes keep coming
        dog.check(backlog=50, room=True, paused=False)
        clock.now += 10
        dog.took()
    assert not dog.check(backlog=50, room=True, paused=False)
    for room, paused in ((False, False), (True, True)):  # busy, or paused by the kill switch
        dog = Watchdog(stuck_after=30, clock=clock)
        for _ in range(10):
            clock.now += 10
            assert not dog.check(backlog=5, room=room, paused=paused)
    dog = Watchdog(stuck_after=30, clock=clock)
    for backlog in (3, 0, 3, 0, 3, 0):  # an empty queue between checks restarts the count
        clock.now += 20
        assert not dog.check(backlog=backlog, room=True, paused=False)


def test_a_restart_runs_the_same_worker_without_the_env_file() -> None:
    assert rerun_argv(["--device", "pi", "--env-file", "/x/env", "--state-dir", "s"]) == [
        "--device", "pi", "--state-dir", "s"]
    assert rerun_argv(["--env-file=/x/env", "--device", "pi"]) == ["--device", "pi"]


def fake_consumer(delivered: list[str], dirty: set[str]) -> SimpleNamespace:
    qos = SimpleNamespace(_delivered=OrderedDict.fromkeys(delivered), _dirty=dirty)
    channel = SimpleNamespace(qos=qos, unacked_index_key="unacked_index")
    return SimpleNamespace(task_consumer=SimpleNamespace(channel=channel))


def test_leases_renew_only_held_messages_still_indexed(redis_client: redis.Redis) -> None:
    redis_client.delete("unacked_index")
    redis_client.zadd("unacked_index", {"held": 10.0, "acked-meanwhile": 10.0, "other": 10.0})
    leases = Leases()
    assert leases.renew(redis_client.pipeline()) == 0  # not attached yet: nothing held
    leases.attach(fake_consumer(["held", "acked-meanwhile", "gone"], {"acked-meanwhile"}))
    assert leases.held() == ["held", "gone"]
    pipe = redis_client.pipeline()
    assert leases.renew(pipe, now=500.0) == 2
    pipe.execute()
    assert dict(redis_client.zrange("unacked_index", 0, -1, withscores=True)) == {
        b"held": 500.0, b"acked-meanwhile": 10.0, b"other": 10.0}  # "gone" was not brought back
    redis_client.delete("unacked_index")


def test_an_ack_that_cannot_reach_redis_frees_the_slot_and_is_paid_later(
        redis_url: str, redis_client: redis.Redis) -> None:
    redis_client.flushdb()
    with Connection(redis_url) as conn:
        queue = Queue("owed-test", routing_key="owed-test")
        conn.Producer().publish({"n": 1}, routing_key="owed-test", declare=[queue])
        channel = conn.default_channel
        channel.basic_qos(prefetch_count=1)
        taken: list[Any] = []
        consumer = conn.Consumer([queue], callbacks=[lambda _body, m: taken.append(m)])
        with consumer:
            conn.drain_events(timeout=5)
        message = taken[0]
        assert not channel.qos.can_consume()  # one slot, held by the message
        leases = Leases()
        leases.attach(SimpleNamespace(task_consumer=SimpleNamespace(channel=channel)))
        assert leases.held() == [message.delivery_tag]

        leases.owe(message, ConnectionError("link down"))  # what the request does on failure
        assert channel.qos.can_consume() and leases.held() == []  # the slot is free again
        assert redis_client.hexists("unacked", message.delivery_tag)  # Redis still holds it
        assert leases.owed == 1

        leases.pay(redis_client.pipeline())  # a heartbeat whose pipeline never got through
        assert leases.owed == 1  # (paid() not called): still owed
        pipe = redis_client.pipeline()
        owed = leases.pay(pipe)
        pipe.execute()
        leases.paid(owed)
        assert leases.owed == 0
        assert not redis_client.hexists("unacked", message.delivery_tag)
        assert redis_client.zscore("unacked_index", message.delivery_tag) is None
        assert redis_client.llen("owed-test") == 0  # acknowledged, not restored: it ran once
