"""SSH devices against a real sshd on loopback: launch into tmux over SSH, tasks, stop, failures."""

from __future__ import annotations

import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from catdog.tasks.examples import sleep
from ops.results import FAILED, READY, STOPPED
from tasks import run_on

from .conftest import Sshd, device_spec

pytestmark = pytest.mark.slow


def test_ssh_devices_launch_serve_and_stop_warm(make_fleet, sshd: Sshd, tmp_path: Path,
                                                redis_url: str) -> None:
    work = {n: tmp_path / n for n in ("pi4", "zero")}
    fleet = make_fleet({
        "pi4": sshd.device(["camera"], work["pi4"], concurrency=2),
        "zero": sshd.device(["sensor"], work["zero"], pool="solo", env={"SENSOR_BUS": "3"}),
        "laptop": device_spec(["gpu"]),
    })
    results = fleet.launch()
    assert [(r.device, r.state) for r in results] == [("pi4", READY), ("zero", READY),
                                                       ("laptop", READY)], [r.as_dict() for r in results]
    assert fleet.sessions() == ["catdog-laptop", "catdog-pi4", "catdog-zero"]

    out = run_on.delay("zero", "echo bus=$SENSOR_BUS; pwd").get(timeout=20)
    assert (out["device"], out["stdout"]) == ("zero", f"bus=3\n{work['zero']}\n")
    assert run_on.delay("cap:camera", "true").get(timeout=20)["device"] == "pi4"

    env_file = work["pi4"] / ".catdog" / "run" / "pi4.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert redis_url in env_file.read_text()
    password = redis_url.split(":")[2].split("@")[0]
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    tmux_commands = fleet.tmux("list-panes", "-a", "-F", "#{pane_start_command}").stdout
    assert password not in processes and password not in tmux_commands
    assert "--env-file" in tmux_commands

    running = sleep.on("pi4").delay(1.5)
    time.sleep(0.5)
    stopped = {r.device: r for r in fleet.stop(["pi4", "zero"], timeout=20)}
    assert stopped["pi4"].state == STOPPED and "warm shutdown" in stopped["pi4"].reason
    assert running.get(timeout=5)["slept_s"] == 1.5
    assert fleet.sessions() == ["catdog-laptop"]


def test_forced_stop_over_ssh_kills_the_worker_tree(make_fleet, sshd: Sshd, tmp_path: Path
                                                    ) -> None:
    fleet = make_fleet({"pi4": sshd.device([], tmp_path, concurrency=2)})
    assert fleet.launch()[0].state == READY
    pid = fleet.tmux("display-message", "-p", "-t", "=catdog-pi4:", "#{pane_pid}").stdout.strip()
    result = fleet.stop(force=True)[0]
    assert (result.state, result.reason) == (STOPPED, "killed (--force)")
    assert not Path(f"/proc/{pid}/cmdline").exists() or b"workers" not in Path(
        f"/proc/{pid}/cmdline").read_bytes()
    assert fleet.sessions() == []


def test_one_unreachable_device_never_stops_the_others(make_fleet, sshd: Sshd, tmp_path: Path
                                                       ) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    fleet = make_fleet({
        "good": sshd.device([], tmp_path / "good"),
        "refused": sshd.device([], tmp_path, port=closed_port),
        "stranger": sshd.device([], tmp_path, known_hosts=str(sshd.folder / "empty_known_hosts")),
        "wrongkey": sshd.device([], tmp_path, key=str(sshd.folder / "other_key")),
        "nopython": sshd.device([], tmp_path, python="/opt/nowhere/bin/python"),
    })
    results = {r.device: r for r in fleet.launch(timeout=20)}

    assert results["good"].state == READY
    for name in ("refused", "stranger", "wrongkey", "nopython"):
        assert results[name].state == FAILED, name
    assert f"connection refused at 127.0.0.1:{closed_port}" in results["refused"].reason
    assert "host key of 127.0.0.1" in results["stranger"].reason
    assert "ssh-keyscan -p" in results["stranger"].reason
    assert "authentication failed" in results["wrongkey"].reason
    assert "python /opt/nowhere/bin/python not found" in results["nopython"].reason


def test_a_worker_crashing_at_import_over_ssh_reports_its_own_error(make_fleet, sshd: Sshd,
                                                                    tmp_path: Path) -> None:
    fleet = make_fleet({"pi4": sshd.device([], tmp_path)}, imports=["sensor_tasks"])
    (tmp_path / "sensor_tasks.py").write_text("import smbus2_not_installed\n")
    result = fleet.launch(timeout=20)[0]
    assert result.state == FAILED
    assert "exited with status 2" in result.reason  # one line naming the module, not a traceback
    assert "sensor_tasks.py:1: ModuleNotFoundError: No module named 'smbus2_not_installed'" \
        in result.reason
    assert fleet.sessions() == ["catdog-pi4"]  # the dead pane stays for `tmux attach`


