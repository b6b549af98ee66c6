"""A LAN fleet on the embedded Redis alone: two devices, each a network namespace with its own
address and sshd, an inventory with no ``broker:`` and no ``$CATDOG_BROKER_URL``. The embedded
Redis listens on the coordinator's address the devices reach, each device connects as an ACL
user of its own that cannot reconfigure, flush, shut down or replicate it, and its URL is only
in the device's mode-600 env file; with ``embedded: {tls: true}`` the devices speak ``rediss://``
to the TLS front, checking its certificate against the CA copied to them.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import redis
import yaml

from catdog.broker import tls_settings
from ops.embedded_redis import EmbeddedRedis, alive
from ops.results import READY

from .conftest import device_spec
from .lan import Lan, LanHost
from .test_cli import _env, fab
from .tmuxserver import end_server

pytestmark = pytest.mark.slow

PRODUCER = """
import json, sys
from catdog import use_inventory
from tasks import run_on
from catdog.tasks.examples import whoami
use_inventory(sys.argv[1])
where = {r["device"]: r["stdout"] for r in
         run_on.delay("all", "ip -4 -o addr show scope global").get(timeout=60)}
calls = [whoami.on(name).delay() for _ in range(5) for name in ("pi-a", "pi-b", "laptop")]
# a fleet-wide rate limit (a Lua script) that defers some of them (the deferral's sorted set)
limited = [whoami.on(name).apply_async(limit="burst") for _ in range(3) for name in ("pi-a", "pi-b")]
print(json.dumps({"addresses": where, "ran_on": [c.get(timeout=60)["device"] for c in calls],
                  "limited": sorted(c.get(timeout=60)["device"] for c in limited)}))
