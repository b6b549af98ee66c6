"""The embedded Redis set up to serve SSH devices, without a LAN: its extra listening addresses
(``127.0.0.2`` is this machine's too: all of 127/8 is loopback), the per-device ACL users, the
TLS front's lifecycle and certificates, and the inventory's ``embedded:`` section. The fleet on
a real LAN of network namespaces is ``tests/test_lan_broker.py``.
"""

from __future__ import annotations

import os
import re
import signal
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from cryptography import x509
from redis.backoff import NoBackoff
from redis.retry import Retry

from catdog.errors import CatDogError, InventoryError
from catdog.inventory import Device, Inventory
from catdog.loader import load_inventory
from ops import certs, lan_broker
from ops.embedded_redis import EmbeddedRedis, Listening, alive
from ops.session import worker_session

from .conftest import Sshd

NO_RETRY = Retry(NoBackoff(), 0)
LAN = "127.0.0.2"  # stands for the coordinator's LAN address


def inventory(folder: Path, **top: object) -> Inventory:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "catdog.yaml"
    path.write_text(yaml.safe_dump({**top, "devices": {
        "pi-a": {"host": "10.1.2.3"}, "pi-b": {"host": "10.1.2.4"},
        "laptop": {"host": "local"}}}, sort_keys=False))
    return load_inventory(path, environ={})


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / ".catdog"
    yield folder
    EmbeddedRedis(folder).stop()


def admin(server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis.from_url(server.url, socket_timeout=5)


def test_a_lan_address_added_later_keeps_the_port_and_the_data(state: Path) -> None:
    loopback = EmbeddedRedis(state, Listening())
    loopback.ensure_running()
    port = loopback.port
    admin(loopback).rpush("catdog.any", "queued")
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host=LAN, port=port, socket_timeout=1, retry=NO_RETRY).ping()
    assert loopback.stop()

    lan = EmbeddedRedis(state, Listening((LAN,)))
    lan.ensure_running()
    assert lan.port == port  # workers find it where it was
    assert f"bind 127.0.0.1 {LAN}" in (state / "redis.conf").read_text().splitlines()
    password = (state / "redis.password").read_text().strip()
    assert redis.Redis(host=LAN, port=port, password=password).lrange("catdog.any", 0, -1) == [
        b"queued"]

    first = lan.pid()
    again = EmbeddedRedis(state, Listening())  # the inventory lost its SSH devices: restarted
    again.ensure_running()
    assert again.pid() != first and again.port == port
    assert admin(again).lrange("catdog.any", 0, -1) == [b"queued"]
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host=LAN, port=port, socket_timeout=1, retry=NO_RETRY).ping()


def test_a_device_user_runs_what_workers_do_and_nothing_that_reconfigures(
        tmp_path: Path, state: Path) -> None:
    fleet = inventory(tmp_path)
    users = tuple(lan_broker.rules(fleet, name) for name in fleet.devices)
    server = EmbeddedRedis(state, Listening((LAN,), users=users))
    server.ensure_running()
    password = lan_broker.password(fleet, "pi-a")
    assert password != lan_broker.password(fleet, "pi-b")
    assert password not in (state / "redis.conf").read_text()  # only its SHA-256 is there
    device = redis.Redis(host=LAN, port=server.port, username="catdog-pi-a", password=password,
                         socket_timeout=5)
    device.rpush("catdog.device.pi-a", "m")
    assert device.brpop(["catdog.device.pi-a"], timeout=1) == (b"catdog.device.pi-a", b"m")
    assert device.eval("return redis.call('incr', KEYS[1])", 1, "lease") == 1
    pubsub = device.pubsub()
    pubsub.subscribe("celery.pidbox")
    assert device.publish("celery.pidbox", "hi") == 1
    device.zadd("unacked_index", {"tag": 1.0})
    for command in (("CONFIG", "SET", "appendonly", "no"), ("FLUSHALL",), ("FLUSHDB",),
                    ("SHUTDOWN", "NOSAVE"), ("REPLICAOF", "10.0.0.9", "6379"),
                    ("SLAVEOF", "NO", "ONE"), ("DEBUG", "SLEEP", "0"), ("ACL", "LIST"),
                    ("ACL", "SETUSER", "catdog-pi-a", "+@all"), ("KEYS", "*"),
                    ("CLIENT", "KILL", "TYPE", "normal"), ("BGSAVE",)):
        with pytest.raises(redis.exceptions.NoPermissionError):
            device.execute_command(*command)
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=LAN, port=server.port, username="catdog-pi-b", password=password,
                    retry=NO_RETRY).ping()
    assert admin(server).config_get("appendonly") == {"appendonly": "yes"}
    pubsub.close()
    device.close()


