"""One command table (ops.commands) makes the fab tasks; one edge (catdog.edge.run) turns errors
into exit statuses for fab, the worker, the scheduler and Flower alike."""

from __future__ import annotations

import inspect
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import yaml

from catdog import edge
from catdog.errors import BrokerUnreachable, InventoryError, UsageError, WorkerRefused
from catdog.fleet import fleet
from ops import api, commands, render

from .conftest import ROOT, device_spec


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _inventory(tmp_path: Path, *names: str) -> Path:
    path = tmp_path / "catdog.yaml"
    path.write_text(yaml.safe_dump({"tmux_socket": f"catdog-edge-{os.getpid()}",
                                    "devices": {n: device_spec([]) for n in names}}))
    return path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATDOG_")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def test_every_fab_task_is_made_from_its_row_of_the_table() -> None:
    import ops.fab

    assert sorted(ops.fab.__all__) == sorted(c.name for c in commands.COMMANDS)
    for command in commands.COMMANDS:
        task = getattr(ops.fab, command.name)
        assert task.name == command.name and task.__doc__ == command.doc
        assert task.help == {o.name: o.help for o in command.options}
        # every option the API is given is one of its API function's parameters
        accepts = inspect.signature(getattr(api, command.api)).parameters
        wanted = [o.api_keyword for o in command.options if o.api_keyword]
        assert [k for k in wanted if k not in accepts] == [], command.name
        assert not command.progress or "on_event" in accepts
        assert callable(getattr(render, command.render))


def test_the_edge_maps_catdog_errors_and_a_broker_that_does_not_answer(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def raising(error: Exception) -> int:
        raise error

    assert edge.run("catdog", lambda: 0) == 0 and edge.run("catdog", lambda: None) == 0
    assert edge.run("catdog x", lambda: raising(UsageError("no such thing"))) == 2
    assert edge.run("catdog x", lambda: raising(WorkerRefused("as root"))) == 3
    assert capsys.readouterr().err.splitlines() == ["catdog x: no such thing", "catdog x: as root"]

    port = _dead_port()
    monkeypatch.setenv("CATDOG_BROKER_URL", f"redis://:pw@127.0.0.1:{port}/0")
    path = str(_inventory(tmp_path, "cam"))
    client = redis.Redis.from_url(f"redis://:pw@127.0.0.1:{port}/0")
    expected = [f"broker redis://:***@127.0.0.1:{port}/0 does not answer (Connection refused)"
                f": check that Redis runs there and that $CATDOG_BROKER_URL is right"]
    before = fleet._path, fleet._inventory
    fleet.use(path)  # a fleet process (beat, a worker) names the broker of its own fleet
    try:
        assert edge.run("catdog beat", lambda: int(bool(client.get("x")))) == 1
        assert capsys.readouterr().err.splitlines() == [f"catdog beat: {expected[0]}"]
    finally:
        fleet._path, fleet._inventory = before

    # an operation names the broker of the inventory it was given, whatever the process's fleet
    @api._broker_errors
    def operation(inventory: str | None) -> int:
        return int(bool(client.get("x")))

    with pytest.raises(BrokerUnreachable) as raised:
        operation(path)
    assert str(raised.value) == expected[0]


def test_flower_with_a_bad_inventory_is_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    done = subprocess.run([sys.executable, "-m", "ops.flower", "--inventory", str(missing)],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"catdog flower: {missing}: does not exist; choose another inventory with --inventory "
        f"PATH or $CATDOG_INVENTORY"]


def test_beat_stopped_while_its_broker_is_away_says_so_in_one_line(tmp_path: Path) -> None:
    port = _dead_port()
    beat = subprocess.Popen(
        [sys.executable, "-m", "ops.beat", "--inventory", str(_inventory(tmp_path, "cam"))],
        cwd=tmp_path, env=_env(CATDOG_BROKER_URL=f"redis://127.0.0.1:{port}/0"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert beat.stdout is not None
        deadline = time.monotonic() + 120
        seen = ""
        while "retrying" not in seen and time.monotonic() < deadline:  # it stands by
            if select.select([beat.stdout], [], [], 1.0)[0]:
                seen += beat.stdout.readline()
        assert "broker unreachable" in seen, seen
        beat.send_signal(signal.SIGTERM)
        _, err = beat.communicate(timeout=60)
    finally:
        beat.kill()
        beat.wait()
    assert beat.returncode == 1, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"catdog beat: broker redis://127.0.0.1:{port}/0 does not answer (Connection refused): "
        f"check that Redis runs there and that $CATDOG_BROKER_URL is right")


def test_logs_and_killswitch_go_through_the_api(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CATDOG_BROKER_URL", raising=False)  # the session's broker: not this fleet's
    path = str(_inventory(tmp_path, "cam", "probe"))
    with pytest.raises(UsageError, match="--follow takes exactly one device"):
        api.logs(path, follow=True)
    with pytest.raises(UsageError, match="choose one"):
        api.killswitch(path, on=True, off=True)
    with pytest.raises(InventoryError):
        api.killswitch(str(tmp_path / "nope.yaml"))
    stopped = api.killswitch(path)  # a stopped fleet: read without starting its Redis
    assert isinstance(stopped, api.StoppedSwitch)
    assert [(d["device"], d["state"]) for d in stopped.devices] == [("cam", "offline"),
                                                                      ("probe", "offline")]
    assert stopped.as_dict()["on"] is None
    assert not (tmp_path / ".catdog" / "redis.pid").exists()


def test_a_command_runs_from_python_as_from_fab(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = str(_inventory(tmp_path, "cam"))
    assert commands.status(path, "cam", as_json=True, watch=True) == 2
    assert capsys.readouterr().err.strip() == (
        "catdog: --watch redraws a table for people; scripts poll --json instead")
    assert commands.launch(path, timeout="soon") == 2
    assert "--timeout 'soon'" in capsys.readouterr().err
    assert not (tmp_path / ".catdog").exists()  # nothing started