"""
#: what a device's credentials must be refused (and what each would do to the fleet)
ADMIN_COMMANDS = [
    ("CONFIG", "SET", "appendonly", "no"), ("FLUSHALL",), ("FLUSHDB",), ("SHUTDOWN", "NOSAVE"),
    ("REPLICAOF", "10.0.0.9", "6379"), ("SLAVEOF", "10.0.0.9", "6379"), ("DEBUG", "SLEEP", "0"),
    ("ACL", "SETUSER", "intruder", "on", ">pw", "+@all"), ("KEYS", "*"), ("MONITOR",),
    ("BGREWRITEAOF",), ("CLIENT", "KILL", "TYPE", "normal"),
]


@pytest.fixture(scope="module")
def hosts(lan: Lan) -> dict[str, LanHost]:
    return {name: lan.add_host(name) for name in ("pi-a", "pi-b")}


def write_inventory(lan: Lan, hosts: dict[str, LanHost], folder: Path, **top: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "catdog.yaml"
    path.write_text(yaml.safe_dump({
        "tmux_socket": f"catdog-lanb-{uuid.uuid4().hex[:6]}", **top, "limits": {"burst": "2/s"},
        "devices": {"pi-a": lan.device(hosts["pi-a"], ["camera"], concurrency=2),
                    "pi-b": lan.device(hosts["pi-b"], ["sensor"], pool="solo"),
                    "laptop": device_spec(["gpu"])},  # the coordinator itself
    }, sort_keys=False))
    return path


def device_env(lan: Lan, device: str) -> tuple[Path, dict[str, str]]:
    path = lan.folder / device / "work" / ".catdog" / "run" / f"{device}.env"
    return path, dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def namespace_cmdlines(host: LanHost) -> list[str]:
    pids = subprocess.run(["ip", "netns", "pids", host.namespace], capture_output=True,
                          text=True, check=True).stdout.split()
    found = []
    for pid in pids:
        try:
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found


def device_client(url: str) -> redis.Redis:
    """A client with the device's credentials, from the coordinator (as the device's own)."""
    options = tls_settings(url).get("broker_use_ssl", {})
    return redis.Redis.from_url(url.split("?")[0], socket_timeout=5, **options)


def run_fleet(lan: Lan, hosts: dict[str, LanHost], inventory: Path, env: dict[str, str]
              ) -> dict[str, Any]:
    """Launch, run tasks on each device, status, as a user would; what the producer saw."""
    launched = fab("launch", "--inventory", str(inventory), "--json", env=env)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    assert [(r["device"], r["state"]) for r in json.loads(launched.stdout)] == [
        ("pi-a", READY), ("pi-b", READY), ("laptop", READY)]
    assert "started the embedded Redis" in launched.stderr
    produced = subprocess.run([sys.executable, "-c", PRODUCER, str(inventory)], env=env,
                              capture_output=True, text=True, timeout=180, check=False)
    assert produced.returncode == 0, produced.stderr
    seen = json.loads(produced.stdout)
    for name, host in hosts.items():  # each task really ran in the device's namespace
        assert seen["addresses"][name].split()[3] == f"{host.address}/24"
    assert seen["ran_on"] == ["pi-a", "pi-b", "laptop"] * 5
    assert seen["limited"] == ["pi-a"] * 3 + ["pi-b"] * 3
    status = fab("status", "--inventory", str(inventory), "--json", env=env)
    assert status.returncode == 0, status.stderr
    assert [(r["device"], r["state"]) for r in json.loads(status.stdout)] == [
        ("pi-a", "idle"), ("pi-b", "idle"), ("laptop", "idle")]
    # what else workers do with the broker, under their ACL users: pause and resume, metrics
    for switch in (["--on", "--reason", "lan test"], ["--off"]):
        done = fab("killswitch", "--inventory", str(inventory), *switch, "--json", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
    metrics = fab("metrics", "--inventory", str(inventory), "--json", env=env)
    assert metrics.returncode == 0, metrics.stdout + metrics.stderr
    doctor = fab("doctor", "--inventory", str(inventory), "--json", env=env)
    rows = json.loads(doctor.stdout)
    assert doctor.returncode == 0, [r for r in rows if r["state"] != "OK"]
    brokers = {r["device"]: next(c["detail"] for c in r["checks"] if c["name"] == "broker")
               for r in rows}  # reached from each namespace, with the device's own URL
    assert brokers["pi-a"] == brokers["pi-b"] and lan.gateway in brokers["pi-a"]
    assert brokers["laptop"].startswith("127.0.0.1:")  # a local device stays on loopback
    return seen


def stop_fleet(inventory: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    stopped = fab("stop", "--inventory", str(inventory), "--json", env=env)
    end_server(yaml.safe_load(inventory.read_text())["tmux_socket"])
    return stopped


def check_url_only_in_private_files(lan: Lan, hosts: dict[str, LanHost], state: Path
                                    ) -> dict[str, str]:
    urls = {}
    admin_password = (state / "redis.password").read_text().strip()
    for name, host in hosts.items():
        shipped = [f for f in (lan.folder / name / "work").rglob("*") if f.is_file()]
        assert shipped and not [f for f in shipped if admin_password.encode() in f.read_bytes()]
        env_file, values = device_env(lan, name)
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        urls[name] = values["CATDOG_BROKER_URL"]
        password = urlsplit(urls[name]).password
        assert password and urlsplit(urls[name]).username == f"catdog-{name}"
        lines = namespace_cmdlines(host)
        assert any("-m workers" in line for line in lines), lines  # the worker runs there
        assert not [line for line in lines if password in line or ("redis" in line.lower()
                    and "://" in line)], lines
    assert urlsplit(urls["pi-a"]).password != urlsplit(urls["pi-b"]).password
    local = (state / "run" / "laptop.env").read_text()  # its own user too, on loopback
    assert "CATDOG_BROKER_URL=redis://catdog-laptop:" in local and "@127.0.0.1:" in local
    return urls


def denied(state: Path) -> list[dict[str, Any]]:
    """The commands the broker refused a device's user (Redis's ``ACL LOG``), as seen so far."""
    admin = redis.Redis.from_url(EmbeddedRedis(state).url)
    try:
        return [{k: entry[k] for k in ("username", "object", "reason")}
                for entry in admin.acl_log()]
    finally:
        admin.close()


def check_device_refused_admin(url: str) -> None:
    client = device_client(url)
    try:
        assert client.ping()
        for command in ADMIN_COMMANDS:
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.execute_command(*command)
    finally:
        client.close()


def test_a_lan_fleet_runs_on_the_embedded_redis_alone(lan: Lan, hosts: dict[str, LanHost],
                                                     tmp_path: Path) -> None:
    inventory = write_inventory(lan, hosts, tmp_path / "plain")
    env = _env()
    state = inventory.parent / ".catdog"
    try:
        run_fleet(lan, hosts, inventory, env)
        conf = (state / "redis.conf").read_text().splitlines()
        assert f"bind 127.0.0.1 {lan.gateway}" in conf  # the route's source to each device
        assert {"appendonly yes", "maxmemory-policy noeviction", "protected-mode yes"} <= set(conf)
        assert any(line.startswith("requirepass ") for line in conf)
        assert stat.S_IMODE((state / "redis.conf").stat().st_mode) == 0o600
        urls = check_url_only_in_private_files(lan, hosts, state)
        assert denied(state) == []  # what the fleet did needed nothing a device may not do
        for name, url in urls.items():
            assert urlsplit(url).hostname == lan.gateway and url.startswith("redis://"), name
            check_device_refused_admin(url)
        admin = redis.Redis.from_url(EmbeddedRedis(state).url)
        assert admin.config_get("appendonly") == {"appendonly": "yes"}  # untouched by devices
        admin.close()
        worker_logs = "".join(p.read_text() for p in lan.folder.glob("pi-*/work/.catdog/logs/*"))
        assert "NOPERM" not in worker_logs and "NoPermission" not in worker_logs
    finally:
        stopped = stop_fleet(inventory, env)
    assert [r["state"] for r in json.loads(stopped.stdout)] == ["STOPPED"] * 3, stopped.stderr
    assert not EmbeddedRedis(state).answers()


def test_a_lan_fleet_on_tls_checks_the_generated_ca(lan: Lan, hosts: dict[str, LanHost],
                                                   tmp_path: Path) -> None:
    inventory = write_inventory(lan, hosts, tmp_path / "tls", embedded={"tls": True})
    env = _env()
    state = inventory.parent / ".catdog"
    try:
        run_fleet(lan, hosts, inventory, env)
        server = EmbeddedRedis(state)
        assert "bind 127.0.0.1" in (state / "redis.conf").read_text().splitlines()
        with pytest.raises(redis.ConnectionError):  # the plain port is not on the LAN
            redis.Redis(host=lan.gateway, port=server.port, socket_timeout=2).ping()
        urls = check_url_only_in_private_files(lan, hosts, state)
        assert denied(state) == []
        for name, url in urls.items():
            parts = urlsplit(url)
            assert parts.scheme == "rediss" and parts.hostname == lan.gateway
            assert parts.port == server.tls_port()
            ca = dict(parse_qsl(parts.query))["ssl_ca_certs"]
            assert ca == str(lan.folder / name / "work" / ".catdog" / "run" / "ca.pem")
            assert Path(ca).read_text() == (state / "tls" / "ca.pem").read_text()
            check_device_refused_admin(url)
        unchecked = redis.Redis(host=lan.gateway, port=server.tls_port(), ssl=True,
                                username="catdog-pi-a", password="x", socket_timeout=5)
        with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            unchecked.ping()  # the system's CAs do not vouch for it: clients really check
        front = server.front_pid()
        assert front is not None and alive(front)
    finally:
        stopped = stop_fleet(inventory, env)
    assert [r["state"] for r in json.loads(stopped.stdout)] == ["STOPPED"] * 3, stopped.stderr
    assert not alive(front) and not EmbeddedRedis(state).answers()


def test_an_embedded_listen_address_the_coordinator_lacks_is_refused_before_anything_starts(
        lan: Lan, hosts: dict[str, LanHost], tmp_path: Path) -> None:
    inventory = write_inventory(lan, hosts, tmp_path / "bad", embedded={"listen": "10.254.1.1"})
    done = fab("launch", "--inventory", str(inventory), env=_env())
    assert done.returncode == 2, done.stdout + done.stderr
    line = next(n for n, text in enumerate(inventory.read_text().splitlines(), 1)
                if "listen:" in text)
    assert done.stderr.strip() == (
        f"catdog: {inventory}:{line} embedded.listen: the coordinator has no address '10.254.1.1' "
        f"(the route to devices.pi-a leaves from {lan.gateway}); set it to an address of this "
        f"machine that the devices reach, or remove it to use the route to each device")
    assert not (inventory.parent / ".catdog" / "redis.port").exists()  # nothing started