def test_ssh_settings_come_only_from_the_inventory() -> None:
    from catdog.inventory import Device
    from ops.remote import known_hosts_path

    assert known_hosts_path(Device("d", "h", known_hosts="/x/k")) == Path("/x/k")
    assert known_hosts_path(Device("d", "h")) == Path("~/.ssh/known_hosts").expanduser()


def test_logs_restart_and_follow_over_ssh(make_fleet, sshd: Sshd, tmp_path: Path, capsys
                                          ) -> None:
    import json
    import os
    import signal

    from ops import commands
    from ops.logs import recent

    fleet = make_fleet({"pi4": sshd.device([], tmp_path / "pi4"), "laptop": device_spec([])})
    assert [r.state for r in fleet.launch()] == [READY, READY]
    run_on.delay("pi4", "echo from-the-task").get(timeout=20)
    for name in ("pi4", "laptop"):
        text = recent(fleet.inventory, fleet.inventory.devices[name], lines=200)
        assert f"{name}@" in text and "ready." in text, text
    assert (tmp_path / "pi4" / ".catdog" / "logs" / "pi4.log").exists()
    assert "tasks.run_on" in recent(fleet.inventory, fleet.inventory.devices["pi4"], 200)

    old_pid = fleet.tmux("display-message", "-p", "-t", "=catdog-pi4:", "#{pane_pid}").stdout
    capsys.readouterr()
    assert commands.restart(str(fleet.path), "pi4", as_json=True, loglevel="DEBUG") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["device"], r["state"]) for r in rows] == [("pi4", READY)]
    new_pid = fleet.tmux("display-message", "-p", "-t", "=catdog-pi4:", "#{pane_pid}").stdout
    assert new_pid != old_pid

    fab = Path(sys.executable).parent / "fab"
    env = {k: v for k, v in os.environ.items() if k != "CATDOG_INVENTORY"}
    follower = subprocess.Popen([str(fab), "logs", "--follow", "--devices", "pi4", "--lines", "5",
                                 "--inventory", str(fleet.path)], stdout=subprocess.PIPE,
                                text=True, env=env, start_new_session=True)
    try:
        time.sleep(1.5)  # let tail attach before the task runs
        run_on.delay("pi4", "echo followed-line").get(timeout=20)
        seen = ""
        deadline = time.monotonic() + 20
        while "succeeded" not in seen and time.monotonic() < deadline:
            seen += follower.stdout.readline() if follower.stdout else ""
        assert "succeeded" in seen, seen
    finally:
        os.killpg(follower.pid, signal.SIGINT)
        follower.wait(timeout=10)
    assert follower.returncode == 0  # Ctrl-C ends a follow normally


@pytest.mark.parametrize(("top", "says"), [
    # no broker: the embedded Redis serves the fleet, on an address this machine must have
    ({"embedded": {"listen": "192.0.2.1"}}, "embedded.listen: the coordinator has no address"),
    ({"broker": "redis://10.9.8.7:6379/0"}, "insecure: true"),
])
def test_launch_refuses_a_remote_fleet_without_a_safe_broker(sshd: Sshd, tmp_path: Path,
                                                             top: dict, says: str) -> None:
    import yaml

    from .test_cli import _env, fab

    doc: dict = {"tmux_socket": f"refuse-{tmp_path.name[-8:]}", **top,
                 "devices": {"pi4": sshd.device([], tmp_path / "pi4")}}
    (tmp_path / "catdog.yaml").write_text(yaml.safe_dump(doc))
    done = fab("launch", "--inventory", str(tmp_path / "catdog.yaml"), env=_env())
    assert done.returncode == 2, done.stdout + done.stderr
    assert says in done.stderr
    assert not (tmp_path / "pi4").exists()  # nothing half-started: no run files on the device
    assert not (tmp_path / ".catdog").exists()  # and no embedded Redis


