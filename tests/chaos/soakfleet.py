"""The soak's fleet: four devices, two of them network namespaces, on one durable LAN Redis.

``net-a`` and ``net-b`` are hosts of their own on the network-namespace LAN (:mod:`bench.lan`:
own address, own sshd, a link that can be cut), reached over SSH; ``loc-a`` and ``loc-b`` are
``host: local`` devices on the coordinator. ``net-b`` is a box that boots a real systemd
(:mod:`tests.chaos.soakbox`), and :meth:`SoakFleet.enable` runs ``fab enable`` on it (the ops
API, as a user would): its "reboot" is a power cut and a boot, its worker brought back by its
unit; the others' "reboot" kills the worker's processes and relaunches it. All four use the
LAN's Redis (on the bridge address, with a password and an append-only file), so a Redis kill is
a kill of the one broker the whole fleet uses. Pools differ on purpose: threads and prefork on
each side.

Everything here acts the way a user (or the device itself) would: workers are started with
:class:`ops.launch.Launcher`, found through their tmux session, and signalled as processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import redis
import yaml

from bench.lan import Lan, LanHost
from bench.tmuxserver import end_server, session_pids
from catdog import broker
from catdog.context import open_fleet
from catdog.fleet import fleet
from catdog.loader import load_inventory
from catdog.records import Heartbeat, heartbeat_key
from ops.launch import Launcher
from ops.results import ALREADY_RUNNING, READY
from ops.session import worker_session
from tests.conftest import device_spec
from tests.probe import write_probe

from .breaks import signal_all
from .soakbox import BootedDevice

PASSWORD_VAR = "CATDOG_SOAK_PASSWORD"
LINKED = ("net-a", "net-b")
#: the devices that boot under systemd, with autostart (``fab enable``)
BOOTED = ("net-b",)
CAPABILITIES = {"net-a": ["soak", "lan"], "net-b": ["soak", "lan", "gpu"],
                "loc-a": ["soak", "gpu"], "loc-b": ["soak"]}
POOLS: dict[str, dict[str, Any]] = {
    "net-a": {"pool": "threads", "concurrency": 4}, "net-b": {"concurrency": 2},
    "loc-a": {"pool": "threads", "concurrency": 4}, "loc-b": {"concurrency": 2}}
#: a relaunch is tried again (a Redis kill, a slow machine) for this long before it counts failed
RELAUNCH_FOR_S = 120.0


class SoakFleet:
    def __init__(self, folder: Path, module: str, tmux_socket: str,
                 fsync: str = "everysec") -> None:
        self.folder = folder
        self.module = module
        self.socket = tmux_socket
        (folder / "lan").mkdir(parents=True, exist_ok=True)
        self.lan = Lan(folder / "lan")
        self.hosts: dict[str, LanHost] = {}
        self.boxes: dict[str, BootedDevice] = {}
        self._launching = threading.Lock()
        self.fsync = fsync
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        password, port = self.lan.start_redis(durable=True, fsync=self.fsync)
        os.environ[PASSWORD_VAR] = password
        devices: dict[str, dict[str, Any]] = {}
        for name in LINKED:
            if name in BOOTED:
                self.boxes[name] = BootedDevice(self.lan, name)
                self.hosts[name] = self.boxes[name].host
            else:
                self.hosts[name] = self.lan.add_host(name)
            devices[name] = self.lan.device(self.hosts[name], CAPABILITIES[name], **POOLS[name])
        for name in CAPABILITIES:
            if name not in LINKED:
                devices[name] = device_spec(CAPABILITIES[name], **POOLS[name])
        workdirs = [Path(d["workdir"]) for d in devices.values() if "workdir" in d]
        for folder in workdirs:
            folder.mkdir(parents=True, exist_ok=True)
        self.probe = write_probe([self.folder, *workdirs], self.module)
        path = self.path = self.folder / "catdog.yaml"
        path.write_text(yaml.safe_dump({
            "broker": f"redis://:${{{PASSWORD_VAR}}}@{self.lan.gateway}:{port}/0",
            "tmux_socket": self.socket, "imports": [self.module], "devices": devices},
            sort_keys=False))
        self.inventory = load_inventory(path)
        fleet.use_loaded(self.inventory)
        self.url = broker.resolve(self.inventory, start_embedded=False)
        self.client = redis.Redis.from_url(self.url)

    @property
    def names(self) -> list[str]:
        return list(self.inventory.devices)

    def launch(self, names: list[str] | None = None) -> dict[str, str]:
        """Launch devices (all by default) once; their states, by device."""
        with self._launching:  # one launch at a time: faults heal from threads of their own
            results = Launcher(open_fleet(self.inventory, self.url), timeout=60).launch(
                self.inventory.select(names))
        return {r.device: r.state for r in results}

    def enable(self) -> dict[str, str]:
        """``fab enable`` on the devices that boot (their workers launched: adopted); states."""
        from ops import api

        done = api.enable(str(self.path), list(self.boxes), timeout=60)
        return {name: result.state for name, result in done.items()}

    def relaunch(self, name: str) -> float:
        """Launch ``name`` until its worker answers (retried through a Redis kill); seconds."""
        started = time.monotonic()
        why = ""
        while time.monotonic() - started < RELAUNCH_FOR_S:
            try:
                if self.launch([name])[name] in (READY, ALREADY_RUNNING):
                    return time.monotonic() - started
                why = "not READY"
            except Exception as exc:  # the broker down meanwhile: try again
                why = f"{type(exc).__name__}: {exc}"
            time.sleep(2)
        raise RuntimeError(f"{name} not back within {RELAUNCH_FOR_S:.0f} s: {why}")

    def worker_pid(self, name: str) -> int | None:
        """The pid of the device's worker (its tmux pane's process), None when it is not live."""
        with worker_session(self.inventory, self.inventory.devices[name]) as session:
            pane = session.pane()
        if pane is None or pane.dead or pane.pid <= 1:
            return None
        return self.boxes[name].machine_pid(pane.pid) if name in self.boxes else pane.pid

    def worker_tree(self, name: str) -> list[int]:
        """Every process of the device's worker (main process, pool, all it started)."""
        pid = self.worker_pid(name)
        return session_pids(pid) if pid else []

    def end_session(self, name: str) -> None:
        """The device's tmux session gone (its worker already dead)."""
        with worker_session(self.inventory, self.inventory.devices[name]) as session:
            session.kill()

    def reboot(self, name: str, down_s: float) -> dict[str, Any]:
        """The device "rebooted", ``down_s`` seconds down; what it took, for the fault record.

        A device that boots (:data:`BOOTED`) loses power and boots, and its unit brings the
        worker back ("unit"). Any other has every process of its worker killed at once and its
        session ended, then is relaunched the way a user would (``fab launch``, "relaunch"):
        nothing on it would bring the worker back."""
        if name in self.boxes:
            return self.boxes[name].reboot(down_s, lambda: self.heartbeat(name))
        signal_all(self.worker_tree(name), signal.SIGKILL)
        self.end_session(name)
        time.sleep(down_s)
        return {"form": "relaunch", "relaunch_s": round(self.relaunch(name), 1)}

    def heartbeat(self, name: str) -> Heartbeat | None:
        """The device's latest heartbeat (None when there is none, or the broker is down)."""
        with contextlib.suppress(redis.RedisError):
            raw = self.client.get(heartbeat_key(name))
            return Heartbeat.loads(raw) if isinstance(raw, bytes) else None
        return None

    def heartbeat_fresh(self, name: str, within_s: float = 5.0) -> bool:
        beat = self.heartbeat(name)
        return beat is not None and beat.age(time.time()) < within_s

    def outside_touched(self) -> list[str]:
        """What the boxes' boots touched outside them (:meth:`BootedDevice.untouched`)."""
        return [line for box in self.boxes.values() for line in box.untouched()]

    def close(self) -> None:
        """Every worker, tmux server, namespace and the LAN Redis gone."""
        for host in self.hosts.values():
            with contextlib.suppress(Exception):
                host.link(up=True)
        end_server(self.socket)  # the local devices' workers
        for box in self.boxes.values():
            with contextlib.suppress(Exception):
                box.close()  # before the LAN: a power cut takes every process of the box
        self.lan.close()  # the namespaces' sshd, tmux servers and workers, the LAN Redis
        os.environ.pop(PASSWORD_VAR, None)

