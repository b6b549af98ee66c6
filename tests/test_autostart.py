"""``fab enable`` / ``fab disable``: the units as written, the device-side starter on its own (on
this machine, without systemd), and a device without systemd refused. Against a real systemd:
:mod:`tests.test_autostart_boot`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from catdog.loader import load_inventory
from catdog.records import heartbeat_key
from ops.autostart import Place, render_unit, systemd_quote, unit_name, worker_spec
from ops.launch import worker_command
from ops.session import WorkerSession
from ops.tmux import LocalRunner, Tmux
from workers import autostart

from .conftest import FleetUnderTest, device_spec
from .test_cli import _env, fab

ROOT_PLACE = Place(0, "root", "/root", "", "/usr/bin/python3", True)
USER_PLACE = Place(1000, "pi", "/home/pi", "/tmp/pi tmux", "/home/pi/venv/bin/python", True)


def _wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout:g}s: {what}")


# --- the units as written -----------------------------------------------------------------------

def test_a_root_device_gets_a_system_unit_started_after_the_network_and_restarted() -> None:
    text = render_unit("CatDog worker of device pi", ["/usr/bin/python3", "-m", "workers.autostart",
                                                      "/srv/cat dog/.catdog/run/pi.json"],
                       "/srv/cat dog", ROOT_PLACE)
    lines = text.splitlines()
    assert ROOT_PLACE.unit_dir == "/etc/systemd/system" and unit_name("pi") == "catdog-pi.service"
    for line in ("Wants=network-online.target", "After=network-online.target", "Type=notify",
                 "Restart=on-failure", "RestartSec=3", "KillMode=process",
                 "StartLimitIntervalSec=0", "WantedBy=multi-user.target",
                 'WorkingDirectory="/srv/cat dog"', "Environment=HOME=/root",
                 'ExecStart=/usr/bin/python3 -m workers.autostart '
                 '"/srv/cat dog/.catdog/run/pi.json"'):
        assert line in lines, (line, text)
    assert not [ln for ln in lines if ln.startswith(("User=", "Environment=TMUX_TMPDIR"))]
    assert ROOT_PLACE.systemctl("enable", "catdog-pi.service") == \
        "systemctl enable catdog-pi.service"


def test_another_user_gets_a_user_unit_of_its_own_manager_with_its_tmux_folder() -> None:
    text = render_unit("w", ["/home/pi/venv/bin/python", "-m", "workers.autostart", "/x"], "/w",
                       USER_PLACE)
    assert USER_PLACE.unit_dir == "/home/pi/.config/systemd/user"
    assert "WantedBy=default.target" in text.splitlines()
    assert 'Environment="TMUX_TMPDIR=/tmp/pi tmux"' in text.splitlines()
    assert USER_PLACE.systemctl("daemon-reload") == \
        "XDG_RUNTIME_DIR=/run/user/1000 systemctl --user daemon-reload"
    assert "lingering on" in USER_PLACE.describe("pi")


def test_exec_start_words_are_quoted_and_escaped_for_systemd() -> None:
    assert systemd_quote("/plain/path") == "/plain/path"
    assert systemd_quote("50%") == "50%%"  # a specifier otherwise
    assert systemd_quote("$HOME") == "$$HOME"  # a variable otherwise
    assert systemd_quote('a "b"') == '"a \\"b\\""'


def test_the_starter_runs_exactly_fab_launchs_tmux_command(tmp_path: Path) -> None:
    path = tmp_path / "catdog.yaml"
    path.write_text(yaml.safe_dump({"broker": "redis://:pw@10.0.0.1:6379/0",
                                    "tmux_socket": "sock-x", "devices": {
        "pi": {"host": "10.0.0.5", "user": "pi", "workdir": "/home/pi/w",
               "python": "/home/pi/venv/bin/python"}}}))
    inv = load_inventory(str(path))
    session = WorkerSession(inv, inv.devices["pi"], LocalRunner())  # type: ignore[arg-type]
    command = worker_command(session, "/home/pi/w/.catdog/run/pi.env",
                             "/home/pi/w/.catdog/run/pi.yaml")
    spec = worker_spec(inv, session, command, "/home/pi/w/.catdog/run/pi.env")
    tmux = Tmux("sock-x")
    assert spec["query"] == tmux.pane_query("catdog-pi")
    assert spec["kill"] == ["tmux", "-L", "sock-x", "kill-session", "-t", "=catdog-pi"]
    start = spec["start"]
    assert isinstance(start, list) and start[:3] == ["tmux", "-L", "sock-x"]
    assert "exec /home/pi/venv/bin/python -m workers --device pi --inventory " \
           "/home/pi/w/.catdog/run/pi.yaml --env-file /home/pi/w/.catdog/run/pi.env " \
           "--state-dir /home/pi/w/.catdog --project /home/pi/w" in start
    assert "@catdog_inventory" in start and "remain-on-exit" in start


def test_coordinator_services_default_to_what_the_fleet_uses_and_start_after_its_redis(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from catdog.errors import UsageError
    from catdog.inventory import BROKER_ENV
    from ops.coordinator_units import chosen, unit_text

    monkeypatch.delenv(BROKER_ENV, raising=False)  # the session's broker: this fleet has none

    path = tmp_path / "catdog.yaml"
    path.write_text(yaml.safe_dump({"devices": {"here": {"host": "local"}}}))
    inv = load_inventory(str(path))
    assert chosen(inv, "") == ["redis"]  # the embedded Redis; no schedule: no beat
    assert chosen(inv, "redis,flower") == ["redis", "flower"]
    for bad, says in (("beat", "has no `schedule:`"), ("nginx", "not a coordinator service")):
        with pytest.raises(UsageError, match=says):
            chosen(inv, bad)
    lines = unit_text(inv, "flower", ROOT_PLACE).splitlines()
    assert "After=network-online.target catdog-redis.service" in lines
    assert f"ExecStart={sys.executable} -m ops.coordinator_units flower --inventory {path}" in lines
    assert "After=network-online.target" in unit_text(inv, "redis", ROOT_PLACE).splitlines()


# --- the device-side starter, on this machine, without systemd ------------------------------------

@pytest.fixture
def starter_fleet(make_fleet: Callable[..., FleetUnderTest], redis_url: str) -> FleetUnderTest:
    return make_fleet({"here": device_spec(["boot"])})


def _start_starter(fleet: FleetUnderTest, redis_url: str) -> tuple[subprocess.Popen[str], Path]:
    from ops.session import worker_session

    inv = fleet.inventory
    with worker_session(inv, inv.devices["here"]) as session:
        session.prepare()
        env_file, inventory = session.install_run_files(
            f"CATDOG_BROKER_URL={redis_url}\nPYTHONUNBUFFERED=1\n", inv.text)
        spec = worker_spec(inv, session, worker_command(session, env_file, inventory), env_file)
    path = fleet.folder / "here.autostart.json"
    path.write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    proc = subprocess.Popen([sys.executable, "-m", "workers.autostart", str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, path


def _heartbeat_pid(client: Any, device: str) -> int | None:
    raw = client.get(heartbeat_key(device))
    return int(json.loads(raw)["pid"]) if raw else None


def test_the_starter_exits_non_zero_when_its_worker_dies_and_zero_when_it_is_stopped(
        starter_fleet: FleetUnderTest, redis_url: str, redis_client: Any) -> None:
    """What systemd's Restart=on-failure acts on: a killed worker is a failure (restarted), a
    worker `fab stop` stopped is not (it stays stopped)."""
    proc, _ = _start_starter(starter_fleet, redis_url)
    try:
        assert proc.stdout is not None
        assert "started session catdog-here" in proc.stdout.readline()
        assert "here answers" in proc.stdout.readline()  # its heartbeat is fresh
        pid = _heartbeat_pid(redis_client, "here")
        assert pid
        launched = starter_fleet.launch()  # fab launch adopts it: the ownership check holds
        assert [r.state for r in launched] == ["ALREADY RUNNING"], launched
        os.kill(pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == 1
        out = proc.stdout.read()
        assert "the worker died" in out and "systemd restarts it" in out, out

        proc, _ = _start_starter(starter_fleet, redis_url)  # as systemd would, RestartSec later
        new_pid = _wait(lambda: (p := _heartbeat_pid(redis_client, "here")) != pid and p, 60,
                        "a new worker")
        assert new_pid != pid
        stopped = starter_fleet.stop()
        assert [r.state for r in stopped] == ["STOPPED"], stopped
        assert proc.wait(timeout=30) == 0
        assert "stopped on purpose" in (proc.stdout.read() if proc.stdout else "")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_starter_leaves_another_inventorys_session_alone_and_is_not_restarted(
        starter_fleet: FleetUnderTest, redis_url: str) -> None:
    tmux = Tmux(starter_fleet.socket)
    assert tmux.new_session("catdog-here", ["sleep", "60"], str(starter_fleet.folder),
                            owner="elsewhere:/srv/other/catdog.yaml")
    proc, _ = _start_starter(starter_fleet, redis_url)
    assert proc.wait(timeout=30) == autostart.FOREIGN_STATUS == 2
    out = proc.stdout.read() if proc.stdout else ""
    assert "belongs to elsewhere:/srv/other/catdog.yaml" in out, out
    assert "RestartPreventExitStatus=2" in render_unit("w", ["x"], "/", ROOT_PLACE).splitlines()
    pane = tmux.pane("catdog-here")
    assert pane is not None and not pane.dead  # untouched


def test_the_starter_refuses_a_missing_spec_in_one_line(tmp_path: Path) -> None:
    assert autostart.main([str(tmp_path / "nothing.json")]) == 2
    assert autostart.main([]) == 2


# --- a device without systemd ---------------------------------------------------------------------

def test_enable_where_no_systemd_runs_is_one_line_naming_the_fix_and_writes_nothing(
        tmp_path: Path, redis_url: str, sshd: Any) -> None:
    """This machine's PID 1 is not systemd: a local device and an SSH device on it are refused,
    before anything is written."""
    assert not Path("/run/systemd/system").is_dir()  # the premise: no systemd runs here
    workdir = tmp_path / "work"
    path = tmp_path / "catdog.yaml"
    path.write_text(yaml.safe_dump({"tmux_socket": f"nosd-{uuid.uuid4().hex[:6]}", "devices": {
        "here": device_spec([]), "ssh-box": sshd.device([], workdir)}}))
    done = fab("enable", "--inventory", str(path), "--json", env=_env(CATDOG_BROKER_URL=redis_url))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("catdog: fab enable: no systemd runs on "
                                                   "here, ssh-box"), done.stderr
    assert "--devices" in lines[0] and "fab launch" in lines[0]
    assert not workdir.exists() and not (tmp_path / ".catdog" / "run").exists()
    assert not Path(f"/etc/systemd/system/{unit_name('here')}").exists()
    coordinator = fab("enable", "--coordinator", "--services", "flower", "--inventory", str(path),
                      env=_env(CATDOG_BROKER_URL=redis_url))
    assert coordinator.returncode == 2 and coordinator.stderr.strip() == (
        "catdog: fab enable --coordinator: no systemd runs on this coordinator (no "
        "/run/systemd/system or systemctl), nothing was enabled: start the services with `fab "
        "launch`, `fab beat` and `fab flower` after a boot"), coordinator.stderr
