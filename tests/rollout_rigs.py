"""The fleets the rollout tests roll out to, all reached over real sshd with real workers in tmux:

- ``sshd``: loopback (:class:`bench.sshd.Sshd`): each device a workdir of its own on 127.0.0.1,
  the session's embedded Redis as broker;
- ``lan``: the network-namespace LAN (:class:`bench.lan.Lan`): each device a host of its own
  (its namespace, address, sshd and cable), the LAN's password-protected Redis on the bridge as
  broker (``$CATDOG_BROKER_URL`` for the test, as a user would set it).

A :class:`Rig` is what a test body needs of either: the fleet, its probe module (``tests.probe``),
a way to send the probe's ``record`` task to a target, and a client of the fleet's broker. The
process-wide ``catdog.app`` stays on the session's broker (it is fixed once per process), so a
LAN rig sends with an app of its own for the LAN's broker, routed as ``record.on(target)`` is.

The devices share one device venv (:func:`device_venv`): a venv of its own whose packages are
the test environment's (a ``.pth``), marked as deployed with this checkout's CatDog, so ``fab
deploy`` leaves it alone and installs only the releases, as on a device provisioned before.
"""

from __future__ import annotations

import json
import site
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from catdog import app as process_app
from catdog.application import control_app
from catdog.inventory import BROKER_ENV
from catdog.records import Heartbeat, heartbeat_key
from catdog.routing import plan
from ops.build import catdog_to_ship
from ops.device_probe import DEPLOYED_RECORD
from tests.probe import write_probe

from .conftest import FleetUnderTest, Sshd
from .lan import Lan, LanHost

LAN_HOSTS = 3  # the most devices a rollout test has; LAN tests reuse the hosts, not the workdirs


def device_venv(folder: Path) -> Path:
    """The devices' venv: this environment's packages, recorded as deployed with this CatDog;
    its python."""
    venv = folder / "venv"
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


@dataclass
class Rig:
    fleet: FleetUnderTest
    module: str
    client: redis.Redis
    #: ``send(target, *args)``: the probe's ``record`` task sent to ``target``; its AsyncResult
    send: Callable[..., Any]
    #: device -> its LAN host (none over loopback)
    hosts: dict[str, LanHost] = field(default_factory=dict)
    where: str = "loopback sshd"

    def beat(self, name: str) -> Heartbeat:
        raw = self.client.get(heartbeat_key(name))
        assert raw, f"{name} has no heartbeat"
        return Heartbeat.loads(raw)


@dataclass
class LanBroker:
    """The LAN's Redis (one per module's LAN) and the LAN's hosts, handed out in order."""

    lan: Lan
    url: str
    hosts: list[LanHost]

    @classmethod
    def start(cls, lan: Lan) -> LanBroker:
        password, port = lan.start_redis()
        hosts = [lan.add_host(f"h{n}") for n in range(LAN_HOSTS)]
        return cls(lan, f"redis://:{password}@{lan.gateway}:{port}/0", hosts)


class Rigs:
    """Builds rigs for one test; :meth:`stop` stops every fleet they launched."""

    def __init__(self, make_fleet: Callable[..., FleetUnderTest], base: Path, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> None:
        self.make_fleet = make_fleet
        self.base = base
        self.tmp_path = tmp_path
        self.monkeypatch = monkeypatch
        self.made: list[FleetUnderTest] = []

    def sshd(self, sshd: Sshd, client: redis.Redis, devices: dict[str, list[str]],
             **fields: Any) -> Rig:
        module = f"rollprobe_{uuid.uuid4().hex[:8]}"
        specs = {name: sshd.device(caps, self.tmp_path / name, python=str(self.base), **fields)
                 for name, caps in devices.items()}
        fleet = self._fleet(specs, module)
        probe = write_probe([fleet.folder], module)
        return Rig(fleet, module, client, lambda target, *a: probe.record.on(target).delay(*a))

    def lan(self, broker: LanBroker, devices: dict[str, list[str]], **fields: Any) -> Rig:
        assert len(devices) <= len(broker.hosts), f"the LAN has {len(broker.hosts)} hosts"
        module = f"rollprobe_{uuid.uuid4().hex[:8]}"
        hosts = dict(zip(devices, broker.hosts, strict=False))
        specs = {name: broker.lan.device(hosts[name], caps, python=str(self.base),
                                         workdir=str(self.tmp_path / name), **fields)
                 for name, caps in devices.items()}
        fleet = self._fleet(specs, module)
        write_probe([fleet.folder], module)
        process_app.conf.broker_url  # noqa: B018  (pinned to the session's broker before ...)
        self.monkeypatch.setenv(BROKER_ENV, broker.url)  # ... every command takes the LAN's
        fleet.url = broker.url
        client = redis.Redis.from_url(broker.url)
        client.flushdb()
        sender = control_app(broker.url)
        priority = sender.conf.task_default_priority

        def send(target: str, *args: Any) -> Any:
            queue = plan(fleet.inventory, (), target).queue
            return sender.send_task(f"{module}.record", args=args, queue=queue,
                                    priority=priority)

        return Rig(fleet, module, client, send, hosts, "the netns LAN")

    def _fleet(self, specs: dict[str, dict[str, Any]], module: str) -> FleetUnderTest:
        fleet = self.make_fleet(specs, imports=[module])
        self.made.append(fleet)
        return fleet

    def stop(self) -> None:
        for fleet in self.made:
            fleet.stop(force=True)
