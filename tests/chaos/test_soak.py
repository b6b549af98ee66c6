"""The chaos soak, short form: two minutes of faults on a four-device fleet, and nothing lost.

The soak itself is ``tests/chaos/soak.py`` (``python -m tests.chaos.soak --minutes 10 --tasks
10000`` is the long form); here it runs as its own process (its Celery app talks to the soak's
own broker, not the session's) for its default two minutes, 480 tasks, a fault every 10 s.
``CATDOG_SOAK_SEED=N`` replays the schedule of a run (each run prints its seed).

``net-b`` boots a real systemd (``fab enable`` done): at least one of its reboots is a power cut
and a boot, its worker brought back by its unit with nobody launching it.

Also the schedule's rules, checked on many seeds: faults never overlap on a device, at most one
Redis kill is in flight, every kind strikes in two minutes, link cuts only where there is a link,
the first reboot strikes the device that boots.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.lan import netns_permitted
from tests.conftest import ROOT
from tests.test_cli import _env

from .schedule import HELD_S, KILL_REDIS, KINDS, LINK_DOWN, REBOOT, plan

DEVICES = ["net-a", "net-b", "loc-a", "loc-b"]
LINKED = ["net-a", "net-b"]
BOOTED = ("net-b",)
SOAK_TIMEOUT_S = 660  # 2 min of faults, their healing, a drain of at most 4 min, set-up


@pytest.mark.parametrize("seed", range(40))
def test_the_fault_schedule_keeps_its_rules(seed: int) -> None:
    faults = plan(seed, 120, DEVICES, LINKED, booted=BOOTED)
    assert [f.at_s for f in faults] == [10.0 * i for i in range(1, 13)]  # one every 10 s
    assert {f.kind for f in faults} == set(KINDS)  # even two minutes see every kind
    reboots = [f for f in faults if f.kind == REBOOT]
    assert reboots[0].device == "net-b"  # and a power cut of the device that boots
    for i, fault in enumerate(faults):
        earlier = faults[:i]
        if fault.kind == KILL_REDIS:
            assert fault.device is None
            assert all(f.until_s <= fault.at_s for f in earlier if f.kind == KILL_REDIS)
        else:
            assert fault.device in DEVICES
            assert all(f.until_s <= fault.at_s for f in earlier if f.device == fault.device)
        if fault.kind == LINK_DOWN:
            assert fault.device in LINKED
    assert plan(seed, 120, DEVICES, LINKED, booted=BOOTED) == faults  # the seed reproduces it
    # a longer soak starts the same way
    assert plan(seed, 600, DEVICES, LINKED, booted=BOOTED)[:12] == faults


def test_without_devices_that_boot_the_first_reboot_strikes_anywhere() -> None:
    first = {s: next(f.device for f in plan(s, 120, DEVICES, LINKED) if f.kind == REBOOT)
             for s in range(40)}
    assert set(first.values()) == set(DEVICES), first


def test_a_device_held_by_a_fault_is_not_struck_again() -> None:
    """One device, faults every second: each waits for the one before to have healed."""
    faults = plan(7, 300, ["only"], [], every_s=1.0)
    assert faults and LINK_DOWN not in {f.kind for f in faults}  # it has no link to cut
    for i, fault in enumerate(faults):
        assert all(fault.at_s >= f.at_s + HELD_S[f.kind] for f in faults[:i]
                   if f.device == fault.device or f.kind == fault.kind == KILL_REDIS)


@pytest.mark.slow
@pytest.mark.chaos
@pytest.mark.timeout(SOAK_TIMEOUT_S + 60)
def test_two_minutes_of_chaos_lose_no_queued_task(tmp_path: Path) -> None:
    why = netns_permitted()
    if why:
        pytest.skip(f"the soak's network-namespace devices cannot be built here: {why}")
    seed = os.environ.get("CATDOG_SOAK_SEED")
    done = subprocess.run(
        [sys.executable, "-m", "tests.chaos.soak", "--json", "--folder", str(tmp_path / "fleet"),
         *(["--seed", seed] if seed else [])],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=SOAK_TIMEOUT_S, check=False)
    print(done.stderr)  # the seed, each fault as it healed, the ledger
    assert done.stdout.strip(), done.stderr[-3000:]
    ledger = json.loads(done.stdout.strip().splitlines()[-1])
    notes = ledger["notes"]
    assert ledger["lost"] == 0, (notes.get("lost_tasks"), done.stderr[-3000:])
    assert ledger["sent"] == 480
    assert notes["faults_failed"] == []
    assert set(notes["faults"]) == set(KINDS), notes["faults"]  # every kind struck
    assert sum(notes["faults"].values()) == 12
    # net-b boots: at least one reboot was a power cut, its worker back by its unit, and the
    # others relaunched; the boots touched nothing of the machine's /tmp, /var/tmp, /run
    assert notes["reboots"].get("unit", 0) >= 1, notes["reboots"]
    assert sum(notes["reboots"].values()) == notes["faults"][REBOOT]
    assert notes["touched_outside_boxes"] == []
    assert notes["drained_after_s"] is not None
    assert done.returncode == 0, done.stderr[-3000:]
