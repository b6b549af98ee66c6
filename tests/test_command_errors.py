"""What the `fab` commands say when something is wrong before they can work: a broker that does not
answer, a bad option value, a stopped fleet. Each through the real `fab`, one line on stderr and
an exit status, nothing started that was not asked for."""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from ops.embedded_redis import EmbeddedRedis, alive

from .conftest import device_spec
from .test_cli import _env, fab
from .tmuxserver import end_server

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _no_tmux_server(socket_name: str) -> bool:
    return subprocess.run(["tmux", "-L", socket_name, "list-sessions"], capture_output=True,
                          check=False).returncode != 0


@pytest.fixture
def fleet_file(tmp_path: Path):
    """An inventory of two local devices on a private tmux socket (nothing started)."""
    name = f"catdog-err-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "catdog.yaml"
    path.write_text(yaml.safe_dump({
        "tmux_socket": name,
        "devices": {"cam": device_spec(["camera"]), "probe": device_spec(["sensor"], pool="solo")},
    }))
    yield path
    if (tmp_path / ".catdog").exists() or not _no_tmux_server(name):
        fab("stop", "--force", "--inventory", str(path))
    end_server(name)


def _socket(inventory: Path) -> str:
    return str(yaml.safe_load(inventory.read_text())["tmux_socket"])


DEAD_BROKER_COMMANDS = [
    ["status"], ["status", "--json"], ["status", "--watch"], ["killswitch"],
    ["killswitch", "--on", "--reason", "maintenance"], ["killswitch", "--off"], ["metrics"],
    ["launch"], ["restart"], ["beat"], ["flower"], ["quarantine"], ["quarantine", "--json"],
    ["quarantine", "--requeue", "some-id"], ["disable"],
]


@pytest.mark.parametrize("command", DEAD_BROKER_COMMANDS, ids=" ".join)
def test_a_broker_that_does_not_answer_is_one_line_naming_it(fleet_file: Path,
                                                              command: list[str]) -> None:
    port = _free_port()
    done = fab(*command, "--inventory", str(fleet_file),
               env=_env(CATDOG_BROKER_URL=f"redis://:s3cret@127.0.0.1:{port}/0"))
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"catdog: broker redis://:***@127.0.0.1:{port}/0 does not answer (Connection refused): "
        "check that Redis runs there and that $CATDOG_BROKER_URL is right")
    assert "Traceback" not in done.stderr and "s3cret" not in done.stderr + done.stdout
    assert len(done.stderr.strip().splitlines()) <= 2  # a progress line at most, then the error
    assert _no_tmux_server(_socket(fleet_file))  # no worker, no beat, no Flower started


def test_a_broker_that_accepts_but_never_answers_is_one_line_too(fleet_file: Path) -> None:
    with socket.socket() as silent:  # listens, never reads: connections hang, as behind a firewall
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        done = fab("killswitch", "--on", "--reason", "x", "--inventory", str(fleet_file),
                   env=_env(CATDOG_BROKER_URL=f"redis://:pw@127.0.0.1:{port}/0"))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"catdog: broker redis://:***@127.0.0.1:{port}/0 does not answer (timed out): check "
        "that Redis runs there and that $CATDOG_BROKER_URL is right")


def test_a_dead_broker_in_the_inventory_names_the_inventory(fleet_file: Path) -> None:
    port = _free_port()
    doc = yaml.safe_load(fleet_file.read_text())
    fleet_file.write_text(yaml.safe_dump({"broker": f"redis://:pw@127.0.0.1:{port}/0", **doc}))
    done = fab("flower", "--inventory", str(fleet_file))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"catdog: broker redis://:***@127.0.0.1:{port}/0 does not answer (Connection refused): "
        f"check that Redis runs there and that `broker:` in {fleet_file} is right")
    assert "RUNNING" not in done.stdout
    assert _no_tmux_server(_socket(fleet_file))


def test_a_wrong_broker_password_is_said_as_such(fleet_file: Path, tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "other" / ".catdog")
    url = server.ensure_running()
    try:
        wrong = url.replace(url.split("@")[0], "redis://:wrong")
        done = fab("status", "--inventory", str(fleet_file), env=_env(CATDOG_BROKER_URL=wrong))
        assert done.returncode == 1
        assert "does not answer (it refused the password)" in done.stderr
        assert "Traceback" not in done.stderr
    finally:
        server.stop()


