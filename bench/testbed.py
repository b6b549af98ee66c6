"""Fleets of SSH devices for the benchmarks: a LAN of network namespaces (one host per device)
where the machine allows it, else devices behind one sshd on loopback (``bench.lan``,
``bench.sshd``, which the tests use too). The bed's broker is handed to this process's app."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from catdog.fleet import fleet
from catdog.inventory import BROKER_ENV, Inventory
from catdog.loader import load_inventory

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Bed:
    kind: str  # "netns": one namespace per device; "loopback": one sshd for all
    inventory: Inventory
    broker_url: str


@contextlib.contextmanager
def ssh_fleet(count: int, *, pool: str = "solo") -> Iterator[Bed]:
    """``count`` SSH devices named ``d1``..``dN`` and a broker they all reach."""
    from bench.lan import Lan, NetnsUnavailable
    from bench.sshd import Sshd
    from bench.tmuxserver import end_server
    from ops.embedded_redis import EmbeddedRedis

    with tempfile.TemporaryDirectory(prefix="catdog-bench-") as tmp, \
            contextlib.ExitStack() as stack:
        folder = Path(tmp)
        (folder / "net").mkdir()
        devices: dict[str, dict[str, Any]] = {}
        try:
            lan = Lan(folder / "net")
        except NetnsUnavailable:
            sshd = Sshd(folder / "net")
            stack.callback(sshd.close)
            server = EmbeddedRedis(folder / "broker")
            stack.callback(server.stop)
            url, kind = server.ensure_running(), "loopback"
            for i in range(1, count + 1):
                devices[f"d{i}"] = sshd.device(["bench"], folder / f"d{i}", pool=pool)
        else:
            stack.callback(lan.close)
            password, port = lan.start_redis()
            url, kind = f"redis://:{password}@{lan.gateway}:{port}/0", "netns"
            for i in range(1, count + 1):
                devices[f"d{i}"] = lan.device(lan.add_host(f"d{i}"), ["bench"], pool=pool)
        bed = Bed(kind, _inventory(folder, devices, url), url)
        stack.callback(end_server, bed.inventory.tmux_socket)  # before the LAN and broker go
        yield bed


def _inventory(folder: Path, devices: dict[str, dict[str, Any]], url: str,
               imports: tuple[str, ...] = ()) -> Inventory:
    path = folder / "catdog.yaml"
    path.write_text(yaml.safe_dump({"tmux_socket": f"catdog-bench-{uuid.uuid4().hex[:6]}",
                                    "broker": url, "devices": devices,
                                    **({"imports": list(imports)} if imports else {})}))
    os.environ[BROKER_ENV] = url  # this process's app talks to the bed's broker
    inventory = load_inventory(path)
    fleet.use_loaded(inventory)
    return inventory


@contextlib.contextmanager
def local_fleet(count: int, *, pool: str = "solo", concurrency: int = 1,
                imports: tuple[str, ...] = ()) -> Iterator[Bed]:
    """``count`` devices on this machine (``host: local``), on a private embedded Redis.

    Their workers run in the inventory's temporary folder and import this checkout (``bench``
    is not installed), so the project root goes first on their ``PYTHONPATH``.
    """
    from bench.tmuxserver import end_server
    from ops.embedded_redis import EmbeddedRedis

    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])

    with tempfile.TemporaryDirectory(prefix="catdog-bench-") as tmp, \
            contextlib.ExitStack() as stack:
        folder = Path(tmp)
        server = EmbeddedRedis(folder / "broker")
        stack.callback(server.stop)
        url = server.ensure_running()
        devices: dict[str, dict[str, Any]] = {
            f"d{i}": {"host": "local", "capabilities": ["bench"], "pool": pool,
                      "concurrency": concurrency,
                      **({"allow_root": True} if os.geteuid() == 0 else {})}
            for i in range(1, count + 1)}
        bed = Bed("local", _inventory(folder, devices, url, imports), url)
        stack.callback(end_server, bed.inventory.tmux_socket)  # before the broker goes
        yield bed