def test_a_user_for_a_device_added_while_the_server_runs_exists_at_once(
        tmp_path: Path, state: Path) -> None:
    fleet = inventory(tmp_path)
    server = EmbeddedRedis(state, Listening((LAN,)))
    server.ensure_running()
    client = admin(server)
    assert client.acl_getuser("catdog-pi-b") is None
    lan_broker.ensure_user(client, fleet, "pi-b")
    lan_broker.ensure_user(client, fleet, "pi-b")  # idempotent
    assert redis.Redis(host=LAN, port=server.port, username="catdog-pi-b",
                       password=lan_broker.password(fleet, "pi-b")).ping()


def test_the_tls_front_starts_stops_and_comes_back_with_the_server(state: Path) -> None:
    server = EmbeddedRedis(state, Listening((LAN,), tls=True))
    server.ensure_running()
    front = server.front_pid()
    assert front and alive(front)
    assert "bind 127.0.0.1" in (state / "redis.conf").read_text().splitlines()
    password = (state / "redis.password").read_text().strip()
    ca = str(state / "tls" / "ca.pem")
    secure = redis.Redis(host=LAN, port=server.tls_port(), password=password, ssl=True,
                         ssl_ca_certs=ca, ssl_cert_reqs="required", socket_timeout=5)
    assert secure.set("k", "v") and secure.get("k") == b"v"
    secure.close()
    unchecked = redis.Redis(host=LAN, port=server.tls_port(), password=password, ssl=True,
                            socket_timeout=5, retry=NO_RETRY)
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        unchecked.ping()  # not signed by a CA the system knows: clients must be given ours

    os.kill(front, signal.SIGKILL)  # a front that died is started again by the next command
    deadline = time.monotonic() + 5
    while alive(front) and time.monotonic() < deadline:
        time.sleep(0.02)
    EmbeddedRedis(state, Listening((LAN,), tls=True)).ensure_running()
    again = server.front_pid()
    assert again and again != front and alive(again)

    assert server.stop()
    assert not alive(again) and not server.answers()
    assert EmbeddedRedis(state, Listening((LAN,))).ensure_running()  # TLS off: no front
    assert server.front_pid() is None


def test_the_server_certificate_names_the_front_addresses_and_the_ca_is_kept(
        tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    files = certs.ensure(folder, (LAN,))
    ca, first = files.ca.read_bytes(), files.cert.read_bytes()
    assert certs.ensure(folder, (LAN,)).cert.read_bytes() == first  # nothing changed: kept
    certs.ensure(folder, ("127.0.0.3",))
    assert files.ca.read_bytes() == ca and files.cert.read_bytes() != first
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(a) for a in names.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1", "127.0.0.3"}
    context = ssl.create_default_context(cafile=str(files.ca))
    assert context.cert_store_stats()["x509_ca"] == 1
    for secret in ("ca.key", "server.key"):
        assert (folder / secret).stat().st_mode & 0o777 == 0o600


def test_what_the_embedded_redis_serves_follows_the_inventory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CATDOG_BROKER_URL", raising=False)
    fleet = inventory(tmp_path / "lan", embedded={"listen": LAN, "tls": True})
    served = lan_broker.listening_for(fleet)
    assert served.addresses == (LAN,) and served.tls and served.front == (LAN,)
    assert served.bind == ("127.0.0.1",)  # with TLS the plain port stays on loopback
    assert [u.split()[0] for u in served.users] == ["catdog-pi-a", "catdog-pi-b", "catdog-laptop"]
    assert all("-@admin -@dangerous" in u for u in served.users)
    for folder in (fleet.state_dir, fleet.state_dir / "users"):
        assert folder.stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in (fleet.state_dir / "users").iterdir()} == {0o600}

    local = tmp_path / "local" / "catdog.yaml"
    local.parent.mkdir()
    local.write_text("devices:\n  laptop: {host: local}\n")
    assert lan_broker.listening_for(load_inventory(local, environ={})) == Listening()
    monkeypatch.setenv("CATDOG_BROKER_URL", "redis://:pw@10.0.0.1:6379/0")
    assert lan_broker.listening_for(fleet) == Listening()  # a broker of one's own: not served


