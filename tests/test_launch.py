"""Launching, stopping and watching real workers in tmux on a private socket."""

from __future__ import annotations

import os
import time

import pytest
import redis

from catdog import app
from catdog.tasks.examples import sleep
from ops.results import ALREADY_RUNNING, FAILED, NOT_RUNNING, READY, STOPPED
from ops.status import status
from workers.cli import check_user

from .conftest import IS_ROOT, device_spec
from .tmuxserver import alive, pane_pids, process_tree

pytestmark = pytest.mark.slow


def test_launch_reports_ready_and_a_second_launch_starts_nothing(make_fleet) -> None:
    fleet = make_fleet({"a": device_spec(["x"]), "b": device_spec(["y"], pool="solo")})
    first = fleet.launch()
    assert [(r.device, r.state) for r in first] == [("a", READY), ("b", READY)]
    assert all(r.nodename and r.nodename.startswith(f"{r.device}@") for r in first)
    pids = {s: fleet.tmux("display-message", "-p", "-t", f"={s}:", "#{pane_pid}").stdout
            for s in fleet.sessions()}
    assert sorted(pids) == ["catdog-a", "catdog-b"]

    second = fleet.launch()
    assert [r.state for r in second] == [ALREADY_RUNNING, ALREADY_RUNNING]
    assert fleet.sessions() == ["catdog-a", "catdog-b"]
    assert {s: fleet.tmux("display-message", "-p", "-t", f"={s}:", "#{pane_pid}").stdout
            for s in fleet.sessions()} == pids


def test_launch_selects_devices(make_fleet) -> None:
    fleet = make_fleet({"a": device_spec([]), "b": device_spec([])})
    assert [r.device for r in fleet.launch(["b"])] == ["b"]
    assert fleet.sessions() == ["catdog-b"]


def test_worker_dying_on_start_is_failed_with_its_status_and_own_error(make_fleet) -> None:
    fleet = make_fleet({"good": device_spec([]), "bad": device_spec([])}, imports=["broken_tasks"])
    (fleet.folder / "broken_tasks.py").write_text(
        "raise RuntimeError('sensor bus 42 not found at import')\n")
    results = {r.device: r for r in fleet.launch(timeout=30)}
    for r in results.values():  # the imports apply to every device: both die, both are reported
        assert r.state == FAILED
        assert r.exit_status == 2  # a task module that cannot be imported: bad input, one line
        assert "exited with status 2" in r.reason
        assert "broken_tasks.py:1: RuntimeError: sensor bus 42 not found at import" in r.reason
        assert any("sensor bus 42 not found at import" in line for line in r.output)
        assert not any("Traceback" in line for line in r.output)


def test_a_failed_launch_is_retried_from_scratch_once_fixed(make_fleet) -> None:
    fleet = make_fleet({"a": device_spec([])}, imports=["flaky_tasks"])
    module = fleet.folder / "flaky_tasks.py"
    module.write_text("raise SystemExit(4)\n")
    first = fleet.launch()[0]
    assert first.state == FAILED, first.as_dict()
    module.write_text("VALUE = 1\n")
    again = fleet.launch()[0]
    assert again.state == READY, again.as_dict()


def test_worker_refuses_root_unless_allowed(make_fleet) -> None:
    fleet = make_fleet({"strict": {"host": "local", "capabilities": []}})
    result = fleet.launch()[0]
    if IS_ROOT:
        assert result.state == FAILED
        assert result.exit_status == 3
        assert "refusing to run the worker as root" in result.reason
        assert "allow_root: true" in " ".join(result.output)
    else:  # an ordinary user needs nothing more
        assert result.state == READY


def test_check_user_refuses_root_without_allow_root() -> None:
    from catdog.errors import WorkerRefused
    from catdog.inventory import Device

    with pytest.raises(WorkerRefused, match="allow_root: true"):
        check_user(Device("d", "local"), euid=0)
    check_user(Device("d", "local", allow_root=True), euid=0)
    check_user(Device("d", "local"), euid=1000)


def test_launch_gives_up_after_its_timeout_and_leaves_nothing_started(make_fleet) -> None:
    fleet = make_fleet({"slow": device_spec([])}, imports=["slow_tasks"])
    (fleet.folder / "slow_tasks.py").write_text(
        "import time\nprint('warming up the sensor', flush=True)\ntime.sleep(60)\n")
    result = fleet.launch(timeout=4)[0]
    assert result.state == FAILED
    assert "no answer to ping within 4s" in result.reason
    assert "warming up the sensor" in result.output
    assert fleet.sessions() == []


