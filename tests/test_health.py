"""Health-aware pulling on real workers: a device faked hot (or throttled) through its facts root
stops taking shared work, still runs work pinned to it, shows ``degraded`` with the reason, and
takes shared work again once it has cooled down."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from catdog.tasks.examples import sleep, whoami
from catdog.tasks.shell import run_on
from ops import api, commands
from tests.conftest import FleetUnderTest, device_spec
from tests.fakepi import FakeRoot, wait_for
from workers.facts import THROTTLE_EVERY_S

pytestmark = pytest.mark.slow


def _states(path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, tuple[str, str]]:
    assert commands.status(str(path), json=True) == 0
    return {r["device"]: (r["state"], r["reason"]) for r in json.loads(capsys.readouterr().out)}


def test_a_hot_device_takes_only_pinned_work_until_it_cools_down(
        make_fleet: Callable[..., FleetUnderTest], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    pi = FakeRoot(tmp_path / "pi", temp_c=50.0)
    pc = FakeRoot(tmp_path / "pc", arch="x86_64", temp_c=45.0)
    f = make_fleet({
        "pi": device_spec(["sensor"], concurrency=2, health={"max_temp": 80},
                          env={"CATDOG_FACTS_ROOT": str(pi.path)}),
        "pc": device_spec(["sensor"], concurrency=2, env={"CATDOG_FACTS_ROOT": str(pc.path)}),
    })
    assert [r.state for r in f.launch()] == ["READY", "READY"]
    try:
        pi.temperature(85.0)
        wait_for(lambda: _states(f.path, capsys)["pi"][0] == "degraded", 10, "pi degraded")
        assert _states(f.path, capsys)["pi"] == (
            "degraded", "temperature 85.0C over max_temp 80")

        shared = [whoami.delay() for _ in range(6)] + [
            run_on.delay("cap:sensor", "true") for _ in range(4)]
        assert {r.get(timeout=20)["device"] for r in shared} == {"pc"}
        assert run_on.delay("any&temp<100", "true").get(timeout=20)["device"] == "pc"
        assert whoami.on("pi").delay().get(timeout=20)["device"] == "pi"  # pinned: still runs

        # the kill switch turned on and off meanwhile gives the hot device no shared queue back
        api.killswitch(str(f.path), on=True, reason="test")
        api.killswitch(str(f.path), off=True)
        wait_for(lambda: [s for s, _ in _states(f.path, capsys).values()] == ["degraded", "idle"],
                 10, "both resumed")
        again = [sleep.delay(0.5) for _ in range(8)]  # pi would take some, were it pulling
        assert {r.get(timeout=20)["device"] for r in again} == {"pc"}

        pi.temperature(78.5)  # under the limit, not yet 3 C under it: still degraded
        wait_for(lambda: "not yet under 77" in _states(f.path, capsys)["pi"][1], 10,
                 "pi still degraded at 78.5 C")
        pi.temperature(70.0)
        wait_for(lambda: _states(f.path, capsys)["pi"][0] == "idle", 10, "pi healthy again")
        f.stop(["pc"])
        assert whoami.delay().get(timeout=20)["device"] == "pi"  # shared work again

        pi.throttle(0x50005)  # under-voltage and throttled now
        wait_for(lambda: _states(f.path, capsys)["pi"][0] == "degraded",
                 THROTTLE_EVERY_S + 6, "pi degraded by throttling")
        assert _states(f.path, capsys)["pi"][1] == "throttled now: under-voltage, throttled"
    finally:
        f.stop(force=True)
