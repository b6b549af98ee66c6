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

from .ledger import Tally
from .producer import produce

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

PASSWORD_VAR = "CATDOG_CHAOS_PASSWORD"


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


def test_a_device_cut_off_mid_run_rejoins_and_drains_its_queue(lan: Lan, tmp_path: Path) -> None:
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
        sent = produce(inventory, module, "send", "cap:chaos", "0", "60", "0.3", **env)
        until(lambda: any(d == "pi-a" for _, _, d in starts(client, module)), 30, "pi-a working")
        hosts["pi-a"].link(up=False)
        cut_at = time.time()
        sent |= produce(inventory, module, "send", "pi-a", "100", "5", "0", **env)
        offline_after = until(lambda: state("pi-a") == "offline", 30, "pi-a shown offline")
        until(lambda: sum(1 for _, t, d in starts(client, module)
                          if d == "pi-b" and t > cut_at + 1) >= 10, 60, "work flowing to pi-b")
        assert state("pi-b") in ("busy", "idle")
        assert not [n for n, _, _ in starts(client, module) if n >= 100]  # waiting for pi-a

        hosts["pi-a"].link(up=True)
        cut_for = time.time() - cut_at
        rejoined_after = until(lambda: state("pi-a") in ("busy", "idle"), 60, "pi-a back")
        done = produce(inventory, module, "get", stdin=json.dumps(sent), **env)
        runs = starts(client, module)
        counts: dict[int, int] = {}
        for n, _, _ in runs:
            counts[n] = counts.get(n, 0) + 1
        tally = Tally("device link down", len(sent), sum(done.values()),
                      sum(c - 1 for c in counts.values() if c > 1), len(sent) - sum(done.values()),
                      {"cut_for_s": round(cut_for, 1),
                       "offline_shown_after_s": round(offline_after, 1),
                       "rejoined_after_link_up_s": round(rejoined_after, 1)}).report()
        assert tally.lost == 0 and tally.completed == tally.sent == 65
        assert {d for n, _, d in runs if n >= 100} == {"pi-a"}  # its own queue, drained by it
    finally:
        fab("stop", "--inventory", str(inventory), "--force", env=_env(**env))
