"""Rolling deploys, canaries and rollbacks over real SSH devices with real workers in tmux:
loopback sshd (each device its own workdir, the session's embedded Redis as broker) and, for the
key cases (a rolling deploy under a steady stream of tasks, a canary that crashes), the
network-namespace LAN too (each device its own host, address and sshd; :mod:`tests.rollout_rigs`).

A new release is made as a user makes one: the project's task module changes.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from ops import api, commands
from ops.results import DEPLOYED, FAILED, READY, SKIPPED, UNCHANGED
from tests.chaos.ledger import settle

from .conftest import FleetUnderTest
from .rollout_rigs import Rig, Rigs

pytestmark = pytest.mark.slow

CRASHES = '''
import os
if os.environ.get("CRASH_AT_START") == "1":
    raise RuntimeError("this release crashes when its worker starts")
'''
SMOKE = '''

@app.task(name="{module}.smoke")
def smoke():
    return {answer}
'''
#: the key cases run on both: loopback sshd, and the network-namespace LAN
BOTH = pytest.mark.parametrize("rollout_fleet", ["sshd", "lan"], indirect=True)


@pytest.fixture
def rollout_fleet(request: pytest.FixtureRequest, make_fleet, device_base: Path,
                  tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis
                  ) -> Iterator[Callable[..., Rig]]:
    """``make(devices, **fields)``: a rig of SSH devices (loopback unless parametrised "lan")."""
    rigs = Rigs(make_fleet, device_base, tmp_path, monkeypatch)
    if getattr(request, "param", "sshd") == "lan":
        yield functools.partial(rigs.lan, request.getfixturevalue("lan_broker"))
    else:
        yield functools.partial(rigs.sshd, request.getfixturevalue("sshd"), redis_client)
    rigs.stop()


def new_release(fleet: FleetUnderTest, module: str, extra: str) -> None:
    """A new release, as a user makes one: the project's task module changes."""
    path = fleet.folder / f"{module}.py"
    path.write_text(path.read_text() + extra)


def current(fleet: FleetUnderTest, name: str) -> str | None:
    link = Path(fleet.inventory.devices[name].workdir or "") / ".catdog" / "releases" / "current"
    return link.resolve().name if link.is_symlink() else None


def serving(rig: Rig, names: list[str]) -> None:
    """Every device named answers a task pinned to it."""
    for n, name in enumerate(names):
        assert rig.send(name, 1000 + n).get(timeout=30) == 1000 + n, name


@BOTH
def test_a_rolling_deploy_under_a_steady_stream_of_tasks_loses_none(rollout_fleet) -> None:
    rig = rollout_fleet({"r1": ["work", "cam"], "r2": ["work", "cam"], "r3": ["work"]})
    fleet, module = rig.fleet, rig.module
    first = api.deploy_fleet(str(fleet.path))
    assert {r.state for r in first.values()} == {DEPLOYED}, first
    old = {current(fleet, n) for n in ("r1", "r2", "r3")}
    assert len(old) == 1 and None not in old
    assert {r.state for r in fleet.launch()} == {READY}
    sent: dict[int, Any] = {}
    stop = threading.Event()

    def produce() -> None:  # a steady stream to the capability every device has
        n = 0
        while not stop.is_set():
            sent[n] = rig.send("cap:work", n, 0.2)
            n += 1
            time.sleep(0.1)  # 10 a second: two devices of three keep up with it

    producer = threading.Thread(target=produce)
    new_release(fleet, module, "\nRELEASE = 2\n")
    events: list[tuple[str, str, float]] = []
    producer.start()
    try:
        time.sleep(1.0)
        rolled = api.deploy_fleet(str(fleet.path), restart=True, batch=3,
                                  on_event=lambda d, e, _: events.append((d, e, time.time())))
        time.sleep(1.0)
    finally:
        stop.set()
        producer.join()
    assert rolled.ok, {n: (r.state, r.reason, r.output) for n, r in rolled.items()}
    new = {r.release for r in rolled.values()}  # type: ignore[attr-defined]
    assert len(new) == 1 and new != old
    assert {r.previous_release for r in rolled.values()} == old  # type: ignore[attr-defined]
    assert all(current(fleet, n) in new for n in ("r1", "r2", "r3"))
    steps = [e for d, e, _ in events if d == "r1"]
    order = ["installing release", "deployed", "switching", "draining", "restarting", "ready"]
    assert [e for e in steps if e in order] == order, steps
    # batches of up to 3, but cam is on r1 and r2 only: r1 and r3 went together, r2 after them
    down = {d: (min(t for dd, e, t in events if dd == d and e == "draining"),
                max(t for dd, e, t in events if dd == d and e == "ready"))
            for d in ("r1", "r2", "r3")}
    assert down["r1"][1] < down["r2"][0] and down["r3"][1] < down["r2"][0], down
    assert down["r3"][0] < down["r1"][1], down
    tally = settle(f"rolling deploy over {rig.where}", sent, rig.client, module,
                   timeout=90).report()
    assert tally.sent > 20 and tally.lost == 0 and tally.completed == tally.sent, tally
    rows = {r["device"]: r for r in api.status(str(fleet.path))}
    assert {rows[n]["release"] for n in ("r1", "r2", "r3")} == new