def test_status_shows_idle_busy_done_failed_and_offline(make_fleet, redis_client: redis.Redis
                                                        ) -> None:
    fleet = make_fleet({"w": device_spec(["cpu"], concurrency=2)})
    fleet.launch()
    inv = fleet.inventory
    row = status(inv, list(inv.devices.values()), redis_client)[0]
    assert (row["state"], row["capabilities"], row["active"]) == ("idle", ["cpu"], 0)
    assert row["heartbeat_age_s"] is not None and row["heartbeat_age_s"] < 5

    running = sleep.on("w").delay(4)
    _wait(lambda: status(inv, list(inv.devices.values()), redis_client)[0]["state"] == "busy")
    busy = status(inv, list(inv.devices.values()), redis_client)[0]
    assert busy["active"] == 1 and busy["active_tasks"] == ["tasks.examples.sleep"]
    running.get(timeout=20)
    with pytest.raises(ValueError):
        sleep.on("w").delay("not a number").get(timeout=20)
    _wait(lambda: status(inv, list(inv.devices.values()), redis_client)[0]["failed"] == 1)
    row = status(inv, list(inv.devices.values()), redis_client)[0]
    assert (row["state"], row["done"], row["failed"]) == ("idle", 1, 1)

    fleet.stop()
    gone = status(inv, list(inv.devices.values()), redis_client)[0]
    assert gone["state"] == "offline"


def test_status_counts_the_backlog_of_an_offline_device(make_fleet, redis_client) -> None:
    fleet = make_fleet({"away": device_spec([])})
    inv = fleet.inventory
    for _ in range(3):
        sleep.on("away").delay(0)
    row = status(inv, list(inv.devices.values()), redis_client)[0]
    assert (row["state"], row["backlog"]) == ("offline", 3)
    fleet.launch()
    _wait(lambda: status(inv, list(inv.devices.values()), redis_client)[0]["backlog"] == 0)


def test_warm_stop_lets_the_running_task_finish(make_fleet) -> None:
    fleet = make_fleet({"w": device_spec([])})
    fleet.launch()
    running = sleep.on("w").delay(2)
    _wait(lambda: _active(fleet) == 1)
    result = fleet.stop(timeout=20)[0]
    assert (result.state, result.reason) == (STOPPED, "warm shutdown (running tasks finished)")
    assert running.get(timeout=5)["slept_s"] == 2.0
    assert fleet.sessions() == []


def test_forced_stop_kills_at_once_and_the_task_is_not_lost(make_fleet) -> None:
    fleet = make_fleet({"w": device_spec([], pool="prefork")})
    fleet.launch()
    running = sleep.on("w").delay(30)
    _wait(lambda: _active(fleet) == 1)
    processes = [p for pane in pane_pids(fleet.socket) for p in process_tree(pane)]
    assert len(processes) >= 2  # the worker and its pool process
    started = time.monotonic()
    result = fleet.stop(force=True)[0]
    assert result.state == STOPPED and time.monotonic() - started < 5
    assert not [p for p in processes if alive(p)]  # gone when the command returns
    assert fleet.sessions() == []
    assert running.state in ("PENDING", "STARTED")  # not marked done: acks_late keeps it
    assert fleet.stop()[0].state == NOT_RUNNING


def _active(fleet) -> int:
    from catdog.records import Heartbeat, heartbeat_key

    raw = redis.Redis.from_url(fleet.url).get(heartbeat_key(next(iter(fleet.inventory.devices))))
    return Heartbeat.loads(raw).active if raw else -1


def _wait(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_app_is_the_configured_celery_app(make_fleet) -> None:
    make_fleet({"a": device_spec([])})
    assert app.conf.task_serializer == "json"
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.broker_transport_options["visibility_timeout"] == 60
    assert app.conf.result_expires == 86400
    assert os.environ.get("CATDOG_BROKER_URL", "").startswith("redis://")


def test_logs_of_a_device_never_launched_say_how_to_launch_it(make_fleet) -> None:
    from catdog.errors import CatDogError
    from ops.logs import recent

    fleet = make_fleet({"idle": device_spec([])})
    with pytest.raises(CatDogError, match=r"no worker log .*fab launch --devices idle"):
        recent(fleet.inventory, fleet.inventory.devices["idle"])
