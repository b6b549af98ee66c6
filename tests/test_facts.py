"""Facts in the heartbeat: read under a root the test controls, reported by real workers, shown
by ``fab facts`` (and in ``fab status --json``)."""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from pathlib import Path

import pytest

from ops import commands
from tests.conftest import FleetUnderTest, device_spec
from tests.fakepi import FakeRoot, wait_for
from workers.facts import THROTTLE_EVERY_S, FactReader


def test_the_reader_reads_a_pi_laid_out_as_the_kernel_does(tmp_path: Path) -> None:
    root = FakeRoot(tmp_path, cores=4, mem_total_mb=512, mem_free_mb=300, temp_c=71.5,
                    throttled=0x50005, devices=("video0", "i2c-1"))
    reader = FactReader(["camera", "gpio", "i2c"], root=tmp_path)
    facts = reader.read()
    assert {k: facts[k] for k in ("arch", "cores", "mem_total", "mem", "temp", "throttled",
                                  "model", "os", "detected")} == {
        "arch": "aarch64", "cores": 4, "mem_total": 512.0, "mem": 300.0, "temp": 71.5,
        "throttled": 0x50005, "model": "Raspberry Pi 4 Model B Rev 1.4",
        "os": "Debian GNU/Linux 12 (bookworm)", "detected": ["camera", "i2c"]}
    assert facts["python"] == platform.python_version()

    # the temperature and memory are read at every beat, the throttling flags every few seconds
    root.temperature(82.0)
    root.memory(512, 120)
    root.throttle(0)
    again = reader.read()
    assert (again["temp"], again["mem"], again["throttled"]) == (82.0, 120.0, 0x50005)
    assert reader.throttled(now=reader._throttle_read_at + THROTTLE_EVERY_S) == 0


def test_a_machine_without_a_board_model_or_thermal_zone_reports_none(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    facts = FactReader(["camera"], root=tmp_path).read()
    assert facts["model"] is None and facts["temp"] is None and facts["throttled"] is None
    assert facts["detected"] == [] and facts["arch"] == platform.machine()


@pytest.mark.slow
def test_workers_report_their_own_facts_and_fab_facts_shows_them(
        make_fleet: Callable[..., FleetUnderTest], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    FakeRoot(tmp_path / "pi", mem_total_mb=900, mem_free_mb=600, temp_c=64.0, throttled=0x4,
             devices=("video0",))
    f = make_fleet({
        "pi": device_spec(["sensor"], detect=["camera", "gpio"],
                          env={"CATDOG_FACTS_ROOT": str(tmp_path / "pi")}),
        "pc": device_spec(["sensor"]),
    })
    assert [r.state for r in f.launch()] == ["READY", "READY"]
    try:
        def rows() -> dict[str, dict]:
            assert commands.facts(str(f.path), json=True) == 0
            return {r["device"]: r for r in json.loads(capsys.readouterr().out)}

        def reported() -> dict[str, dict] | None:
            found = rows()
            return found if all(r["facts"] for r in found.values()) else None

        found = wait_for(reported, 15, "both devices' facts")
        pi, pc = found["pi"]["facts"], found["pc"]["facts"]
        assert (pi["arch"], pi["cores"], pi["mem_total"], pi["mem"], pi["temp"]) == (
            "aarch64", 4, 900.0, 600.0, 64.0)
        assert pi["throttled"] == 4 and pi["detected"] == ["camera"]
        assert pc["arch"] == platform.machine() and pc["detected"] == []
        assert pc["mem_total"] > 100 and pc["model"] != pi["model"]

        assert commands.facts(str(f.path)) == 0
        table = capsys.readouterr().out
        assert "aarch64" in table and "throttled" in table and "camera" in table

        assert commands.status(str(f.path), json=True) == 0
        status = {r["device"]: r for r in json.loads(capsys.readouterr().out)}
        assert status["pi"]["facts"]["model"] == "Raspberry Pi 4 Model B Rev 1.4"
    finally:
        f.stop(force=True)