def test_status_of_an_ssh_device_reports_its_memory_and_shows_it_offline_within_10_s(
        make_fleet, sshd: Sshd, tmp_path: Path, redis_client) -> None:
    import os
    import signal

    from ops.status import status

    fleet = make_fleet({"pi": sshd.device([], tmp_path / "pi", concurrency=2)})
    assert fleet.launch()[0].state == READY
    devices = fleet.inventory.select(None)
    deadline = time.monotonic() + 5
    row = status(fleet.inventory, devices, redis_client)[0]
    while row["rss_mb"] is None and time.monotonic() < deadline:
        time.sleep(0.2)
        row = status(fleet.inventory, devices, redis_client)[0]
    assert row["state"] == "idle"
    assert row["rss_mb"] > 40  # the main process and its two pool processes
    assert row["load"] is not None and row["mem_available_mb"] > 0
    pid = int(fleet.tmux("display-message", "-p", "-t", "=catdog-pi:", "#{pane_pid}").stdout)
    os.killpg(pid, signal.SIGKILL)  # a power cut: the whole worker at once
    died = time.monotonic()
    while status(fleet.inventory, devices, redis_client)[0]["state"] != "offline":
        assert time.monotonic() - died < 12, "still not offline"
        time.sleep(0.1)
    seen = time.monotonic() - died
    assert seen <= 10.0, seen
    print(f"offline {seen:.1f}s after the worker died")


