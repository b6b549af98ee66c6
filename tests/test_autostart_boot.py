"""``fab enable`` / ``fab disable`` against a real systemd: a device that boots
(:mod:`bench.systemdbox`, its own address and sshd on the network-namespace LAN) comes back after a
power cut with nobody running ``fab launch`` and runs the task queued while it was down; its killed
worker is replaced; disabled, it starts nothing at its next boot. Also an ordinary user's lingering
user unit, and the box as a coordinator (its embedded Redis and local device back after a power cut).

The box never reaches the machine's own ``/tmp``, ``/var/tmp`` or ``/run``: canaries there survive
every boot and are invisible inside.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.systemdbox import SystemdBox, guard_files, lan_box
from catdog.records import OFFLINE_AFTER_S
from ops.autostart import RESTART_S
from ops.embedded_redis import EmbeddedRedis
from ops.lan_broker import user_name

from .conftest import IS_ROOT, ROOT, device_spec
from .lan import Lan, LanHost, NetnsUnavailable
from .test_autostart import _wait
from .test_cli import _env, fab

pytestmark = pytest.mark.slow

PRODUCER = """
import json, sys
from catdog import use_inventory
from catdog.tasks import run_on
use_inventory(sys.argv[1])
result = run_on.delay("pi", "hostname; cat /proc/1/comm")
print("sent", flush=True)
print(json.dumps(result.get(timeout=180)), flush=True)
"""


@pytest.fixture
def booted(tmp_path: Path) -> Iterator[tuple[Lan, LanHost, SystemdBox]]:
    yield from _booted(tmp_path, with_user=False)


@pytest.fixture
def booted_with_user(tmp_path: Path) -> Iterator[tuple[Lan, LanHost, SystemdBox]]:
    """A box with an ordinary user ``pi`` of its own (its own /etc/passwd), reached over SSH."""
    yield from _booted(tmp_path, with_user=True)


def _booted(tmp_path: Path, with_user: bool) -> Iterator[tuple[Lan, LanHost, SystemdBox]]:
    if not IS_ROOT:
        pytest.skip("booting systemd in namespaces needs root (CI is root)")
    try:
        (tmp_path / "lan").mkdir()
        lan = Lan(tmp_path / "lan")
    except NetnsUnavailable as exc:
        pytest.skip(f"network-namespace device not run: {exc}")
    box = None
    try:
        users = {"pi": (lan.folder / "client_key.pub").read_text()} if with_user else None
        host, box = lan_box(lan, "pi", users)
        yield lan, host, box
    finally:
        if box is not None:
            box.power_off()
        lan.close()


def test_a_boot_never_reaches_the_machines_tmp_var_tmp_or_run(
        booted: tuple[Lan, LanHost, SystemdBox]) -> None:
    lan, _, box = booted
    canaries = [Path(d) / f"catdog-canary-{uuid.uuid4().hex[:8]}" for d in ("/tmp", "/var/tmp",
                                                                            "/run")]
    for canary in canaries:
        canary.write_text("still here\n")
    try:
        box.boot()
        seen = box.run("sh", "-c", "ls -A /tmp /var/tmp /run").stdout
        for canary in canaries:
            assert canary.name not in seen, seen  # the box has its own, fresh ones
        assert str(lan.folder) in box.run("ls", "-d", str(lan.folder)).stdout  # its "disk"
        assert box.run("cat", "/proc/1/comm").stdout.strip() == "systemd"
        assert box.run("hostname").stdout.strip() == "pi"
        box.reboot()
        box.power_off()
    finally:
        for canary in canaries:
            assert canary.read_text() == "still here\n"
            canary.unlink()
    assert not [g for g in guard_files(box.uid) if g.exists()]  # the boot's guards are gone


def _ssh_up(host: LanHost) -> None:
    from bench.lan import _wait_for_port

    _wait_for_port(host.address, 22, None)


def _status(inventory: Path, env: dict[str, str]) -> dict[str, Any]:
    done = fab("status", "--inventory", str(inventory), "--json", env=env)
    assert done.returncode == 0, done.stderr
    row: dict[str, Any] = json.loads(done.stdout)[0]
    return row


def test_an_enabled_device_comes_back_after_a_power_cut_and_runs_what_was_queued(
        booted: tuple[Lan, LanHost, SystemdBox], tmp_path: Path) -> None:
    lan, host, box = booted
    canaries = [Path(d) / f"catdog-canary-{uuid.uuid4().hex[:8]}" for d in ("/tmp", "/var/tmp")]
    for canary in canaries:
        canary.write_text("still here\n")
    try:
        first_boot = box.boot()
        _ssh_up(host)
        for canary in canaries:  # hidden inside the box, untouched outside
            assert box.run("test", "-e", str(canary), check=False).returncode == 1
        env = _env()  # no broker: the embedded Redis serves the LAN, the device as its own user
        inventory = tmp_path / "catdog.yaml"
        inventory.write_text(yaml.safe_dump({
            "tmux_socket": f"catdog-box-{uuid.uuid4().hex[:6]}",
            "devices": {"pi": lan.device(host, ["boot"])}}))

        enabled = fab("enable", "--inventory", str(inventory), "--json", env=env)
        assert enabled.returncode == 0, enabled.stdout + enabled.stderr
        [row] = json.loads(enabled.stdout)
        assert (row["state"], row["nodename"]) == ("ENABLED", "pi@pi"), row
        assert "catdog-pi.service (system unit, runs as root)" in row["reason"]
        assert box.run("systemctl", "is-enabled", "catdog-pi.service").stdout.strip() == "enabled"
        env_file = Path(lan.device(host, [])["workdir"]) / ".catdog" / "run" / "pi.env"
        assert f"redis://{user_name('pi')}:" in env_file.read_text()  # its own broker user
        assert _status(inventory, env)["enabled"] is True
        launched = fab("launch", "--inventory", str(inventory), "--json", env=env)
        assert [r["state"] for r in json.loads(launched.stdout)] == ["ALREADY RUNNING"], \
            launched.stdout + launched.stderr

        box.power_off()  # the power cut; a task is queued while the device is down
        producer = subprocess.Popen([sys.executable, "-c", PRODUCER, str(inventory)], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert producer.stdout is not None and producer.stdout.readline() == "sent\n"
            _wait(lambda: _status(inventory, env)["state"] == "offline", 20, "pi offline")
            booted_at = time.monotonic()
            reboot = box.boot()
            _wait(lambda: _status(inventory, env)["state"] in ("idle", "busy"), 60,
                  "pi back without fab launch")
            back = time.monotonic() - booted_at
            result = json.loads(producer.stdout.readline())
            assert producer.wait(timeout=60) == 0
        finally:
            if producer.poll() is None:
                producer.kill()
        assert (result["device"], result["exit_code"]) == ("pi", 0), result
        assert result["stdout"].split() == ["pi", "systemd"]  # it ran inside the booted box
        print(f"boot {first_boot:.2f}s; reboot {reboot:.2f}s; worker answering "
              f"{back:.1f}s after power on")

        # the worker killed inside the box: its unit starts a new one
        socket = yaml.safe_load(inventory.read_text())["tmux_socket"]

        def pane_pid() -> str:
            return box.run("env", f"TMUX_TMPDIR={host.home / 'tmp'}", "tmux", "-L", socket,
                           "display-message", "-p", "-t", "=catdog-pi:",
                           "#{pane_pid}", check=False).stdout.strip()

        old = pane_pid()
        box.run("kill", "-9", old)
        killed_at = time.monotonic()
        _wait(lambda: pane_pid() not in ("", old) and _status(inventory, env)["state"] == "idle",
              45, "a new worker after the old one was killed")
        print(f"worker killed: a new one answers {time.monotonic() - killed_at:.1f}s later")

        disabled = fab("disable", "--inventory", str(inventory), "--json", env=env)
        assert disabled.returncode == 0, disabled.stdout + disabled.stderr
        assert [r["state"] for r in json.loads(disabled.stdout)] == ["DISABLED"]
        assert _status(inventory, env)["enabled"] is False
        box.reboot()
        _ssh_up(host)
        time.sleep(10)  # longer than a worker takes to answer after a boot (measured above)
        row = _status(inventory, env)
        assert row["state"] == "offline" and row["enabled"] is False, row
        listed = box.run("systemctl", "list-unit-files", "--no-legend", "catdog-pi.service",
                         check=False).stdout
        assert listed.strip() == "", listed
        assert fab("stop", "--inventory", str(inventory), "--json", env=env).returncode == 0
    finally:
        EmbeddedRedis(tmp_path / ".catdog").stop()  # fab stop did, unless the test failed
        for canary in canaries:
            assert canary.read_text() == "still here\n"  # the machine's own /tmp and /var/tmp
            canary.unlink()


def test_a_coordinator_that_reboots_brings_back_its_redis_beat_and_local_device(
        booted: tuple[Lan, LanHost, SystemdBox], tmp_path: Path) -> None:
    """The box as the coordinator: `fab enable --coordinator` (the embedded Redis and beat) and
    `fab enable` of a `host: local` device, run there; after a power cut `fab status` (which never
    starts the embedded Redis) finds the device idle and enabled, and beat runs again."""
    lan, _, box = booted
    fab_bin = str(Path(sys.executable).parent / "fab")
    folder = lan.folder / "coordinator"
    folder.mkdir()
    inventory = folder / "catdog.yaml"
    inventory.write_text(yaml.safe_dump({
        "tmux_socket": f"catdog-co-{uuid.uuid4().hex[:6]}",
        "devices": {"here": device_spec(["boot"])},
        "schedule": {"uptime": {"task": "tasks.run_on", "every": "60s", "on": "here",
                                "kwargs": {"command": "uptime"}}}}))

    def run_fab(*args: str) -> subprocess.CompletedProcess[str]:
        return box.run("env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/root", "sh",
                       "-c", 'cd "$0" && exec "$@"', str(ROOT), fab_bin, *args, "--inventory",
                       str(inventory), "--json", check=False, timeout=120)

    box.boot()
    enabled = run_fab("enable", "--coordinator")
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    assert [(r["device"], r["state"]) for r in json.loads(enabled.stdout)] == [
        ("redis", "ENABLED"), ("beat", "ENABLED")]  # beat: the inventory has a schedule
    devices = run_fab("enable")
    assert devices.returncode == 0, devices.stdout + devices.stderr
    assert [r["state"] for r in json.loads(devices.stdout)] == ["ENABLED"]
    assert (folder / ".catdog" / "redis.pid").exists()

    box.power_off()
    time.sleep(OFFLINE_AFTER_S + 1)  # the worker's last heartbeat (kept by Redis) is stale now
    powered = time.monotonic()
    box.boot()

    def row() -> dict[str, Any] | None:
        done = run_fab("status")
        found: dict[str, Any] = json.loads(done.stdout)[0] if done.returncode == 0 else {}
        return found if found.get("state") == "idle" else None

    back = _wait(row, 60, "the local device idle after the coordinator's reboot")
    assert back["enabled"] is True

    def unit(name: str) -> str:
        return box.run("systemctl", "is-active", name, check=False).stdout.strip()

    _wait(lambda: unit("catdog-beat.service") == "active", 30, "beat back after the reboot")
    print(f"coordinator back (Redis and its local device) {time.monotonic() - powered:.1f}s "
          f"after power on")
    stopped = run_fab("stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    services = ("catdog-redis.service", "catdog-beat.service")
    _wait(lambda: {unit(u) for u in services} == {"inactive"}, 15, "the units ending after stop")
    time.sleep(RESTART_S + 1)  # stopped on purpose: not restarted
    assert {unit(u) for u in services} == {"inactive"}
    assert not (folder / ".catdog" / "redis.pid").exists()
    disabled = run_fab("disable", "--coordinator")
    assert [(r["device"], r["state"]) for r in json.loads(disabled.stdout)] == [
        ("redis", "DISABLED"), ("beat", "DISABLED")]


def test_an_ordinary_user_gets_a_lingering_user_unit_that_comes_back_after_a_power_cut(
        booted_with_user: tuple[Lan, LanHost, SystemdBox], tmp_path: Path) -> None:
    lan, host, box = booted_with_user
    box.boot()
    _ssh_up(host)
    password, port = lan.start_redis()
    env = _env(CATDOG_BOX_PASSWORD=password)
    inventory = tmp_path / "catdog.yaml"
    spec = {**lan.device(host, ["boot"], user="pi", workdir="/home/pi/work")}
    spec.pop("allow_root", None)
    inventory.write_text(yaml.safe_dump({
        "broker": f"redis://:${{CATDOG_BOX_PASSWORD}}@{lan.gateway}:{port}/0",
        "tmux_socket": f"catdog-user-{uuid.uuid4().hex[:6]}", "devices": {"pi": spec}}))

    refused = fab("enable", "--inventory", str(inventory), "--json", env=env)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    [row] = json.loads(refused.stdout)
    assert row["state"] == "FAILED" and "sudo loginctl enable-linger pi" in row["reason"], row

    box.run("loginctl", "enable-linger", "pi")  # what the device's admin runs once
    enabled = fab("enable", "--inventory", str(inventory), "--json", env=env)
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    [row] = json.loads(enabled.stdout)
    assert row["state"] == "ENABLED" and "user unit of pi, lingering on" in row["reason"], row
    assert (box.folder / "homes" / "pi" / ".config" / "systemd" / "user" /
            "catdog-pi.service").exists()

    box.power_off()
    _wait(lambda: _status(inventory, env)["state"] == "offline", 20, "pi offline")
    powered = time.monotonic()
    box.boot()
    back = _wait(lambda: (r := _status(inventory, env))["state"] == "idle" and r, 60,
                 "pi's worker back after the power cut")
    assert back["enabled"] is True
    print(f"user unit: worker answering {time.monotonic() - powered:.1f}s after power on")
    workers = box.run("sh", "-c", "ps -eo user=,args= | grep -e '[-]m workers --device pi'"
                      ).stdout.splitlines()
    assert workers and {w.split()[0] for w in workers} == {"pi"}, workers  # not root

    disabled = fab("disable", "--inventory", str(inventory), "--json", env=env)
    assert [r["state"] for r in json.loads(disabled.stdout)] == ["DISABLED"], disabled.stdout
    assert fab("stop", "--inventory", str(inventory), "--json", env=env).returncode == 0
