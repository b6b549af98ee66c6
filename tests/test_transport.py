"""CatDog's Redis transport: a message Redis hands over is held on Redis in the same step.

Real Redis (the session's embedded one), kombu's real channels, and real workers: a consumer that
sends its fetch and vanishes before reading the reply (a worker killed, or a link cut while Redis
dies, just after Redis popped the message) loses the message with kombu's transport and not with
CatDog's, whose record the ordinary sweep puts back.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import kombu
import pytest
import redis
from kombu.transport import redis as kombu_redis

from catdog.tasks.examples import whoami
from catdog.transport import BELL_CAP, bell

from .conftest import FleetUnderTest, device_spec

CLASSIC = "kombu.transport.redis:Transport"
CATDOG = "catdog.transport:Transport"


def options(keys: str) -> dict[str, Any]:
    return {"unacked_key": f"{keys}.unacked", "unacked_index_key": f"{keys}.unacked_index",
            "unacked_mutex_key": f"{keys}.mutex", "visibility_timeout": 1}


def send_and_vanish(url: str, transport: str, client: redis.Redis) -> str:
    """Publish one message, then a consumer sends its fetch and its socket is shut before the
    reply is read. Returns the queue's name (also the prefix of its unacked keys)."""
    keys = f"test-transport-{uuid.uuid4().hex[:8]}"
    conn = kombu.Connection(url, transport=transport, transport_options=options(keys))
    queue = kombu.Queue(keys, exchange=kombu.Exchange(keys, "direct"), routing_key=keys)
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
    conn = kombu.Connection(url, transport=transport, transport_options=options(keys))
    channel: Any = conn.channel()
    channel.qos.restore_visible(num=10, interval=1)
    queue = kombu.Queue(keys, exchange=kombu.Exchange(keys, "direct"), routing_key=keys)
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
    conn = kombu.Connection(redis_url, transport=CATDOG, transport_options=options(keys))
    queue = kombu.Queue(keys, exchange=kombu.Exchange(keys, "direct"), routing_key=keys)
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
    conn = kombu.Connection(redis_url, transport=CATDOG, transport_options=options(keys))
    queue = kombu.Queue(keys, exchange=kombu.Exchange(keys, "direct"), routing_key=keys)
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
    conn = kombu.Connection(redis_url, transport=CATDOG, transport_options=options(keys))
    queue = kombu.Queue(keys, exchange=kombu.Exchange(keys, "direct"), routing_key=keys)
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
    conn = kombu.Connection(redis_url, transport=CATDOG, transport_options=options(keys))
    queue = kombu.Queue(keys, exchange=kombu.Exchange(keys, "direct"), routing_key=keys)
    with conn.Producer() as producer:
        for n in range(BELL_CAP + 10):
            producer.publish({"n": n}, exchange=queue.exchange, routing_key=keys,
                             declare=[queue])
    assert redis_client.llen(keys) == BELL_CAP + 10
    assert redis_client.llen(bell(keys)) == BELL_CAP
    conn.release()


@pytest.fixture
def monitored(redis_url: str) -> Iterator[list[str]]:
    """The commands clients send Redis while the test runs (MONITOR; not those a script runs)."""
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        with redis.Redis.from_url(redis_url).monitor() as monitor:
            for command in monitor.listen():
                if command.get("client_type") != "lua":
                    seen.append(command["command"])
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
    takes = [c for c in monitored if c.startswith("EVAL ") and "RPOP" in c]
    waits = [c for c in monitored if c.startswith("BLPOP ") and bell("catdog.device.solo1") in c]
    assert takes and waits, monitored[-40:]
    assert not [c for c in monitored if c.startswith("BRPOP ")], "kombu's fetch is not used"
    assert not [c for c in monitored if c.startswith("HSET catdog.unacked ")], (
        "the hold is recorded by the take, not in a round trip of its own")
    assert not [c for c in monitored if c.startswith("HDEL catdog.unacked ")], (
        "the acknowledgement rides on the next take")
    assert not redis_client.hlen("catdog.unacked")  # and it did reach Redis