@pytest.fixture
def sent_commands(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every command this process asks any sshd to run (Fabric's and the file copies alike)."""
    import paramiko

    sent: list[str] = []
    original = paramiko.Channel.exec_command

    def recording(channel: paramiko.Channel, command: str) -> None:
        sent.append(command)
        original(channel, command)

    monkeypatch.setattr(paramiko.Channel, "exec_command", recording)
    return sent


@pytest.mark.parametrize("server", ["sshd", "sshd_no_sftp"])
def test_files_reach_a_device_with_or_without_sftp_whole_and_private(
        request: pytest.FixtureRequest, server: str, tmp_path: Path,
        sent_commands: list[str]) -> None:
    import os

    from catdog.inventory import Device
    from ops.remote import SSHRunner, Unreachable

    sshd: Sshd = request.getfixturevalue(server)
    spec = sshd.device([], tmp_path)
    host = SSHRunner(Device("pi", "127.0.0.1", port=sshd.port, user=spec["user"],
                            key=spec["key"], known_hosts=spec["known_hosts"]))
    try:
        assert host.transfer() == ("sftp" if server == "sshd" else "ssh")
        secret = "CATDOG_BROKER_URL=redis://:s3cret-Pa55@10.0.0.1:6379/0\n"
        private = tmp_path / "run" / "deep" / "pi.env"  # the folders do not exist yet
        host.write_private(str(private), secret)
        assert private.read_text() == secret
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        assert stat.S_IMODE(private.parent.stat().st_mode) == 0o700
        private.chmod(0o644)  # rewritten: private again
        host.write_private(str(private), secret + "X=1\n")
        assert (private.read_text(), stat.S_IMODE(private.stat().st_mode)) == (secret + "X=1\n",
                                                                                0o600)
        host.write_text(str(tmp_path / "record.json"), '{"a": "é"}')
        assert (tmp_path / "record.json").read_text() == '{"a": "é"}'
        wheel = tmp_path / "big.whl"
        wheel.write_bytes(os.urandom(3_000_000))
        host.upload(wheel, str(tmp_path / "copy.whl"))
        assert (tmp_path / "copy.whl").read_bytes() == wheel.read_bytes()
        with pytest.raises(Unreachable, match="could not write /proc/nowhere/x on pi"):
            host.write_text("/proc/nowhere/x", "text")
    finally:
        host.close()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "big.whl", "copy.whl", "pi.env", "record.json"]  # no temporary file left behind
    assert not any("s3cret" in c for c in sent_commands), sent_commands


def test_a_device_without_sftp_launches_runs_logs_gathers_metrics_and_stops(
        make_fleet, sshd_no_sftp: Sshd, tmp_path: Path, redis_url: str,
        sent_commands: list[str]) -> None:
    from ops import api
    from ops.logs import recent

    work = tmp_path / "board"
    fleet = make_fleet({"board": sshd_no_sftp.device(["sensor"], work, concurrency=2)})
    result = fleet.launch()[0]
    assert result.state == READY, result.as_dict()
    out = run_on.delay("cap:sensor", "echo on-the-board; pwd").get(timeout=20)
    assert (out["device"], out["stdout"]) == ("board", f"on-the-board\n{work}\n")

    run = work / ".catdog" / "run"
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    assert sorted(p.name for p in run.iterdir()) == ["board.env", "board.yaml"]  # no temp left
    for name in ("board.env", "board.yaml"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o600
    assert redis_url in (run / "board.env").read_text()
    assert (run / "board.yaml").read_text() == fleet.path.read_text()
    password = redis_url.split(":")[2].split("@")[0]
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert password not in processes
    assert sent_commands and not any(password in c for c in sent_commands)

    text = recent(fleet.inventory, fleet.inventory.devices["board"], lines=200)
    assert "board@" in text and "tasks.run_on" in text, text
    for _ in range(2):
        sleep.on("board").delay(0.01).get(timeout=20)
    found = api.metrics(str(fleet.path), since_s=3600)
    assert found.ok and "3 task lines" in found["board"].reason, found["board"].reason
    assert len((fleet.folder / "metrics" / "board.lp").read_text().splitlines()) >= 2

    stopped = fleet.stop(timeout=20)[0]
    assert stopped.state == STOPPED, stopped.as_dict()
    assert fleet.sessions() == []


def test_a_device_without_sftp_nor_the_commands_to_copy_files_says_what_and_how_to_fix(
        make_fleet, tmp_path: Path) -> None:
    from ops.doctor import Doctor
    from ops.remote import SFTP_FIX

    (tmp_path / "sshd").mkdir()
    bare = Sshd(tmp_path / "sshd", sftp=False, config=("SetEnv PATH=/nowhere",))
    try:
        fleet = make_fleet({"bare": bare.device([], tmp_path / "bare")})
        result = fleet.launch(timeout=10)[0]
        checked = Doctor(fleet.inventory, fleet.url).check(fleet.inventory.select(None))[0]
    finally:
        bare.close()
    assert result.state == FAILED
    assert "its sshd offers no SFTP and its shell lacks cat, mv, rm, chmod, mkdir" in result.reason
    assert SFTP_FIX in result.reason and "Channel closed" not in result.reason
    sftp = checked.check("sftp")
    assert sftp.ok is False and "lacks cat, mv, rm, chmod, mkdir" in sftp.detail
    assert sftp.fix == SFTP_FIX
    assert checked.check("broker").ok is None  # not run, never "passed" nor a false failure


def test_channel_copies_are_checked_by_size_without_sha256sum_and_never_land_damaged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import shutil

    from catdog.inventory import Device
    from ops import remote

    tools = tmp_path / "bin"  # a small board's shell: the basics, no sha256sum
    tools.mkdir()
    for name in ("cat", "mv", "rm", "chmod", "mkdir", "wc"):
        os.symlink(shutil.which(name) or name, tools / name)
    (tmp_path / "sshd").mkdir()
    small = Sshd(tmp_path / "sshd", sftp=False, config=(f"SetEnv PATH={tools}",))
    spec = small.device([], tmp_path)
    host = remote.SSHRunner(Device("pi", "127.0.0.1", port=small.port, user=spec["user"],
                                   key=spec["key"], known_hosts=spec["known_hosts"]))
    target = tmp_path / "run" / "pi.env"
    try:
        host.write_private(str(target), "A=1\n")
        assert (target.read_text(), stat.S_IMODE(target.stat().st_mode)) == ("A=1\n", 0o600)
        monkeypatch.setattr(remote, "_size_and_sha256", lambda source: (99, "0" * 64))
        with pytest.raises(remote.Unreachable, match="arrived damaged: got 4 for 99"):
            host.write_private(str(target), "B=2\n")
    finally:
        host.close()
        small.close()
    assert target.read_text() == "A=1\n"  # the damaged copy never replaced the whole one
    assert [p.name for p in target.parent.iterdir()] == ["pi.env"]


def test_fab_launch_logs_doctor_and_stop_as_a_user_runs_them_on_a_device_without_sftp(
        sshd_no_sftp: Sshd, tmp_path: Path, redis_url: str) -> None:
    import yaml

    from .test_cli import _env, fab
    from .tmuxserver import end_server

    socket_name = f"nosftp-{tmp_path.name[-8:]}"
    path = tmp_path / "catdog.yaml"
    path.write_text(yaml.safe_dump({"tmux_socket": socket_name, "devices": {
        "board": sshd_no_sftp.device([], tmp_path / "board")}}))
    env = _env(CATDOG_BROKER_URL=redis_url)
    try:
        runs = {name: fab(*args, "--inventory", str(path), env=env) for name, args in [
            ("launch", ["launch"]), ("logs", ["logs", "--devices", "board"]),
            ("doctor", ["doctor"]), ("stop", ["stop"])]}
    finally:
        end_server(socket_name)
    for name, done in runs.items():
        assert done.returncode == 0, (name, done.stdout, done.stderr)
        assert "Channel closed" not in done.stdout + done.stderr, name
        assert "Traceback" not in done.stdout + done.stderr, name
    assert "READY" in runs["launch"].stdout
    assert "board@" in runs["logs"].stdout
    assert "none, via SSH" in runs["doctor"].stdout and "OK" in runs["doctor"].stdout
    assert "STOPPED" in runs["stop"].stdout
