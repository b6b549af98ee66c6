"""CatDog's Redis transport: a message Redis hands over is held on Redis in the same step.

Real Redis (the session's embedded one), kombu's real channels, and real workers: a consumer that
sends its fetch and vanishes before reading the reply (a worker killed, or a link cut while Redis
dies, just after Redis popped the message) loses the message with kombu's transport and not with
CatDog's, whose record the ordinary sweep puts back.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import kombu
import pytest
import redis
from kombu.transport import redis as kombu_redis

from catdog.redis_scripts import BELL_CAP, PUT_SHA, TAKE_SHA, bell
from catdog.tasks.examples import whoami
from catdog.transport import BELL_WAIT_S, WAIT_MARGIN_S

from .conftest import FleetUnderTest, device_spec

CLASSIC = "kombu.transport.redis:Transport"
CATDOG = "catdog.transport:Transport"


def options(keys: str) -> dict[str, Any]:
    return {"unacked_key": f"{keys}.unacked", "unacked_index_key": f"{keys}.unacked_index",
            "unacked_mutex_key": f"{keys}.mutex", "visibility_timeout": 1}


def opened(url: str, keys: str, transport: str = CATDOG) -> tuple[Any, kombu.Queue]:
    """A connection with the test's own unacked keys, and the queue ``keys`` (its own exchange)."""
    conn = kombu.Connection(url, transport=transport, transport_options=options(keys))
    return conn, kombu.Queue(keys, exchange=kombu.Exchange(keys, "direct"), routing_key=keys)


def send_and_vanish(url: str, transport: str, client: redis.Redis) -> str:
    """Publish one message, then a consumer sends its fetch and its socket is shut before the
    reply is read. Returns the queue's name (also the prefix of its unacked keys)."""
    keys = f"test-transport-{uuid.uuid4().hex[:8]}"
    conn, queue = opened(url, keys, transport)
    with conn.Producer() as producer:
        producer.publish({"n": 1}, exchange=queue.exchange, routing_key=keys, declare=[queue])
    channel: Any = conn.channel()
    channel.basic_consume(keys, False, lambda message: None, "test-consumer")
    channel.connection.cycle._register_BRPOP(channel)  # as the event loop sends its fetch
    deadline = time.monotonic() + 5
    while client.llen(keys) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.llen(keys) == 0, "Redis never handed the message over"
    channel.client.connection.disconnect()  # the reply is never read: the consumer is gone
    return keys


def restored(url: str, transport: str, keys: str) -> Any:
    """What a later consumer gets after the ordinary sweep (visibility timeout 1 s)."""
    time.sleep(1.2)
    conn, queue = opened(url, keys, transport)
    channel: Any = conn.channel()
    channel.qos.restore_visible(num=10, interval=1)
    message = queue(channel).get(no_ack=True)
    conn.release()
    return message


def test_kombu_transport_loses_a_message_whose_fetch_reply_is_never_read(
        redis_url: str, redis_client: redis.Redis) -> None:
    keys = send_and_vanish(redis_url, CLASSIC, redis_client)
    assert not redis_client.hlen(f"{keys}.unacked")  # nowhere: not queued, not held
    assert restored(redis_url, CLASSIC, keys) is None


def test_catdog_transport_holds_it_and_the_sweep_puts_it_back(
        redis_url: str, redis_client: redis.Redis) -> None:
    keys = send_and_vanish(redis_url, CATDOG, redis_client)
    assert redis_client.hlen(f"{keys}.unacked") == 1
    assert redis_client.zcard(f"{keys}.unacked_index") == 1
    message = restored(redis_url, CATDOG, keys)
    assert message is not None and message.payload == {"n": 1}
    assert message.delivery_info.get("redelivered") or message.headers.get("redelivered")


def test_a_take_redis_refuses_leaves_the_message_queued(
        redis_url: str, redis_client: redis.Redis) -> None:
    """Out of memory under ``noeviction``: Redis refuses the hold's write, and the message was
    not popped (the script reads it, records it, and only then pops it)."""
    keys = f"test-transport-{uuid.uuid4().hex[:8]}"
    conn, queue = opened(redis_url, keys)
    with conn.Producer() as producer:
        producer.publish({"n": 3}, exchange=queue.exchange, routing_key=keys, declare=[queue])
    channel: Any = conn.channel()
    channel.basic_consume(keys, False, lambda message: None, "test-consumer")
    before = redis_client.config_get("maxmemory*")
    redis_client.config_set("maxmemory-policy", "noeviction")
    redis_client.config_set("maxmemory", 1)
    try:
        channel.connection.cycle._register_BRPOP(channel)
        with pytest.raises(kombu_redis.Empty):
            channel._brpop_read()
    finally:
        redis_client.config_set("maxmemory", before["maxmemory"])
        redis_client.config_set("maxmemory-policy", before["maxmemory-policy"])
    assert redis_client.llen(keys) == 1
    assert not redis_client.hlen(f"{keys}.unacked")
    conn.release()


