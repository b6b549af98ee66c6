"""Rolling deploys, canaries and rollbacks over real SSH devices (loopback sshd: each device its own
workdir, all reached over SSH, the session's embedded Redis as broker), with real workers in tmux.

The devices share one device venv (``base``): a venv of its own whose packages are the test
environment's (a ``.pth``), marked as deployed with this checkout's CatDog, so ``fab deploy``
leaves it alone and installs only the releases, as on a device provisioned before. A new release
is made as a user makes one: the project's task module changes.
"""

from __future__ import annotations

import json
import site
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from catdog.records import Heartbeat, heartbeat_key
from ops import api, commands
from ops.build import catdog_to_ship
from ops.device_probe import DEPLOYED_RECORD
from ops.results import DEPLOYED, FAILED, READY, SKIPPED, UNCHANGED
from tests.chaos.ledger import settle
from tests.probe import write_probe

from .conftest import FleetUnderTest, Sshd

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


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The devices' venv: this environment's packages, recorded as deployed with this CatDog."""
    venv = tmp_path_factory.mktemp("device-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], capture_output=True, text=True, check=True
                             ).stdout.strip()
    (Path(purelib) / "test-env.pth").write_text(
        f"import site; site.addsitedir({site.getsitepackages()[0]!r})\n")
    record = {"fingerprint": catdog_to_ship().fingerprint, "version": "0.1.0",
              "deployed_at": time.time()}
    (venv / DEPLOYED_RECORD).write_text(json.dumps(record))
    return python


@pytest.fixture
def rollout_fleet(make_fleet, sshd: Sshd, base: Path, tmp_path: Path
                  ) -> Iterator[Callable[..., tuple[FleetUnderTest, str, Any]]]:
    made: list[FleetUnderTest] = []

    def make(devices: dict[str, list[str]], **fields: Any) -> tuple[FleetUnderTest, str, Any]:
        module = f"rollprobe_{uuid.uuid4().hex[:8]}"
        specs = {name: sshd.device(caps, tmp_path / name, python=str(base), **fields)
                 for name, caps in devices.items()}
        fleet = make_fleet(specs, imports=[module])
        probe = write_probe([fleet.folder], module)
        made.append(fleet)
        return fleet, module, probe

    yield make
    for fleet in made:
        fleet.stop(force=True)


def new_release(fleet: FleetUnderTest, module: str, extra: str) -> None:
    """A new release, as a user makes one: the project's task module changes."""
    path = fleet.folder / f"{module}.py"
    path.write_text(path.read_text() + extra)


def current(fleet: FleetUnderTest, name: str) -> str | None:
    link = Path(fleet.inventory.devices[name].workdir or "") / ".catdog" / "releases" / "current"
    return link.resolve().name if link.is_symlink() else None


def beat(client: redis.Redis, name: str) -> Heartbeat:
    raw = client.get(heartbeat_key(name))
    assert raw, f"{name} has no heartbeat"
    return Heartbeat.loads(raw)


def serving(probe: Any, names: list[str]) -> None:
    """Every device named answers a task pinned to it."""
    for n, name in enumerate(names):
        assert probe.record.on(name).delay(1000 + n).get(timeout=30) == 1000 + n, name


def test_a_rolling_deploy_under_a_steady_stream_of_tasks_loses_none(
        rollout_fleet, redis_client: redis.Redis) -> None:
    fleet, module, probe = rollout_fleet({"r1": ["work", "cam"], "r2": ["work", "cam"],
                                          "r3": ["work"]})
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
            sent[n] = probe.record.on("cap:work").delay(n, 0.2)
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
    tally = settle("rolling deploy", sent, redis_client, module, timeout=90).report()
    assert tally.sent > 20 and tally.lost == 0 and tally.completed == tally.sent, tally
    rows = {r["device"]: r for r in api.status(str(fleet.path))}
    assert {rows[n]["release"] for n in ("r1", "r2", "r3")} == new


