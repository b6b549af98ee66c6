"""The `fab` commands as a user runs them: a subprocess each, the embedded Redis, real tmux."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from ops.embedded_redis import alive

from .conftest import ROOT, device_spec
from .tmuxserver import end_server

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def fab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "fab"), *args], cwd=ROOT, env=env or _env(),
                          capture_output=True, text=True, timeout=180, check=False)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATDOG_")}
    return {**env, **extra}


@pytest.fixture
def inventory(tmp_path: Path):
    socket = f"catdog-cli-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "catdog.yaml"
    path.write_text(yaml.safe_dump({
        "tmux_socket": socket,
        "devices": {"cam": device_spec(["camera"]), "probe": device_spec(["sensor"], pool="solo")},
    }))
    yield path
    fab("stop", "--force", "--inventory", str(path))
    end_server(socket)


def test_launch_status_ping_stop_on_the_embedded_redis(inventory: Path) -> None:
    state = inventory.parent / ".catdog"
    launched = fab("launch", "--inventory", str(inventory), "--json")
    assert launched.returncode == 0, launched.stderr
    assert launched.stderr.splitlines()[0].startswith(
        f"catdog: started the embedded Redis for {inventory} on 127.0.0.1:")
    rows = json.loads(launched.stdout)
    assert [(r["device"], r["state"]) for r in rows] == [("cam", "READY"), ("probe", "READY")]
    assert all("reason" in r for r in rows)
    pid = int((state / "redis.pid").read_text())
    assert alive(pid)
    assert (state / "redis.port").exists() and (state / "appendonly.aof").exists()

    again = fab("launch", "--inventory", str(inventory), "--json")
    assert again.returncode == 0
    assert [r["state"] for r in json.loads(again.stdout)] == ["ALREADY RUNNING"] * 2
    assert "started the embedded Redis" not in again.stderr
    assert int((state / "redis.pid").read_text()) == pid

    shown = fab("status", "--inventory", str(inventory), "--json")
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)
    for row in rows:
        assert {"device", "state", "reason", "capabilities", "active", "done", "failed",
                "heartbeat_age_s", "backlog"} <= set(row)
        assert row["state"] == "idle"

    pinged = subprocess.run([str(BIN / "celery"), "-A", "catdog", "inspect", "ping"], cwd=ROOT,
                            env=_env(CATDOG_INVENTORY=str(inventory)), capture_output=True,
                            text=True, timeout=60, check=False)
    assert pinged.returncode == 0, pinged.stderr
    assert "cam@" in pinged.stdout and "probe@" in pinged.stdout
    assert "2 nodes online" in pinged.stdout

    stopped = fab("stop", "--inventory", str(inventory), "--json")
    assert stopped.returncode == 0, stopped.stderr
    assert [r["state"] for r in json.loads(stopped.stdout)] == ["STOPPED", "STOPPED"]
    assert not alive(pid)
    assert (state / "appendonly.aof").exists()


def test_human_launch_output_is_a_table_with_progress_on_stderr(inventory: Path) -> None:
    done = fab("launch", "--inventory", str(inventory), "--devices", "probe")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split() == ["DEVICE", "STATE", "TIME", "REASON"]
    assert "probe" in done.stdout and "READY" in done.stdout and "cam" not in done.stdout
    assert "probe: starting" in done.stderr


def test_bad_inventory_exits_2_naming_file_line_field_and_starts_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "catdog.yaml"
    bad.write_text("tmux_socket: cli-bad\ndevices:\n  cam:\n    host: local\n"
                   "    capabilities: camera\n    colour: red\n")
    done = fab("launch", "--inventory", str(bad))
    assert done.returncode == 2
    assert "catdog.yaml:5 devices.cam.capabilities: expected a list of names" in done.stderr
    assert "catdog.yaml:6 devices.cam.colour" in done.stderr
    assert done.stdout == ""
    assert not (tmp_path / ".catdog").exists()
    alive = subprocess.run(["tmux", "-L", "cli-bad", "list-sessions"], capture_output=True,
                           check=False)
    assert alive.returncode != 0


def test_launch_loglevel_reaches_the_worker_and_a_bad_one_starts_nothing(inventory: Path) -> None:
    bad = fab("launch", "--inventory", str(inventory), "--loglevel", "loud")
    assert bad.returncode == 2
    assert "--loglevel 'loud' is not a log level: choose one of DEBUG, INFO" in bad.stderr
    assert not (inventory.parent / ".catdog").exists()  # not even the broker
    done = fab("launch", "--inventory", str(inventory), "--devices", "probe", "--loglevel",
               "debug")
    assert done.returncode == 0, done.stderr
    log = inventory.parent / ".catdog" / "logs" / "probe.log"
    assert "DEBUG/MainProcess" in log.read_text()


def test_unknown_device_is_refused_before_anything_starts(inventory: Path) -> None:
    done = fab("launch", "--inventory", str(inventory), "--devices", "cam,nosuch")
    assert done.returncode == 2
    assert "unknown device(s) nosuch" in done.stderr and "cam, probe" in done.stderr
    assert not (inventory.parent / ".catdog").exists()


def test_a_failed_device_makes_launch_exit_non_zero_with_one_json_document(tmp_path: Path
                                                                           ) -> None:
    socket = f"catdog-cli-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "catdog.yaml"
    path.write_text(yaml.safe_dump({
        "tmux_socket": socket,
        "devices": {"ok": device_spec([]),
                    "nopython": device_spec([], python=str(tmp_path / "no-such-python"))},
    }))
    try:
        done = fab("launch", "--inventory", str(path), "--json")
        rows = {r["device"]: r for r in json.loads(done.stdout)}
        assert done.returncode == 1
        assert rows["ok"]["state"] == "READY"
        assert rows["nopython"]["state"] == "FAILED"
        assert "no-such-python not found" in rows["nopython"]["reason"]
        assert "devices.nopython.python" in rows["nopython"]["reason"]
    finally:
        fab("stop", "--force", "--inventory", str(path))
        end_server(socket)


def test_killswitch_command_on_show_off(inventory: Path) -> None:
    assert fab("launch", "--inventory", str(inventory)).returncode == 0
    refused = fab("killswitch", "--on", "--inventory", str(inventory))
    assert refused.returncode == 2 and "needs a reason" in refused.stderr
    on = fab("killswitch", "--on", "--reason", "lab maintenance", "--inventory", str(inventory),
             "--json")
    assert on.returncode == 0, on.stderr
    doc = json.loads(on.stdout)
    assert (doc["on"], doc["reason"]) == (True, "lab maintenance") and "@" in doc["by"]
    assert [(d["device"], d["state"]) for d in doc["devices"]] == [("cam", "paused"),
                                                                   ("probe", "paused")]
    shown = fab("killswitch", "--inventory", str(inventory))
    assert shown.stdout.startswith("kill switch ON since ") and "lab maintenance" in shown.stdout
    status = json.loads(fab("status", "--inventory", str(inventory), "--json").stdout)
    assert {r["state"] for r in status} == {"paused"}
    off = fab("killswitch", "--off", "--inventory", str(inventory), "--json")
    assert [d["state"] for d in json.loads(off.stdout)["devices"]] == ["resumed", "resumed"]
    assert fab("killswitch", "--on", "--off", "--inventory", str(inventory)).returncode == 2
