"""A device cut off the LAN mid-run, then plugged back: nothing is lost.

Each device is a host of its own (a network namespace with a veth to the coordinator's bridge,
its own address and sshd); the broker is a password-protected Redis on the bridge. While tasks
run, ``pi-a``'s cable is pulled (its end of the veth goes down):

- capability work keeps flowing to ``pi-b``;
- tasks sent to ``pi-a`` itself wait in its queue;
- `fab status` shows ``pi-a`` offline.

Plugged back, ``pi-a`` rejoins by itself (no relaunch) and drains its queue; every task completes.
"""

from __future__ import annotations

import collections
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from ops.results import READY
from tests.lan import Lan, NetnsUnavailable
from tests.probe import starts, write_probe
from tests.test_cli import _env, fab

from .ledger import tally_of
from .producer import produce

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

PASSWORD_VAR = "CATDOG_CHAOS_PASSWORD"
SHORT_CUT_S = 20.0  # long enough to be seen offline, shorter than the 60 s visibility timeout
LONG_CUT_S = 80.0  # longer: what pi-a held is put back and run by pi-b meanwhile


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[Lan]:
    (tmp_path / "lan").mkdir()
    try:
        net = Lan(tmp_path / "lan")
    except NetnsUnavailable as exc:
        pytest.skip(f"network-namespace fleet not run: {exc}")
    try:
        yield net
    finally:
        net.close()  # namespaces, their sshd, tmux servers and workers, the LAN Redis


def until(condition, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.25)
    return time.monotonic() - started


@pytest.mark.timeout(420)
@pytest.mark.parametrize("cut_s", [SHORT_CUT_S, LONG_CUT_S], ids=["20s", "80s"])
def test_a_device_cut_off_mid_run_rejoins_and_drains_its_queue(lan: Lan, tmp_path: Path,
                                                               cut_s: float) -> None:
    password, port = lan.start_redis()
    hosts = {name: lan.add_host(name) for name in ("pi-a", "pi-b")}
    module = f"chaos_{uuid.uuid4().hex[:8]}"
    devices = {name: lan.device(host, ["chaos"], pool="threads", concurrency=2)
               for name, host in hosts.items()}
    workdirs = [Path(d["workdir"]) for d in devices.values()]
    for folder in workdirs:
        folder.mkdir(parents=True, exist_ok=True)
    write_probe([*workdirs, tmp_path], module)
    inventory = tmp_path / "catdog.yaml"
    inventory.write_text(yaml.safe_dump({
        "broker": f"redis://:${{{PASSWORD_VAR}}}@{lan.gateway}:{port}/0",
        "tmux_socket": f"catdog-chaos-{uuid.uuid4().hex[:6]}", "imports": [module],
        "devices": devices}, sort_keys=False))
    env = {PASSWORD_VAR: password}
    client = redis.Redis(host=lan.gateway, port=port, password=password)

    def state(device: str) -> str:
        shown = fab("status", "--inventory", str(inventory), "--json", env=_env(**env))
        return next(r["state"] for r in json.loads(shown.stdout) if r["device"] == device)

    launched = fab("launch", "--inventory", str(inventory), "--json", env=_env(**env))
    assert [r["state"] for r in json.loads(launched.stdout)] == [READY, READY], launched.stderr
    try:
        sent = produce(inventory, module, "send", "cap:chaos", "0", "80", "0.5", **env)
        until(lambda: any(d == "pi-a" for _, _, d in starts(client, module)), 30, "pi-a working")
        hosts["pi-a"].link(up=False)
        cut_at = time.time()
        sent |= produce(inventory, module, "send", "pi-a", "100", "5", "0", **env)
        offline_after = until(lambda: state("pi-a") == "offline", 30, "pi-a shown offline")
        until(lambda: sum(1 for _, t, d in starts(client, module)
                          if d == "pi-b" and t > cut_at + 1) >= 10, 60, "work flowing to pi-b")
        assert state("pi-b") in ("busy", "idle")
        assert not [n for n, _, _ in starts(client, module) if n >= 100]  # waiting for pi-a

        time.sleep(max(0.0, cut_at + cut_s - time.time()))
        hosts["pi-a"].link(up=True)
        cut_for = time.time() - cut_at
        rejoined_after = until(lambda: state("pi-a") in ("busy", "idle"), 60, "pi-a back")
        done = produce(inventory, module, "get", stdin=json.dumps(sent), **env)
        runs = starts(client, module)
        tally = tally_of(f"device link down {cut_s:.0f} s", done, runs,
                         cut_for_s=round(cut_for, 1), offline_shown_after_s=round(offline_after, 1),
                         rejoined_after_link_up_s=round(rejoined_after, 1)).report()
        assert tally.lost == 0 and tally.completed == tally.sent == 85
        assert {d for n, _, d in runs if n >= 100} == {"pi-a"}  # its own queue, drained by it
        twice = {n for n, c in collections.Counter(n for n, _, _ in runs).items() if c > 1}
        if cut_s < 60:
            assert twice == set()
        else:  # held by pi-a when cut, put back after 60 s and run by pi-b during the cut
            assert twice and all(any(m == n and d == "pi-b" and cut_at + 55 < t < cut_at + cut_s
                                     for m, t, d in runs) for n in twice)
    finally:
        fab("stop", "--inventory", str(inventory), "--force", env=_env(**env))