BAD_OPTIONS = [
    (["launch", "--timeout", "abc"], "--timeout 'abc': expected a number of seconds"),
    (["launch", "--timeout", "-5"], "--timeout '-5': expected a number of seconds above 0"),
    (["stop", "--timeout", "soon"], "--timeout 'soon': expected a number of seconds"),
    (["restart", "--timeout", "nan"], "--timeout 'nan': expected a number of seconds"),
    (["logs", "--devices", "cam", "--lines", "x"], "--lines 'x': expected a whole number"),
    (["logs", "--devices", "cam", "--lines", "0"], "--lines '0': expected a whole number"),
    (["flower", "--port", "x"], "--port 'x': expected a TCP port from 1 to 65535"),
    (["flower", "--port", "70000"], "--port '70000': expected a TCP port from 1 to 65535"),
    (["flower", "--address", "not an address"], "--address 'not an address': expected an IP"),
    (["metrics", "--since", "soon"], "--since 'soon': expected a duration like 90s"),
    (["launch", "--loglevel", "loud"], "--loglevel 'loud' is not a log level"),
    (["launch", "--devices", "cam,nosuch"], "unknown device(s) nosuch"),
    (["status", "--devices", "nosuch"], "unknown device(s) nosuch"),
    (["status", "--devices", ","], "--devices ',': expected comma-separated device names"),
    (["stop", "--devices", " , "], "--devices ' , ': expected comma-separated device names"),
]


@pytest.mark.parametrize(("command", "said"), BAD_OPTIONS, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else "")
def test_a_bad_option_value_is_one_line_exit_2_and_starts_nothing(fleet_file: Path,
                                                                   command: list[str],
                                                                   said: str) -> None:
    done = fab(*command, "--inventory", str(fleet_file))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0], done.stderr
    assert done.stdout == ""
    assert not (fleet_file.parent / ".catdog").exists()  # not even the broker
    assert _no_tmux_server(_socket(fleet_file))


def test_a_missing_inventory_is_one_line_exit_2(tmp_path: Path) -> None:
    done = fab("status", "--inventory", str(tmp_path / "nope.yaml"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"catdog: {tmp_path / 'nope.yaml'}: does not exist; choose "
        "another inventory with --inventory PATH or $CATDOG_INVENTORY"]  # the path once


def test_a_stopped_fleet_is_shown_offline_without_starting_its_redis(fleet_file: Path) -> None:
    state = fleet_file.parent / ".catdog"
    started = fab("killswitch", "--off", "--inventory", str(fleet_file))
    assert started.returncode == 0, started.stderr
    port = int((state / "redis.port").read_text())
    assert started.stderr.splitlines()[0] == (
        f"catdog: started the embedded Redis for {fleet_file} on 127.0.0.1:{port} (data in "
        f"{state}); `fab stop --inventory {fleet_file}` stops it")
    pid = int((state / "redis.pid").read_text())
    assert alive(pid)
    again = fab("killswitch", "--inventory", str(fleet_file))
    assert again.returncode == 0 and "started the embedded Redis" not in again.stderr

    assert fab("stop", "--inventory", str(fleet_file)).returncode == 0
    assert not alive(pid)
    for command in (["status", "--json"], ["status"], ["killswitch"], ["killswitch", "--json"],
                    ["metrics"]):
        done = fab(*command, "--inventory", str(fleet_file))
        assert done.returncode == 0, (command, done.stderr)
        assert "started the embedded Redis" not in done.stderr
        assert not (state / "redis.pid").exists()
        assert not EmbeddedRedis(state).answers()
        if command == ["status", "--json"]:
            rows = json.loads(done.stdout)
            assert [(r["device"], r["state"], r["reason"], r["backlog"]) for r in rows] == [
                (name, "offline", "fleet stopped (embedded Redis not running)", None)
                for name in ("cam", "probe")]
        if command == ["killswitch", "--json"]:
            doc = json.loads(done.stdout)
            assert doc["on"] is None and "embedded Redis not running" in doc["note"]
            assert {d["state"] for d in doc["devices"]} == {"offline"}
    shown = fab("status", "--inventory", str(fleet_file))
    assert "fleet stopped (embedded Redis not running)" in shown.stdout