def test_a_release_whose_worker_crashes_at_start_is_rolled_back_by_its_canary(
        rollout_fleet, redis_client: redis.Redis) -> None:
    fleet, module, probe = rollout_fleet({"c1": ["work"], "c2": ["work"], "c3": ["work"]},
                                         env={"CRASH_AT_START": "1"})
    api.deploy_fleet(str(fleet.path))
    assert {r.state for r in fleet.launch()} == {READY}
    old = current(fleet, "c1")
    pids = {n: beat(redis_client, n).pid for n in ("c2", "c3")}
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
        assert beat(redis_client, name).pid == pids[name]  # never restarted
        assert current(fleet, name) == old  # the new release was never even installed there
        held = Path(fleet.inventory.devices[name].workdir or "") / ".catdog" / "releases"
        assert sorted(p.name for p in held.iterdir()) == sorted([str(old), "current"])
    assert current(fleet, "c1") == old and beat(redis_client, "c1").release == old
    serving(probe, ["c1", "c2", "c3"])
    shown = subprocess.run([sys.executable, "-c", "from ops import commands; import sys; "
                            f"sys.exit(commands.deploy({str(fleet.path)!r}, restart=True, "
                            "canary='1', watch='0', timeout='20'))"],
                           capture_output=True, text=True, timeout=300, check=False)
    assert shown.returncode == 1, shown.stderr
    assert "OLD RELEASE" in shown.stdout and "last output lines" in shown.stdout


def test_a_canary_whose_check_task_fails_goes_back_and_the_rest_are_untouched(
        rollout_fleet, redis_client: redis.Redis) -> None:
    fleet, module, probe = rollout_fleet({"k1": ["work"], "k2": ["work"]})
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
    assert beat(redis_client, "k1").release == old
    serving(probe, ["k1", "k2"])
    # the built-in check passes on the same release: the canary's check is the project's own
    passed = api.deploy_fleet(str(fleet.path), restart=True, canary=1, watch_s=0)
    assert passed.ok and rolled["k1"].previous_release == old, passed  # type: ignore[attr-defined]


def test_an_install_killed_halfway_leaves_the_device_on_its_old_release(
        rollout_fleet, redis_client: redis.Redis) -> None:
    fleet, module, probe = rollout_fleet({"i1": ["work"]})
    api.deploy_fleet(str(fleet.path))
    assert fleet.launch()[0].state == READY
    old, pid = current(fleet, "i1"), beat(redis_client, "i1").pid
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
    assert beat(redis_client, "i1").pid == pid
    serving(probe, ["i1"])
    restarted = api.restart_fleet(str(fleet.path), rolling=True)
    assert restarted["i1"].state == READY and beat(redis_client, "i1").release == old
    partial = [p.name for p in releases.iterdir() if not (p / "release.json").exists()
               and p.name != "current"]
    assert partial, "the killed install leaves a partial release"
    again = api.deploy_fleet(str(fleet.path))
    assert again["i1"].state == DEPLOYED and current(fleet, "i1") == partial[0]


def test_rollback_goes_back_one_release_and_keep_prunes_the_oldest(
        rollout_fleet, redis_client: redis.Redis) -> None:
    fleet, module, _ = rollout_fleet({"b1": ["work"]})
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
    assert beat(redis_client, "b1").release == ids[2]
    back = api.rollback(str(fleet.path))
    assert (back["b1"].state, back["b1"].previous_release, back["b1"].release) == (  # type: ignore[attr-defined]
        READY, ids[2], ids[1]), back["b1"]
    assert current(fleet, "b1") == ids[1] and beat(redis_client, "b1").release == ids[1]
    status = commands.rollback(str(fleet.path))
    assert status == 1 and current(fleet, "b1") == ids[1]  # nothing before ids[1]: refused
    again = api.deploy_fleet(str(fleet.path), restart=True)  # forward again: ids[2] is kept
    assert (again["b1"].state, current(fleet, "b1")) == (READY, ids[2]), again["b1"]