def test_the_route_to_a_device_and_a_listen_address_the_coordinator_lacks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CATDOG_BROKER_URL", raising=False)
    assert lan_broker.route_source(Device("pi", "127.0.0.1")) == "127.0.0.1"
    with pytest.raises(CatDogError, match=re.escape("fix devices.pi.host or set `embedded:")):
        lan_broker.route_source(Device("pi", "no-such-host.invalid"))
    fleet = inventory(tmp_path, embedded={"listen": "192.0.2.77"})
    with pytest.raises(InventoryError) as caught:
        lan_broker.listening_for(fleet)
    [problem] = caught.value.problems
    assert (problem.line, problem.field) == (2, "embedded.listen")  # its own line
    assert "the coordinator has no address '192.0.2.77'" in problem.message
    assert not (tmp_path / ".catdog").exists()  # refused before anything was made


def test_deploy_and_launch_put_the_ca_on_an_ssh_device_once(
        tmp_path: Path, sshd: Sshd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CATDOG_BROKER_URL", raising=False)
    path = tmp_path / "catdog.yaml"
    path.write_text(yaml.safe_dump({"embedded": {"tls": True}, "devices": {
        "pi": sshd.device([], tmp_path / "pi"), "laptop": {"host": "local"}}}))
    fleet = load_inventory(path, environ={})
    with worker_session(fleet, fleet.devices["pi"]) as session:
        first = lan_broker.copy_ca(fleet, session)
        again = lan_broker.copy_ca(fleet, session)
    with worker_session(fleet, fleet.devices["laptop"]) as session:
        assert lan_broker.copy_ca(fleet, session) is None  # local: the coordinator's own file
    where = tmp_path / "pi" / ".catdog" / "run" / "ca.pem"
    assert first == (str(where), True) and again == (str(where), False)  # deploy: UNCHANGED
    assert where.read_text() == (tmp_path / ".catdog" / "tls" / "ca.pem").read_text()
    assert "PRIVATE KEY" not in where.read_text()  # the CA's key never leaves the coordinator
    assert (tmp_path / ".catdog").stat().st_mode & 0o777 == 0o700


def test_a_device_taken_out_of_the_inventory_is_refused_after_a_restart(
        tmp_path: Path, state: Path) -> None:
    fleet = inventory(tmp_path)
    both = tuple(lan_broker.rules(fleet, name) for name in ("pi-a", "pi-b"))
    server = EmbeddedRedis(state, Listening((LAN,), users=both))
    server.ensure_running()

    def answers(device: str) -> bool:
        client = redis.Redis(host=LAN, port=server.port, username=f"catdog-{device}",
                             password=lan_broker.password(fleet, device), retry=NO_RETRY)
        try:
            return bool(client.ping())
        except redis.AuthenticationError:
            return False
        finally:
            client.close()

    assert answers("pi-a") and answers("pi-b")
    server.stop()
    EmbeddedRedis(state, Listening((LAN,), users=both[:1])).ensure_running()  # pi-b removed
    assert answers("pi-a") and not answers("pi-b")