@BOTH
def test_a_release_whose_worker_crashes_at_start_is_rolled_back_by_its_canary(
        rollout_fleet) -> None:
    rig = rollout_fleet({"c1": ["work"], "c2": ["work"], "c3": ["work"]},
                        env={"CRASH_AT_START": "1"})
    fleet, module = rig.fleet, rig.module
    api.deploy_fleet(str(fleet.path))
    assert {r.state for r in fleet.launch()} == {READY}
    old = current(fleet, "c1")
    pids = {n: rig.beat(n).pid for n in ("c2", "c3")}
    new_release(fleet, module, CRASHES)
    rolled = api.deploy_fleet(str(fleet.path), restart=True, canary=1, watch_s=2, timeout=20)
    assert not rolled.ok
    canary = rolled["c1"]
    assert canary.state == FAILED, canary
    assert "worker exited with status" in canary.reason
    assert f"rolled back to {old}: READY" in canary.reason
    assert any("this release crashes when its worker starts" in ln for ln in canary.output)
    assert canary.release == old  # type: ignore[attr-defined]
    for name in ("c2", "c3"):
        assert (rolled[name].state, rolled[name].reason) == (SKIPPED,
                                                             "not touched: canary c1 failed")
        assert rig.beat(name).pid == pids[name]  # never restarted
        assert current(fleet, name) == old  # the new release was never even installed there
        held = Path(fleet.inventory.devices[name].workdir or "") / ".catdog" / "releases"
        assert sorted(p.name for p in held.iterdir()) == sorted([str(old), "current"])
    assert current(fleet, "c1") == old and rig.beat("c1").release == old
    serving(rig, ["c1", "c2", "c3"])
    shown = subprocess.run([sys.executable, "-c", "from ops import commands; import sys; "
                            f"sys.exit(commands.deploy({str(fleet.path)!r}, restart=True, "
                            "canary='1', watch='0', timeout='20'))"],
                           capture_output=True, text=True, timeout=300, check=False)
    assert shown.returncode == 1, shown.stderr
    assert "OLD RELEASE" in shown.stdout and "last output lines" in shown.stdout


def test_a_canary_whose_check_task_fails_goes_back_and_the_rest_are_untouched(
        rollout_fleet) -> None:
    rig = rollout_fleet({"k1": ["work"], "k2": ["work"]})
    fleet, module = rig.fleet, rig.module
    new_release(fleet, module, SMOKE.format(module=module, answer="True"))
    api.deploy_fleet(str(fleet.path))
    assert {r.state for r in fleet.launch()} == {READY}
    old = current(fleet, "k1")
    text = (fleet.folder / f"{module}.py").read_text()
    (fleet.folder / f"{module}.py").write_text(text.replace("return True",
                                                            "raise RuntimeError('smoke failed')"))
    rolled = api.deploy_fleet(str(fleet.path), restart=True, canary=1, check=f"{module}.smoke",
                              check_timeout=20, watch_s=0)
    assert rolled["k1"].state == FAILED, rolled["k1"]
    assert rolled["k1"].reason.startswith(f"check {module}.smoke failed on canary k1: "
                                          f"RuntimeError: smoke failed"), rolled["k1"].reason
    assert rolled["k1"].reason.endswith(f"rolled back to {old}: READY")
    assert rolled["k2"].state == SKIPPED
    assert current(fleet, "k1") == current(fleet, "k2") == old
    assert rig.beat("k1").release == old
    serving(rig, ["k1", "k2"])
    # the built-in check passes on the same release: the canary's check is the project's own
    passed = api.deploy_fleet(str(fleet.path), restart=True, canary=1, watch_s=0)
    assert passed.ok and rolled["k1"].previous_release == old, passed  # type: ignore[attr-defined]


