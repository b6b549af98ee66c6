"""Per-device settings reach the real worker: env, run_on allow-lists, pools."""

from __future__ import annotations

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
