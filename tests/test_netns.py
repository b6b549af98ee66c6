"""A fleet of real hosts: each device in its own network namespace, with its own address and sshd,
on a LAN with a password-protected Redis. Driven as a user would: `fab` commands and a producer
script, with the broker URL only in the inventory (its password from ``${VAR}``).

Skipped, saying why, only where ``ip netns`` is not permitted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

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
from catdog.tasks.examples import read_temperature
use_inventory(sys.argv[1])
where = run_on.delay("all", "ip -4 -o addr show scope global").get(timeout=60)
sensors = [read_temperature.delay().get(timeout=60)["device"] for _ in range(12)]
print(json.dumps({"addresses": {r["device"]: r["stdout"] for r in where}, "sensors": sensors}))
"""


@pytest.fixture(scope="module")
def hosts(lan: Lan) -> dict[str, LanHost]:
    return {name: lan.add_host(name) for name in ("pi-a", "pi-b", "zero")}


def lan_inventory(lan: Lan, hosts: dict[str, LanHost], folder: Path, password_var: str,
                  port: int) -> Path:
    path = folder / "catdog.yaml"
    path.write_text(yaml.safe_dump({
        "broker": f"redis://:${{{password_var}}}@{lan.gateway}:{port}/0",
        "tmux_socket": f"catdog-lan-{uuid.uuid4().hex[:6]}",
        "devices": {
            "pi-a": lan.device(hosts["pi-a"], ["camera"], concurrency=2),
            "pi-b": lan.device(hosts["pi-b"], ["sensor"], pool="threads", concurrency=2),
            "zero": lan.device(hosts["zero"], ["sensor", "gpio"], pool="solo"),
            "laptop": device_spec(["gpu"]),
        },
    }, sort_keys=False))
    return path


def test_each_device_is_its_own_host_on_the_lan(lan: Lan, hosts: dict[str, LanHost],
                                                tmp_path: Path) -> None:
    password, port = lan.start_redis()
    inventory = lan_inventory(lan, hosts, tmp_path, "CATDOG_LAN_PASSWORD", port)
    env = _env(CATDOG_LAN_PASSWORD=password)
    try:
        doctor = fab("doctor", "--inventory", str(inventory), "--json", env=env)
        rows = json.loads(doctor.stdout)
        assert doctor.returncode == 0, [r for r in rows if r["state"] != "OK"]
        brokers = {r["device"]: next(c["detail"] for c in r["checks"] if c["name"] == "broker")
                   for r in rows}
        assert set(brokers.values()) == {f"{lan.gateway}:{port}"}  # reached from each namespace

        launched = fab("launch", "--inventory", str(inventory), "--json", env=env)
        assert launched.returncode == 0, launched.stdout + launched.stderr
        rows = json.loads(launched.stdout)
        assert [(r["device"], r["state"]) for r in rows] == [
            ("pi-a", READY), ("pi-b", READY), ("zero", READY), ("laptop", READY)]
        print("LAN launch times:", {r["device"]: r["elapsed_s"] for r in rows})

        produced = subprocess.run([sys.executable, "-c", PRODUCER, str(inventory)], env=env,
                                  capture_output=True, text=True, timeout=180, check=False)
        assert produced.returncode == 0, produced.stderr
        seen = json.loads(produced.stdout)
        for name, host in hosts.items():  # each device sees only its own address
            addresses = [line.split()[3] for line in seen["addresses"][name].splitlines()]
            assert addresses == [f"{host.address}/24"], (name, addresses)
        assert f"{lan.gateway}/24" in seen["addresses"]["laptop"]
        assert set(seen["sensors"]) <= {"pi-b", "zero"} and len(seen["sensors"]) == 12

        # every result is in, but a device's heartbeat (every 2 s) may still say the last task
        # runs: idle within a few beats
        wanted = [("pi-a", "idle"), ("pi-b", "idle"), ("zero", "idle"), ("laptop", "idle")]
        deadline = time.monotonic() + 10
        while True:
            status = fab("status", "--inventory", str(inventory), "--json", env=env)
            states = [(r["device"], r["state"]) for r in json.loads(status.stdout)]
            if states == wanted or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert states == wanted
    finally:
        stopped = fab("stop", "--inventory", str(inventory), "--json", env=env)
        end_server(yaml.safe_load(inventory.read_text())["tmux_socket"])  # and its socket file
    assert [r["state"] for r in json.loads(stopped.stdout)] == ["STOPPED"] * 4, stopped.stderr


def test_doctor_from_a_namespace_sees_that_a_loopback_broker_is_not_the_coordinators(
        lan: Lan, hosts: dict[str, LanHost], tmp_path: Path, redis_url: str) -> None:
    inventory = tmp_path / "catdog.yaml"
    inventory.write_text(yaml.safe_dump({"devices": {
        "pi-a": lan.device(hosts["pi-a"], []), "laptop": device_spec([])}}))
    done = fab("doctor", "--inventory", str(inventory), "--json",
               env=_env(CATDOG_BROKER_URL=redis_url))
    assert done.returncode == 1
    rows = {r["device"]: {c["name"]: c for c in r["checks"]} for r in json.loads(done.stdout)}
    assert rows["laptop"]["broker"]["ok"] is True  # the coordinator's loopback has the broker
    broker = rows["pi-a"]["broker"]
    assert broker["ok"] is False and "Connection refused" in broker["detail"]
    assert "loopback, which on the device is the device itself" in broker["fix"]
    assert all(c["ok"] for name, c in rows["pi-a"].items() if name != "broker")
