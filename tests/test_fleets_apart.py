"""Two fleets on one machine: two inventories in two folders, a device of the same name, the same
tmux socket. Neither command of the second ever acts on the first's sessions; each clash is
refused at once, naming the first inventory and the fix. Real ``fab`` commands, each inventory
with its own embedded Redis, real tmux."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from catdog.context import open_fleet
from catdog.loader import load_inventory
from ops import ownership, services
from ops.embedded_redis import alive
from ops.results import FAILED, READY, STOPPED
from ops.session import session_name
from ops.tmux import OWNER_OPTION, Tmux

from .conftest import ROOT, Sshd, device_spec
from .tmuxserver import end_server

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def fab(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATDOG_")}
    return subprocess.run([str(BIN / "fab"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180, check=False)


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    """Inventories ``first/catdog.yaml`` and ``second/catdog.yaml``: device ``alpha`` in each,
    one private tmux socket."""
    socket = f"catdog-apart-{uuid.uuid4().hex[:8]}"
    paths = []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        path = tmp_path / name / "catdog.yaml"
        path.write_text(yaml.safe_dump({"tmux_socket": socket,
                                        "devices": {"alpha": device_spec([], pool="solo")}}))
        paths.append(path)
    yield paths[0], paths[1], socket
    for path in paths:
        fab("stop", "--force", "--inventory", str(path))
    end_server(socket)


def rows(done: subprocess.CompletedProcess[str]) -> list[dict]:
    return json.loads(done.stdout)


def test_a_second_inventory_never_acts_on_the_first_ones_session(two) -> None:
    first, second, socket = two
    launched = fab("launch", "--inventory", str(first), "--json")
    assert launched.returncode == 0, launched.stderr
    pid = Tmux(socket).pane("catdog-alpha").pid
    assert alive(pid)

    for command in ("launch", "stop", "restart"):
        done = fab(command, "--inventory", str(second), "--devices", "alpha", "--json")
        assert done.returncode != 0, (command, done.stdout)
        [row] = rows(done)
        assert row["state"] == "FAILED", (command, row)
        assert row["reason"] == (
            f"device alpha: tmux session catdog-alpha on socket {socket} belongs to {first}; "
            f"stop it there (fab stop --inventory {first}) or give this inventory its own "
            f"`tmux_socket:`"), command
    whole = fab("stop", "--inventory", str(second), "--json")
    assert whole.returncode != 0 and [r["state"] for r in rows(whole)] == ["FAILED"]
    logs = fab("logs", "--inventory", str(second), "--devices", "alpha")
    assert logs.returncode != 0 and f"belongs to {first}" in logs.stderr, logs.stderr
    shown = fab("status", "--inventory", str(second), "--json")
    [row] = rows(shown)
    assert row["state"] == "offline" and f"belongs to {first}" in row["reason"], row

    assert Tmux(socket).pane("catdog-alpha").pid == pid and alive(pid)
    again = fab("launch", "--inventory", str(first), "--json")  # the first still serves
    assert [r["state"] for r in rows(again)] == ["ALREADY RUNNING"], again.stdout
    stopped = fab("stop", "--inventory", str(first), "--json")
    assert [r["state"] for r in rows(stopped)] == ["STOPPED"], stopped.stdout
    assert not alive(pid)


def test_an_older_catdogs_session_belongs_to_the_inventory_in_its_command(two) -> None:
    """A session without the owner record (as an older CatDog started it) is judged by the
    ``--inventory`` of its start command: refused to the other inventory, its own stops it."""
    first, second, socket = two
    assert fab("launch", "--inventory", str(first), "--json").returncode == 0
    tmux = Tmux(socket)
    tmux.runner(["tmux", "-L", socket, "set-option", "-u", "-t", "=catdog-alpha:", OWNER_OPTION])
    assert tmux.pane("catdog-alpha").owner == ""

    refused = fab("stop", "--inventory", str(second), "--devices", "alpha", "--json")
    [row] = rows(refused)
    assert row["state"] == "FAILED", row
    assert f"belongs to {first} (started by an older CatDog)" in row["reason"], row
    assert not tmux.pane("catdog-alpha").dead
    stopped = fab("stop", "--inventory", str(first), "--devices", "alpha", "--json")
    assert [r["state"] for r in rows(stopped)] == ["STOPPED"], stopped.stdout


def test_beat_and_flower_sessions_of_another_inventory_are_left_alone(two, redis_url) -> None:
    first, second, socket = two
    mine, other = load_inventory(first), load_inventory(second)
    tmux = Tmux(socket)
    for service in (services.BEAT, services.FLOWER):
        name = session_name(service)
        assert tmux.new_session(name, ["sleep", "300"], str(first.parent),
                                owner=ownership.record(mine))
    started = services.start_beat(open_fleet(other, redis_url))
    assert started.state == "FAILED" and f"belongs to {first}" in started.reason, started
    started = services.start_flower(open_fleet(other, redis_url), 5599, "127.0.0.1")
    assert started.state == "FAILED" and f"belongs to {first}" in started.reason, started
    for service in (services.BEAT, services.FLOWER):
        stopped = services.stop_service(other, service)
        assert stopped is not None and stopped.state == "FAILED", stopped
        assert not tmux.pane(session_name(service)).dead
        assert services.stop_service(mine, service).state == "STOPPED"
    assert tmux.panes() == {}


def test_an_ssh_devices_session_is_checked_on_the_device(make_fleet, sshd: Sshd,
                                                         tmp_path: Path) -> None:
    """Two inventories with the same SSH device (each its own workdir): the session on the
    device's tmux records the coordinator's inventory, and the second is refused there."""
    socket = f"catdog-apart-{uuid.uuid4().hex[:8]}"
    first = make_fleet({"pi": sshd.device([], tmp_path / "w1", pool="solo")}, tmux_socket=socket)
    assert [r.state for r in first.launch()] == [READY]
    pane = Tmux(socket).pane("catdog-pi")
    assert pane.owner == ownership.record(first.inventory)
    second = make_fleet({"pi": sshd.device([], tmp_path / "w2", pool="solo")},
                        tmux_socket=socket)
    for result in (second.launch()[0], second.stop()[0]):
        assert result.state == FAILED, result
        assert result.reason.startswith(
            f"device pi: tmux session catdog-pi on socket {socket} belongs to {first.path}; "), result
    assert Tmux(socket).pane("catdog-pi") == pane and alive(pane.pid)
    assert [r.state for r in first.stop()] == [STOPPED]