def test_an_install_killed_halfway_leaves_the_device_on_its_old_release(
        rollout_fleet) -> None:
    rig = rollout_fleet({"i1": ["work"]})
    fleet, module = rig.fleet, rig.module
    api.deploy_fleet(str(fleet.path))
    assert fleet.launch()[0].state == READY
    old, pid = current(fleet, "i1"), rig.beat("i1").pid
    new_release(fleet, module, "\nRELEASE = 3\n")
    releases = Path(fleet.inventory.devices["i1"].workdir or "") / ".catdog" / "releases"

    def kill_the_install(device: str, event: str, detail: str) -> None:
        if event == "installing release":  # the pip install on the device, killed mid-way
            threading.Thread(target=killer, args=(detail,)).start()

    def killer(release: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = subprocess.run(["pkill", "-KILL", "-f", f"{releases / release}/bin/python -m pip"],
                                   check=False)
            if found.returncode == 0:
                return
            time.sleep(0.02)

    cut = api.deploy_fleet(str(fleet.path), on_event=kill_the_install)
    assert cut["i1"].state == FAILED, cut["i1"]
    assert "pip install of CatDog into the release" in cut["i1"].reason
    assert current(fleet, "i1") == old and cut["i1"].release == old  # type: ignore[attr-defined]
    assert rig.beat("i1").pid == pid
    serving(rig, ["i1"])
    restarted = api.restart_fleet(str(fleet.path), rolling=True)
    assert restarted["i1"].state == READY and rig.beat("i1").release == old
    partial = [p.name for p in releases.iterdir() if not (p / "release.json").exists()
               and p.name != "current"]
    assert partial, "the killed install leaves a partial release"
    again = api.deploy_fleet(str(fleet.path))
    assert again["i1"].state == DEPLOYED and current(fleet, "i1") == partial[0]


def test_rollback_goes_back_one_release_and_keep_prunes_the_oldest(rollout_fleet) -> None:
    rig = rollout_fleet({"b1": ["work"]})
    fleet, module = rig.fleet, rig.module
    ids: list[str] = []
    for n in range(3):
        new_release(fleet, module, f"\nRELEASE = {n}\n")
        done = api.deploy_fleet(str(fleet.path), keep=2)
        assert done["b1"].state == DEPLOYED, done["b1"]
        ids.append(str(current(fleet, "b1")))
    releases = Path(fleet.inventory.devices["b1"].workdir or "") / ".catdog" / "releases"
    assert sorted(p.name for p in releases.iterdir()) == sorted([*ids[1:], "current"])
    assert api.deploy_fleet(str(fleet.path))["b1"].state == UNCHANGED
    assert fleet.launch()[0].state == READY
    assert rig.beat("b1").release == ids[2]
    back = api.rollback(str(fleet.path))
    assert (back["b1"].state, back["b1"].previous_release, back["b1"].release) == (  # type: ignore[attr-defined]
        READY, ids[2], ids[1]), back["b1"]
    assert current(fleet, "b1") == ids[1] and rig.beat("b1").release == ids[1]
    status = commands.rollback(str(fleet.path))
    assert status == 1 and current(fleet, "b1") == ids[1]  # nothing before ids[1]: refused
    again = api.deploy_fleet(str(fleet.path), restart=True)  # forward again: ids[2] is kept
    assert (again["b1"].state, current(fleet, "b1")) == (READY, ids[2]), again["b1"]