def test_a_taken_message_is_acknowledged_as_kombu_would(
        redis_url: str, redis_client: redis.Redis) -> None:
    keys = f"test-transport-{uuid.uuid4().hex[:8]}"
    conn, queue = opened(redis_url, keys)
    got: list[Any] = []
    with conn.Consumer(queue, callbacks=[lambda body, message: got.append(message)]):
        with conn.Producer() as producer:
            producer.publish({"n": 2}, exchange=queue.exchange, routing_key=keys)
        assert redis_client.llen(bell(keys)) == 1  # the publish rang the queue's bell
        conn.drain_events(timeout=5)
        assert [m.payload for m in got] == [{"n": 2}]
        assert redis_client.hexists(f"{keys}.unacked", got[0].delivery_tag)
        got[0].ack()
    assert not redis_client.hlen(f"{keys}.unacked")
    assert not redis_client.zcard(f"{keys}.unacked_index")
    conn.release()


def test_a_consumer_without_acks_leaves_no_hold(
        redis_url: str, redis_client: redis.Redis) -> None:
    """Replies (a ping's, say) are consumed without acknowledgements: nothing to hold, and a
    hold written for one would be swept back onto its queue and delivered again."""
    keys = f"test-transport-{uuid.uuid4().hex[:8]}"
    conn, queue = opened(redis_url, keys)
    got: list[Any] = []
    with conn.Consumer(queue, no_ack=True, callbacks=[lambda body, m: got.append(body)]):
        with conn.Producer() as producer:
            producer.publish({"n": 4}, exchange=queue.exchange, routing_key=keys)
        conn.drain_events(timeout=5)
    assert got == [{"n": 4}]
    assert not redis_client.hlen(f"{keys}.unacked")
    assert not redis_client.zcard(f"{keys}.unacked_index")
    conn.release()


def test_bells_stay_capped(redis_url: str, redis_client: redis.Redis) -> None:
    keys = f"test-transport-{uuid.uuid4().hex[:8]}"
    conn, queue = opened(redis_url, keys)
    with conn.Producer() as producer:
        for n in range(BELL_CAP + 10):
            producer.publish({"n": n}, exchange=queue.exchange, routing_key=keys,
                             declare=[queue])
    assert redis_client.llen(keys) == BELL_CAP + 10
    assert redis_client.llen(bell(keys)) == BELL_CAP
    conn.release()


seen_from: dict[int, list[str]] = {}


def is_take(command: str) -> bool:
    """Whether a command MONITOR saw is a take: the script itself, or its SHA1 (once cached)."""
    return command.startswith(f"EVALSHA {TAKE_SHA} ") or (
        command.startswith("EVAL ") and "RPOP" in command and "TIME" in command)


