"""A deploy cut off halfway by its link: on the network-namespace LAN (each device its own host,
address, sshd and cable), ``fab deploy`` runs as a user runs it, and the device's cable is pulled
while the device's pip installs CatDog into the new release (seen in the device's process list,
not guessed with a sleep). The command gives up within seconds of the link's death (SSH
keepalives, :mod:`ops.remote`), exits non-zero with one line naming the device and the step; the
cable back, the device rejoins by itself still on its old release and serves, ``fab status`` says
so, and the next deploy installs the new release over the half one and rolls the worker onto it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from catdog.records import heartbeat_key
from ops.remote import DEAD_LINK_S
from ops.results import DEPLOYED, FAILED, READY

from .lan import LanHost
from .rollout_rigs import LanBroker, Rig, Rigs
from .test_cli import _env, fab
from .test_rollout import current, new_release, serving

pytestmark = pytest.mark.slow


@pytest.fixture
def rig(make_fleet, device_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        lan_broker: LanBroker) -> Iterator[Rig]:
    rigs = Rigs(make_fleet, device_base, tmp_path, monkeypatch)
    yield rigs.lan(lan_broker, {"u1": ["work"]})
    for host in lan_broker.hosts:
        host.link(up=True)  # whatever the test did, the next one finds its cables in
    rigs.stop()


class CableCutter:
    """Pulls ``host``'s cable the moment a pip runs with a python of a release under
    ``releases`` (the device's own process, in its namespace)."""

    def __init__(self, host: LanHost, releases: Path) -> None:
        self.host = host
        self.releases = f"{releases}/"
        self.cut_at: float | None = None
        self.pip: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            found = self._release_pip()
            if found:
                self.host.link(up=False)
                self.cut_at, self.pip = time.monotonic(), found
                return
            time.sleep(0.01)

    def _release_pip(self) -> list[str]:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            except OSError:
                continue
            if argv[0].startswith(self.releases) and argv[1:3] == ["-m", "pip"]:
                return argv
        return []

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def rejoined(rig: Rig, name: str, since: float, timeout: float = 60.0) -> float:
    """Seconds until ``name``'s worker writes a heartbeat after ``since`` (``time.time()``)."""
    started = time.monotonic()
    while True:
        raw = rig.client.get(heartbeat_key(name))
        if raw and rig.beat(name).time > since:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"{name} did not rejoin in {timeout:g}s"
        time.sleep(0.25)


def status_of(inventory: str, env: dict[str, str], timeout: float = 15.0
              ) -> list[tuple[str, str, str | None]]:
    """``fab status --json``'s (device, state, release) rows once no device is offline.

    Some seconds after a cable is back, a heartbeat the worker wrote as it was pulled can still
    reach Redis (the kernel retransmits what it had sent) and stand there, stale, until the next
    beat: the device shows offline for up to a beat, so the status is asked again."""
    deadline = time.monotonic() + timeout
    while True:
        done = fab("status", "--inventory", inventory, "--json", env=env)
        rows = [(r["device"], r["state"], r["release"]) for r in json.loads(done.stdout)]
        if all(state != "offline" for _, state, _ in rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def test_a_deploy_cut_off_by_its_link_leaves_the_device_on_its_old_release(rig: Rig) -> None:
    fleet, host = rig.fleet, rig.hosts["u1"]
    inventory = str(fleet.path)
    env = _env(CATDOG_BROKER_URL=os.environ["CATDOG_BROKER_URL"])  # the LAN's, for the test
    began = time.monotonic()
    first = json.loads(fab("deploy", "--inventory", inventory, "--json", env=env).stdout)
    assert [r["state"] for r in first] == [DEPLOYED], first
    assert fleet.launch()[0].state == READY
    old, pid = current(fleet, "u1"), rig.beat("u1").pid
    new_release(fleet, rig.module, "\nRELEASE = 2\n")
    releases = Path(fleet.inventory.devices["u1"].workdir or "") / ".catdog" / "releases"

    cutter = CableCutter(host, releases)
    phases = {"deploy and launch": time.monotonic() - began}
    try:
        cut = fab("deploy", "--inventory", inventory, "--json", env=env)
    finally:
        cutter.stop()
    gave_up_after = time.monotonic() - (cutter.cut_at or time.monotonic())
    assert cutter.cut_at is not None, f"no pip into a release was seen: {cut.stdout}{cut.stderr}"
    print(f"link cut during {' '.join(cutter.pip[:4])}...; fab deploy gave up "
          f"{gave_up_after:.1f}s later")
    assert cut.returncode == 1, cut.stdout + cut.stderr
    [row] = json.loads(cut.stdout)
    reason = row["reason"]
    assert row["state"] == FAILED and "\n" not in reason, row
    assert reason.startswith("pip install of CatDog into the release on u1 was cut off: "
                             "the connection to u1 "), reason
    assert f"no answer for {DEAD_LINK_S}s" in reason
    assert f"  u1: failed ({reason})" in cut.stderr.splitlines(), cut.stderr  # as it happened
    assert row["previous_release"] == row["release"] == old
    assert gave_up_after < DEAD_LINK_S + 20  # the link's death noticed, not pip's 15-minute timeout
    half = releases / cutter.pip[0][len(f"{releases}/"):].split("/")[0]
    assert half.is_dir() and not (half / "release.json").exists()  # a half release, not switched to

    back_at = time.time()
    host.link(up=True)
    print(f"u1 rejoined {rejoined(rig, 'u1', back_at):.1f}s after its cable was back")
    assert current(fleet, "u1") == old
    assert (rig.beat("u1").pid, rig.beat("u1").release) == (pid, old)  # the same worker, working
    serving(rig, ["u1"])
    assert status_of(inventory, env) == [("u1", "idle", old)]
    phases["cut deploy to status"] = time.monotonic() - began - sum(phases.values())

    again = fab("deploy", "--inventory", inventory, "--restart", "--json", env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    [row] = json.loads(again.stdout)
    assert (row["state"], row["previous_release"], row["release"]) == (READY, old, half.name)
    assert current(fleet, "u1") == half.name and (half / "release.json").exists()
    assert rig.beat("u1").release == half.name
    serving(rig, ["u1"])
    phases["deploy --restart"] = time.monotonic() - began - sum(phases.values())
    print("phases:", {k: round(v, 1) for k, v in phases.items()})
