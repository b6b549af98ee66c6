"""A real local fleet: three Celery workers launched in tmux, on CatDog's embedded Redis."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from celery.result import GroupResult

from catdog import NoRoute, app
from catdog.routing import worker_queues
from catdog.tasks.examples import read_temperature, render, sleep, snapshot, whoami
from tasks import run_on
from workers.cli import declared_requirements, import_tasks

from .conftest import FleetUnderTest

pytestmark = pytest.mark.slow


def test_each_worker_consumes_exactly_its_queues(use_fleet3: FleetUnderTest) -> None:
    import_tasks(use_fleet3.inventory)
    declared = declared_requirements()
    for name, device in use_fleet3.inventory.devices.items():
        node = f"{name}@{_hostname()}"
        replies = app.control.inspect(destination=[node], timeout=3).active_queues() or {}
        consumed = sorted(q["name"] for q in replies[node])
        assert consumed == sorted(worker_queues(device, declared)), name


def test_nodes_are_named_device_at_hostname(use_fleet3: FleetUnderTest) -> None:
    replies = app.control.ping(destination=[f"{d}@{_hostname()}" for d in use_fleet3.inventory
                                            .devices], timeout=3)
    assert sorted(next(iter(r)) for r in replies) == sorted(
        f"{d}@{_hostname()}" for d in ("kitchen", "garden", "garage"))


def test_run_on_a_device_returns_its_output_and_exit_code(use_fleet3: FleetUnderTest) -> None:
    result = run_on.delay("garden", "echo hello; echo oops >&2").get(timeout=20)
    assert result["device"] == "garden"
    assert result["exit_code"] == 0
    assert result["stdout"] == "hello\n"
    assert result["stderr"] == "oops\n"
    assert result["duration_s"] >= 0


def test_non_zero_exit_is_a_result_not_an_error(use_fleet3: FleetUnderTest) -> None:
    result = run_on.delay("kitchen", "echo no >&2; exit 7").get(timeout=20)
    assert (result["device"], result["exit_code"], result["stderr"]) == ("kitchen", 7, "no\n")


def test_run_on_timeout_kills_the_command(use_fleet3: FleetUnderTest) -> None:
    started = time.monotonic()
    result = run_on.delay("garage", "sleep 30; echo never", timeout=0.5).get(timeout=20)
    assert result["timed_out"] is True
    assert result["exit_code"] == -9
    assert "never" not in result["stdout"]
    assert time.monotonic() - started < 10


def test_capability_work_reaches_every_device_that_has_it(use_fleet3: FleetUnderTest) -> None:
    results = [sleep.on("cap:sensor").delay(0.3) for _ in range(8)]
    devices = Counter(r.get(timeout=30)["device"] for r in results)
    assert set(devices) == {"garden", "garage"}


def test_required_capability_routes_only_to_devices_having_it(use_fleet3: FleetUnderTest
                                                               ) -> None:
    snaps = {snapshot.delay().get(timeout=20)["device"] for _ in range(6)}
    assert snaps <= {"kitchen", "garage"}
    temps = {read_temperature.delay().get(timeout=20)["device"] for _ in range(6)}
    assert temps <= {"garden", "garage"}


def test_several_requirements_reach_only_devices_having_all(use_fleet3: FleetUnderTest) -> None:
    rendered = {render.delay().get(timeout=20)["device"] for _ in range(6)}
    assert rendered == {"kitchen"}
    pinned = {snapshot.on("cap:sensor").delay().get(timeout=20)["device"] for _ in range(4)}
    assert pinned == {"garage"}


def test_no_target_no_requirement_runs_on_any_live_device(use_fleet3: FleetUnderTest) -> None:
    results = [sleep.delay(0.2) for _ in range(12)]
    devices = {r.get(timeout=30)["device"] for r in results}
    assert len(devices) >= 2
    assert whoami.delay().get(timeout=20)["device"] in use_fleet3.inventory.devices


def test_all_fans_out_one_task_per_matching_device(use_fleet3: FleetUnderTest) -> None:
    group = run_on.delay("all:sensor", "echo hi")
    assert isinstance(group, GroupResult)
    assert sorted(r["device"] for r in group.get(timeout=20)) == ["garage", "garden"]
    everyone = run_on.delay("all", "true").get(timeout=20)
    assert sorted(r["device"] for r in everyone) == ["garage", "garden", "kitchen"]


def test_on_all_is_a_group_even_for_one_device(use_fleet3: FleetUnderTest) -> None:
    group = snapshot.on("all:gpu").delay()
    assert isinstance(group, GroupResult)
    assert [r["device"] for r in group.get(timeout=20)] == ["kitchen"]
    pinned = snapshot.on("garage").delay("1x1").get(timeout=20)
    assert (pinned["device"], pinned["picture"].endswith("1x1.png")) == ("garage", True)


@pytest.mark.parametrize("call", [
    lambda: run_on.delay("nosuch", "true"),
    lambda: run_on.delay("cap:lidar", "true"),
    lambda: run_on.delay("all:lidar", "true"),
    lambda: snapshot.on("garden"),
    lambda: render.on("cap:sensor"),
])
def test_unsatisfiable_targets_raise_no_route_at_once(use_fleet3: FleetUnderTest, call) -> None:
    started = time.monotonic()
    with pytest.raises(NoRoute):
        call()
    assert time.monotonic() - started < 1


def test_arguments_not_fitting_the_signature_are_refused_at_the_call(
        use_fleet3: FleetUnderTest) -> None:
    with pytest.raises(TypeError):
        run_on.delay("kitchen")
    with pytest.raises(TypeError):
        read_temperature.delay("C", "extra")
    with pytest.raises(TypeError):
        whoami.delay(surprise=1)


def test_wrong_arguments_fail_in_the_result_and_the_worker_keeps_serving(
        use_fleet3: FleetUnderTest) -> None:
    bad = read_temperature.on("garden").delay(unit="K")
    with pytest.raises(ValueError, match="unit must be 'C' or 'F'"):
        bad.get(timeout=20)
    wrong_type = run_on.delay("garden", 12345)
    with pytest.raises(TypeError, match="command must be"):
        wrong_type.get(timeout=20)
    assert run_on.delay("garden", "echo still here").get(timeout=20)["stdout"] == "still here\n"


def _hostname() -> str:
    import socket

    return socket.gethostname()


def test_gather_shows_a_progress_bar_only_in_a_terminal(use_fleet3) -> None:
    import io

    from catdog.progress import gather
    from tasks import run_on

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen, pipe = Terminal(), io.StringIO()
    rows = gather(run_on.delay("all", "sleep 0.3; echo hi"), timeout=30, stream=screen)
    assert sorted(r["device"] for r in rows) == ["garage", "garden", "kitchen"]
    drawn = screen.getvalue()
    assert "] 3/3 in " in drawn and drawn.endswith("\n") and "\r[" in drawn
    assert "0/3" in drawn or "1/3" in drawn or "2/3" in drawn  # it was drawn while waiting
    assert [r["stdout"] for r in gather(run_on.delay("all", "echo x"), stream=pipe)] == ["x\n"] * 3
    assert pipe.getvalue() == ""  # scripts get no bar


def test_workers_keep_a_result_until_redis_takes_it_and_callers_do_not(
        use_fleet3: FleetUnderTest) -> None:
    # a device cut off as its task ends stores the result once back (tests/chaos/test_link_down)
    node = f"garden@{_hostname()}"
    shown = app.control.inspect(destination=[node], timeout=3).conf(with_defaults=True) or {}
    assert shown[node]["result_backend_always_retry"] is True
    assert shown[node]["result_backend_max_sleep_between_retries_ms"] == 5000
    assert not app.conf.result_backend_always_retry  # a coordinator with no Redis raises
