"""Predicates in targets against real workers reporting different (faked) facts: the producer
pins each call to a live device that satisfies them, or says which device fails which clause."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from celery.result import GroupResult

from catdog.errors import NoDeviceNow, NoRoute, TargetError
from catdog.fleet import fleet
from catdog.tasks.examples import sleep, whoami
from catdog.tasks.shell import run_on
from tests.conftest import FleetUnderTest, device_spec
from tests.fakepi import FakeRoot


@pytest.fixture
def two(make_fleet: Callable[..., FleetUnderTest], tmp_path: Path
        ) -> Iterator[tuple[FleetUnderTest, FakeRoot, FakeRoot]]:
    """``pi``: an aarch64 board with 2 GB free at 75 C; ``pc``: x86_64, 200 MB free, 40 C."""
    pi = FakeRoot(tmp_path / "pi", mem_total_mb=3800, mem_free_mb=2000, temp_c=75.0)
    pc = FakeRoot(tmp_path / "pc", arch="x86_64", cores=8, mem_total_mb=400, mem_free_mb=200,
                  model=None, temp_c=40.0)
    f = make_fleet({
        name: device_spec(["sensor"], concurrency=2, env={"CATDOG_FACTS_ROOT": str(root.path)})
        for name, root in (("pi", pi), ("pc", pc))})
    assert [r.state for r in f.launch()] == ["READY", "READY"]
    try:
        yield f, pi, pc
    finally:
        f.stop(force=True)


def _device(result: object) -> str:
    return str(result.get(timeout=20)["device"])  # type: ignore[attr-defined]


@pytest.mark.slow
def test_a_predicate_pins_the_call_to_a_live_device_that_satisfies_it(two: tuple) -> None:
    assert _device(run_on.delay("any&arch=aarch64", "true")) == "pi"
    assert _device(run_on.delay("cap:sensor&mem>=300", "true")) == "pi"
    assert _device(run_on.delay("cap:sensor & temp<70 & cores>=8", "true")) == "pc"
    assert _device(whoami.on("any&python>=3.8&mem<1000").delay()) == "pc"
    assert _device(whoami.on("pi&detected!=camera").delay()) == "pi"

    group = run_on.delay("all:sensor&temp<=80", "true")
    assert isinstance(group, GroupResult)
    assert sorted(r["device"] for r in group.get(timeout=20)) == ["pc", "pi"]
    one = run_on.delay("all:sensor&temp<70", "true")
    assert isinstance(one, GroupResult)
    assert [r["device"] for r in one.get(timeout=20)] == ["pc"]


@pytest.mark.slow
def test_calls_spread_over_the_satisfying_devices_least_busy_first(two: tuple) -> None:
    results = [sleep.on("any&mem>=100").delay(1.0) for _ in range(4)]
    assert sorted(r.get(timeout=20)["device"] for r in results) == ["pc", "pc", "pi", "pi"]


@pytest.mark.slow
def test_a_predicate_no_device_can_ever_satisfy_is_no_route_naming_each(two: tuple) -> None:
    with pytest.raises(NoRoute) as caught:
        run_on.delay("any&arch=riscv64", "true")
    assert "pi: arch=riscv64 (arch aarch64) (for good)" in str(caught.value)
    assert "pc: arch=riscv64 (arch x86_64)" in str(caught.value)
    with pytest.raises(NoRoute, match=r"pc: mem>=500 \(mem_total 400.0\) \(for good\)"):
        whoami.on("pc&mem>=500").delay()  # more than the 400 MB it has


@pytest.mark.slow
def test_one_only_the_live_facts_fail_is_no_device_now_or_waits(two: tuple) -> None:
    pi = two[1]
    with pytest.raises(NoDeviceNow) as caught:
        run_on.delay("cap:sensor&temp<30", "true")
    assert caught.value.failures == {"pi": "temp<30 (temp 75.0)", "pc": "temp<30 (temp 40.0)"}

    threading.Timer(1.0, pi.temperature, args=(25.0,)).start()  # the pi cools down meanwhile
    waited = run_on.apply_async(("cap:sensor&temp<30", "true"), timeout=15)
    assert _device(waited) == "pi"


@pytest.mark.slow
def test_a_stopped_device_no_longer_counts(two: tuple) -> None:
    two[0].stop(["pc"])
    with pytest.raises(NoDeviceNow, match="pc: offline"):
        run_on.delay("any&temp<70", "true")


def test_unknown_facts_and_malformed_predicates_are_refused_at_the_call(
        make_fleet: Callable[..., FleetUnderTest]) -> None:
    make_fleet({"pi": device_spec(["sensor"])})  # not launched: refused before any read
    for target, message in [("any&colour=red", "unknown fact 'colour'"),
                            ("cap:sensor&mem>>3", "bad predicate 'mem>>3'"),
                            ("any&arch>arm", "compared with = or != only"),
                            ("any&mem>=lots", "expected a number"), ("any&", "empty clause")]:
        with pytest.raises(TargetError, match=message):
            run_on.delay(target, "true")
    with pytest.raises(NoRoute, match="no device has capability camera"):
        fleet.place((), "cap:camera&mem>=1")


def test_a_plain_target_reads_no_heartbeat(make_fleet: Callable[..., FleetUnderTest],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from catdog import placement

    make_fleet({"pi": device_spec(["sensor"])})
    read: list[list[str]] = []
    monkeypatch.setattr(placement, "broker_read", lambda keys: read.append(keys) or [None])
    for plain in ("cap:sensor", "pi", "any", "all:sensor", None):
        fleet.place((), plain)
    assert read == []
    with pytest.raises(NoDeviceNow, match="pi: offline"):
        fleet.place((), "cap:sensor&temp<70")
    assert read[0] == ["catdog:live:pi"]


def test_the_placement_benchmark_runs_and_reports(tmp_path: Path) -> None:
    """``python -m bench --only placement`` (a smoke test: its own process and Redis; no timing
    asserted but that a predicate costs more than the plain target it narrows)."""
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.test_cli import _env

    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "bench", "--only", "placement", "--quick",
                           "--output", str(out)], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    found = json.loads(out.read_text())["placement"]
    assert found["devices"] == 32 and found["samples"] == 500
    assert found["chosen"].startswith("catdog.device.pi")
    assert found["place_predicate"]["median_us"] > found["place_plain"]["median_us"]
    assert "goal < 1000 us" in done.stdout
