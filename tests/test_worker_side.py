"""Per-device settings reach the real worker: env, run_on allow-lists, pools."""

from __future__ import annotations

import time

import pytest

from tasks import run_on

from .conftest import device_spec

pytestmark = pytest.mark.slow


def test_device_env_and_allow_lists_apply_on_the_worker(make_fleet) -> None:
    fleet = make_fleet({
        "open": device_spec([], env={"SENSOR_BUS": "7"}),
        "listed": device_spec([], run_on=["echo", "true"], pool="solo"),
        "closed": device_spec([], run_on=False, pool="threads"),
    })
    assert [r.state for r in fleet.launch()] == ["READY"] * 3

    assert run_on.delay("open", "echo bus=$SENSOR_BUS").get(timeout=20)["stdout"] == "bus=7\n"

    listed = run_on.delay("listed", "echo $HOME; uname").get(timeout=20)
    assert listed["stdout"] == "$HOME; uname\n"  # no shell: the words are echo's arguments
    with pytest.raises(Exception, match="'uname' is not in this device's run_on allow-list"):
        run_on.delay("listed", "uname -a").get(timeout=20)
    with pytest.raises(Exception, match="run_on is disabled on this device"):
        run_on.delay("closed", "true").get(timeout=20)
    assert run_on.delay("listed", ["true"]).get(timeout=20)["exit_code"] == 0


def test_a_pickled_message_is_never_executed_and_the_worker_keeps_serving(
        make_fleet, tmp_path) -> None:
    from catdog import app
    from ops.results import READY
    from tasks import run_on

    from .conftest import device_spec

    fleet = make_fleet({"pi": device_spec([])})
    assert fleet.launch()[0].state == READY
    marker = tmp_path / "pickled-ran"
    app.send_task("tasks.run_on", args=("pi", f"touch {marker}"), queue="catdog.device.pi",
                  serializer="pickle")
    served = run_on.delay("pi", "echo still serving").get(timeout=20)
    assert served["stdout"] == "still serving\n"
    assert not marker.exists()  # refused by the worker: JSON only
    log = (fleet.folder / ".catdog" / "logs" / "pi.log").read_text()
    assert "pickle" in log.lower()  # and it says why


def test_the_log_has_each_failure_but_not_a_line_per_successful_task(make_fleet) -> None:
    from ops.results import READY

    fleet = make_fleet({"pi": device_spec([], run_on=["echo"])})
    assert fleet.launch()[0].state == READY
    for n in range(5):
        assert run_on.delay("pi", f"echo ok {n}").get(timeout=20)["exit_code"] == 0
    with pytest.raises(Exception, match="not in this device's run_on allow-list"):
        run_on.delay("pi", "uname").get(timeout=20)
    path, log = fleet.folder / ".catdog" / "logs" / "pi.log", ""
    deadline = time.monotonic() + 10  # the line is written just after the result
    while "raised unexpected" not in log and time.monotonic() < deadline:
        time.sleep(0.1)
        log = path.read_text()
    assert "raised unexpected" in log and "allow-list" in log  # the failure, with its reason
    assert "succeeded in" not in log and "] received" not in log  # at INFO, no per-task lines
    assert "ready" in log.lower()  # the worker's own life is still there
