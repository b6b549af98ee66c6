"""A connection torn down before kombu could put the held messages back does not end the worker.

Real Redis (the session's embedded one) and kombu's real Redis transport: a message is taken
and held, the transport lets go of its client (as it does when the broker dies mid-close), and the
channel is closed the way Celery closes it on a lost connection.
"""

from __future__ import annotations

import uuid

import kombu
import pytest
import redis
from kombu.transport import redis as kombu_redis

from workers import reconnect


def held_message(url: str) -> tuple[kombu.Connection, object, str, str]:
    keys = f"test-reconnect-{uuid.uuid4().hex[:8]}"
    conn = kombu.Connection(url, transport_options={
        "unacked_key": f"{keys}.unacked", "unacked_index_key": f"{keys}.unacked_index",
        "unacked_mutex_key": f"{keys}.mutex"})
    queue = kombu.Queue(keys, exchange=kombu.Exchange(keys, "direct"), routing_key=keys)
    with conn.Producer() as producer:
        producer.publish({"n": 1}, exchange=queue.exchange, routing_key=keys, declare=[queue])
    channel = conn.channel()
    message = queue(channel).get(no_ack=False)
    assert message is not None
    return conn, channel, f"{keys}.unacked", message.delivery_tag


def test_without_it_kombu_raises_where_celery_would_end_the_worker(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    original = getattr(kombu_redis.QoS.restore_unacked_once, "__wrapped__", None)
    if original is not None:  # installed earlier in this process: look at kombu's own
        monkeypatch.setattr(kombu_redis.QoS, "restore_unacked_once", original)
    _, channel, _, _ = held_message(redis_url)
    channel.connection.client = None  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="hostname"):
        channel.close()  # type: ignore[attr-defined]


def test_with_it_the_close_survives_and_the_message_waits_in_unacked_for_the_sweep(
        redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    reconnect.install()
    reconnect.install()  # once is enough: installing again wraps nothing twice
    assert not hasattr(kombu_redis.QoS.restore_unacked_once.__wrapped__, "__wrapped__")
    _, channel, unacked, tag = held_message(redis_url)
    channel.connection.client = None  # type: ignore[attr-defined]
    channel.close()  # type: ignore[attr-defined]
    assert redis_client.hexists(unacked, tag)  # not lost: the sweep puts it back
    assert "1 held message(s)" in caplog.text
