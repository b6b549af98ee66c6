"""The fleet operations from Python (ops.api): per-device results like Fabric's GroupResult, and
event callbacks, on real workers."""

from __future__ import annotations

import socket
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from catdog.errors import BrokerError, BrokerUnreachable, CatDogError
from catdog.inventory import BROKER_ENV
from ops import api
from ops.results import FAILED, READY, STOPPED

from .conftest import device_spec

pytestmark = pytest.mark.slow


def test_launch_and_stop_from_python_with_events(make_fleet) -> None:
    fleet = make_fleet({"good": device_spec(["camera"]),
                        "bad": device_spec([], python="/opt/none/bin/python")})
    events: list[tuple[str, str]] = []
    found = api.launch(str(fleet.path), on_event=lambda d, e, _: events.append((d, e)))
    assert list(found) == ["good", "bad"]
    assert (found["good"].state, found["bad"].state) == (READY, FAILED)
    assert not found.ok and list(found.failed) == ["bad"] and list(found.succeeded) == ["good"]
    assert "python /opt/none/bin/python not found" in found.failed["bad"].reason
    assert [e for d, e in events if d == "good"] == ["starting", "ready"]
    assert [e for d, e in events if d == "bad"] == ["failed"]

    stopped = api.stop(str(fleet.path), ["good"], force=True)
    assert stopped.ok and stopped["good"].state == STOPPED
    assert fleet.sessions() == []


@pytest.mark.parametrize("call", ["launch", "restart", "beat", "flower", "metrics", "status"])
def test_a_dead_broker_raises_broker_unreachable_not_the_redis_error(
        call: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "catdog.yaml"
    name = f"catdog-api-{uuid.uuid4().hex[:8]}"
    path.write_text(yaml.safe_dump({"tmux_socket": name, "devices": {"cam": device_spec([])}}))
    monkeypatch.setenv(BROKER_ENV, f"redis://:pw@127.0.0.1:{port}/0")
    with pytest.raises(BrokerUnreachable) as raised:
        getattr(api, call)(str(path))
    assert isinstance(raised.value, BrokerError) and isinstance(raised.value, CatDogError)
    assert str(raised.value).startswith(
        f"broker redis://:***@127.0.0.1:{port}/0 does not answer (Connection refused): ")
    assert subprocess.run(["tmux", "-L", name, "list-sessions"], capture_output=True,
                          check=False).returncode != 0  # nothing started


def test_a_broker_lost_midway_raises_broker_unreachable_from_redis_and_kombu_errors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kombu
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = f"redis://:pw@127.0.0.1:{port}/0"
    path = tmp_path / "catdog.yaml"
    path.write_text(yaml.safe_dump({"tmux_socket": "catdog-api-midway",
                                    "devices": {"cam": device_spec([])}}))
    monkeypatch.setenv(BROKER_ENV, dead)
    line = (f"broker redis://:***@127.0.0.1:{port}/0 does not answer (Connection refused): check "
            f"that Redis runs there and that $CATDOG_BROKER_URL is right")

    @api._broker_errors
    def with_redis(inventory: str) -> None:
        redis.Redis.from_url(dead, retry=Retry(NoBackoff(), 0)).get("x")

    @api._broker_errors
    def with_kombu(inventory: str) -> None:
        with kombu.Connection(dead) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0)

    for call in (with_redis, with_kombu):
        with pytest.raises(BrokerUnreachable) as raised:
            call(str(path))  # an operation's first argument: the inventory whose broker it names
        assert str(raised.value) == line