def local_ports(pid: int) -> set[str]:
    """The local TCP ports of process ``pid``'s sockets (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(str(int(fields[1].rsplit(":", 1)[1], 16)))
    return ports


@pytest.fixture
def monitored(redis_url: str) -> Iterator[list[str]]:
    """The commands clients send Redis while the test runs (MONITOR; not those a script runs)."""
    seen: list[str] = []
    ports = seen_from[id(seen)] = []  # each command's client port, in step with ``seen``
    stop = threading.Event()

    def watch() -> None:
        with redis.Redis.from_url(redis_url).monitor() as monitor:
            for command in monitor.listen():
                if command.get("client_type") != "lua":
                    seen.append(command["command"])
                    ports.append(str(command.get("client_port")))
                if stop.is_set():
                    return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    time.sleep(0.2)
    yield seen
    stop.set()
    redis.Redis.from_url(redis_url).ping()  # one more command ends the listen
    thread.join(5)


@pytest.mark.slow
def test_a_worker_takes_with_the_script_and_waits_on_bells(
        make_fleet: Any, monitored: list[str], redis_client: redis.Redis) -> None:
    f: FleetUnderTest = make_fleet({"solo1": device_spec(["t"], pool="solo")})
    assert [r.state for r in f.launch()] == ["READY"]
    del monitored[:]
    assert whoami.apply_async(queue="catdog.device.solo1").get(timeout=20)["device"] == "solo1"
    f.stop(force=True)
    takes = [c for c in monitored if is_take(c)]
    waits = [c for c in monitored if c.startswith("BLPOP ") and bell("catdog.device.solo1") in c]
    assert takes and waits, monitored[-40:]
    assert not [c for c in monitored if c.startswith("BRPOP ")], "kombu's fetch is not used"
    assert not [c for c in monitored if c.startswith("HSET catdog.unacked ")], (
        "the hold is recorded by the take, not in a round trip of its own")
    assert not [c for c in monitored if c.startswith("HDEL catdog.unacked ")], (
        "the acknowledgement rides on the next take")
    assert not redis_client.hlen("catdog.unacked")  # and it did reach Redis


@pytest.mark.slow
def test_a_solo_worker_makes_no_round_trip_of_its_own_for_a_result_or_a_start(
        make_fleet: Any, monitored: list[str], redis_client: redis.Redis) -> None:
    """A waiting worker's wait receives the message itself (handed over, held); its result is
    written and published by its next take, which acknowledges the message after it; the
    quarantine's first-delivery record is written with the hold; a publisher reads a queue's
    binding table once, not before every message."""
    f: FleetUnderTest = make_fleet({"solo1": device_spec(["t"], pool="solo")})
    assert [r.state for r in f.launch()] == ["READY"]
    first = whoami.apply_async(queue="catdog.device.solo1").get(timeout=20)  # its table read
    worker = local_ports(int(first["pid"]))
    time.sleep(0.5)  # it waits for work
    del monitored[:], seen_from[id(monitored)][:]
    calls = []
    for _ in range(3):  # one at a time: each is handed to the waiting worker
        calls.append(whoami.apply_async(queue="catdog.device.solo1"))
        assert calls[-1].get(timeout=20)["device"] == "solo1"
    time.sleep(0.5)
    seen, ports = list(monitored), list(seen_from[id(monitored)])
    f.stop(force=True)
    own = [c for c, port in zip(seen, ports, strict=False) if port in worker
           and c.split(" ", 2)[1:2] and c.split(" ", 2)[1].startswith(
               ("celery-task-meta-", "catdog:delivery:"))]
    assert worker and [c for c, port in zip(seen, ports, strict=False) if port in worker]
    assert not [c for c in own if c.startswith(("SET ", "SETEX ", "GET "))], own
    assert not [c for c in seen if c.startswith("SMEMBERS ")], "routes are kept, not re-read"
    assert [c for c in seen if is_take(c) and "celery-task-meta-" in c], "the take wrote them"
    takes = [c for c, port in zip(seen, ports, strict=False)
             if port in worker and is_take(c)]
    assert len(takes) == 3, "one take a call: the one after it (result, ack, then wait again)"
    for call in calls:  # stored (for a day), acknowledged
        assert 0 < redis_client.ttl(f"celery-task-meta-{call.id}") <= 24 * 3600
    assert not redis_client.hlen("catdog.unacked")


def test_the_take_records_a_first_delivery_not_a_redelivery_and_the_gate_can_undo_it(
        redis_url: str, redis_client: redis.Redis) -> None:
    """The quarantine's first-delivery record is written by the take, with the hold; a message
    put back (``redelivered``) gets none from the take (its count is the quarantine's); and a
    message the gate does not let start has the take's record removed."""
    from types import SimpleNamespace

    from catdog import carry
    from workers.gate import Gate

    keys = f"test-transport-{uuid.uuid4().hex[:8]}"
    head = '{"losses":[],"current":{"device":"d9","started":'
    carry.starts.configure(f"{keys}.start:", head, 60)
    conn, queue = opened(redis_url, keys)
    got: list[Any] = []
    try:
        with conn.Consumer(queue, callbacks=[lambda body, message: got.append(message)]):
            with conn.Producer() as producer:
                producer.publish({"n": 5}, exchange=queue.exchange, routing_key=keys)
            conn.drain_events(timeout=5)
            tag = got[0].delivery_tag
            record = json.loads(redis_client.get(f"{keys}.start:{tag}"))
            assert record["current"]["device"] == "d9" and record["losses"] == []
            assert abs(record["current"]["started"] - time.time()) < 5
            assert 0 < redis_client.ttl(f"{keys}.start:{tag}") <= 60

            gate: Any = Gate.__new__(Gate)
            gate.client = redis_client
            gate._unstart(SimpleNamespace(message=got[0]))  # it does not start here
            assert not redis_client.exists(f"{keys}.start:{tag}")
            assert not carry.starts.written(tag)

            got[0].reject(requeue=True)  # back on its queue, redelivered
            conn.drain_events(timeout=5)
            assert got[1].delivery_tag == tag and got[1].delivery_info.get("redelivered")
            assert not redis_client.exists(f"{keys}.start:{tag}")
            assert not carry.starts.written(tag)
            got[1].ack()
    finally:
        carry.starts.reset()
        conn.release()


def consumer(redis_url: str, keys: str, got: list[Any]) -> tuple[Any, Any, kombu.Queue]:
    """A CatDog connection and channel consuming the queue ``keys`` (its messages into ``got``)."""
    conn, queue = opened(redis_url, keys)
    channel: Any = conn.channel()
    queue(channel).declare()
    channel.basic_consume(keys, False, lambda message: got.append(message), f"c-{keys}")
    return conn, channel, queue


def publish(conn: Any, queue: kombu.Queue, body: Any) -> None:
    with conn.Producer() as producer:
        producer.publish(body, exchange=queue.exchange, routing_key=queue.routing_key)


def fetch(channel: Any) -> None:
    """One fetch of the channel, as the event loop sends and reads it."""
    channel.connection.cycle._register_BRPOP(channel)
    with contextlib.suppress(kombu_redis.Empty):
        channel._brpop_read()


def test_a_waiting_worker_is_handed_the_message_held_in_its_wake_up(
        redis_url: str, redis_client: redis.Redis) -> None:
    """A take that finds nothing puts its worker in the queue's waiting set; a publish then
    hands the message to it (held for it, its first-delivery record written, no bell), and the
    worker's wait receives the message itself; the wait's next take leaves the set."""
    from catdog import carry
    from catdog.redis_scripts import waiting

    keys = f"test-transport-{uuid.uuid4().hex[:8]}"
    carry.starts.configure(f"{keys}.start:", '{"current":{"started":', 60)
    got: list[Any] = []
    conn, channel, queue = consumer(redis_url, keys, got)
    try:
        fetch(channel)  # the take: nothing there, so it waits
        assert channel._idle and redis_client.zscore(waiting(keys), channel._inbox)
        lives = (BELL_WAIT_S + WAIT_MARGIN_S) * 1000
        assert 0 < redis_client.pttl(channel._inbox + ":waits") <= lives  # till its wait ends
        since = redis_client.zscore(waiting(keys), channel._inbox)
        time.sleep(0.05)
        channel._idle = False  # its wait ended with nothing: it takes again, still waiting
        fetch(channel)
        assert redis_client.zscore(waiting(keys), channel._inbox) == since  # (first in line)
        assert redis_client.pttl(channel._inbox + ":waits") > lives - 50
        publish(conn, queue, {"n": 6})
        assert not redis_client.llen(keys) and not redis_client.llen(bell(keys))
        assert redis_client.llen(channel._inbox) == 1
        assert redis_client.hlen(f"{keys}.unacked") == 1  # held for it before it woke
        assert not redis_client.zscore(waiting(keys), channel._inbox)  # one message, one worker
        fetch(channel)  # the wait: BLPOP on the inbox and the bell
        assert [m.payload for m in got] == [{"n": 6}]
        tag = got[0].delivery_tag
        record = redis_client.get(f"{keys}.start:{tag}")
        assert json.loads(record)["current"]["started"] > 0, record
        assert carry.starts.written(tag)
        got[0].ack()
        assert not redis_client.hlen(f"{keys}.unacked")
        publish(conn, queue, {"n": 7})  # nobody waits now: queued, with a bell
        assert redis_client.llen(keys) == 1 and redis_client.llen(bell(keys)) == 1
    finally:
        carry.starts.reset()
        conn.release()


def test_a_lapsed_wait_is_passed_over_and_a_closing_worker_gives_back_what_it_was_handed(
        redis_url: str, redis_client: redis.Redis) -> None:
    from catdog.redis_scripts import REGISTRATION_SUFFIX, waiting

    keys = f"test-transport-{uuid.uuid4().hex[:8]}"
    got: list[Any] = []
    conn, channel, queue = consumer(redis_url, keys, got)
    fetch(channel)
    redis_client.delete(channel._inbox + REGISTRATION_SUFFIX)  # its wait lapsed
    publish(conn, queue, {"n": 8})  # (a worker lost while waiting is not handed anything)
    assert redis_client.llen(keys) == 1 and not redis_client.exists(channel._inbox)
    assert not redis_client.zcard(waiting(keys))
    redis_client.delete(keys)

    fetch(channel)  # waits again (the wait reads its bell), then takes: nothing, so it waits
    fetch(channel)
    assert redis_client.zscore(waiting(keys), channel._inbox)
    publish(conn, queue, {"n": 9})  # handed to it, which closes before it reads it
    assert redis_client.llen(channel._inbox) == 1
    channel.close()
    assert not redis_client.exists(channel._inbox) and not redis_client.zcard(waiting(keys))
    assert not redis_client.hlen(f"{keys}.unacked")
    assert [json.loads(m)["body"] for m in redis_client.lrange(keys, 0, -1)]  # back, whole
    later: list[Any] = []
    conn2, channel2, _ = consumer(redis_url, keys, later)
    fetch(channel2)
    assert [m.payload for m in later] == [{"n": 9}] and not got
    later[0].ack()
    conn.release()
    conn2.release()


def test_a_cancelled_consumer_leaves_the_waiting_set(
        redis_url: str, redis_client: redis.Redis) -> None:
    from catdog.redis_scripts import waiting

    keys = f"test-transport-{uuid.uuid4().hex[:8]}"
    got: list[Any] = []
    conn, channel, queue = consumer(redis_url, keys, got)
    fetch(channel)
    assert redis_client.zscore(waiting(keys), channel._inbox)
    channel.basic_cancel(f"c-{keys}")
    assert not redis_client.zscore(waiting(keys), channel._inbox)
    publish(conn, queue, {"n": 10})
    assert redis_client.llen(keys) == 1 and not got
    conn.release()


def test_takes_and_publishes_send_the_scripts_sha1_and_survive_a_redis_that_lost_them(
        redis_url: str, redis_client: redis.Redis, monitored: list[str]) -> None:
    """After its first take a channel sends only the take script's SHA1 (3 KB less a take on
    a Pi's Wi-Fi); a Redis whose script cache is empty (restarted) is sent the script again."""
    keys = f"test-transport-{uuid.uuid4().hex[:8]}"
    got: list[Any] = []
    conn, channel, queue = consumer(redis_url, keys, got)
    fetch(channel)  # EVAL: nothing there
    channel._idle = False  # (as after a wait that timed out)
    fetch(channel)  # EVALSHA
    redis_client.script_flush()
    publish(conn, queue, {"n": 11})  # its EVALSHA fails, its EVAL goes
    channel._idle = False
    fetch(channel)  # NOSCRIPT: nothing taken, nothing lost
    assert not got and redis_client.llen(channel._inbox) == 1  # handed to it, still there
    fetch(channel)  # EVAL again
    assert [m.payload for m in got] == [{"n": 11}]
    got[0].ack()
    conn.release()
    sent = [c.split(" ", 2)[:2] for c in monitored if c.startswith("EVAL")]
    assert ["EVALSHA", TAKE_SHA] in sent and ["EVALSHA", PUT_SHA] in sent


def test_a_queue_consumed_during_a_wait_ends_the_wait(
        redis_url: str, redis_client: redis.Redis) -> None:
    """A wait names the queues the channel had (a resumed kill switch adds its queues back):
    the channel wakes its own wait, and its next take has the new queue, at once."""
    keys = f"test-transport-{uuid.uuid4().hex[:8]}"
    got: list[Any] = []
    conn, channel, _ = consumer(redis_url, keys, got)
    fetch(channel)  # nothing: it waits
    channel.connection.cycle._register_BRPOP(channel)  # the wait goes out
    conn2, other = opened(redis_url, f"{keys}-b")
    other(channel).declare()
    started = time.monotonic()
    channel.basic_consume(f"{keys}-b", False, lambda message: got.append(message), "c-b")
    with pytest.raises(kombu_redis.Empty):
        channel._brpop_read()
    assert time.monotonic() - started < BELL_WAIT_S / 2 and not channel._idle
    publish(conn, other, {"n": 12})
    fetch(channel)
    assert [m.payload for m in got] == [{"n": 12}]
    got[0].ack()
    conn.release()
    conn2.release()
