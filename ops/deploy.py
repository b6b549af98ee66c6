"""``fab deploy``: put this project on each SSH device: CatDog's dependencies into the device's
Python environment, CatDog and the project's task modules into a release of their own.

Per device, in parallel: the device's ``python`` must live in a virtual environment, which is
created (``python3 -m venv``) when missing; it holds CatDog's dependencies (the device side only:
Celery, the Redis client, PyYAML, never Fabric or Flower) and a copy of CatDog for ``fab doctor``
and tools (a record ``fab deploy`` leaves there says which sources). The wheel is built once on the
coordinator (:func:`ops.build.catdog_to_ship`: the checkout's sources, or the installed package's
files) and copied to ``<workdir>/.catdog/dist/`` (over SFTP, else the SSH channel) only when a
device needs it. What workers run is a release (:mod:`ops.releases`): CatDog and the project's task
modules (:mod:`ops.taskfiles`) in ``<workdir>/.catdog/releases/<id>/``, the id a hash of both;
it is installed beside the device's other releases, checked to import cleanly, and only then is
``current`` switched to it (``switch=False``: left for a rolling deploy to switch). A device
already on this release and this CatDog is UNCHANGED; each other row says what changed, and every
row names the release before and after.
"""

from __future__ import annotations

import json
import posixpath
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from catdog import __version__
from catdog.inventory import Device, Inventory
from ops import releases
from ops.build import Shipment, WheelOnce, catdog_to_ship
from ops.device_probe import DEPLOYED_RECORD
from ops.fanout import EventCallback, on_each, quiet
from ops.lan_broker import copy_ca
from ops.releases import ReleaseResult
from ops.remote import Unreachable
from ops.results import DEPLOYED, FAILED, SKIPPED, UNCHANGED, DeviceResult
from ops.session import WorkerSession, referenced_variables
from ops.taskfiles import hashes, inside, task_files

MIN_PYTHON = (3, 10)
PIP_TIMEOUT_S = 900.0  # a Pi Zero compiling nothing still takes minutes to install Celery
VENV_TIMEOUT_S = 300.0
OUTPUT_LINES = 15


class DeployFailed(Exception):
    """One device's deploy stopped; the message is its reason (with the fix)."""

    def __init__(self, reason: str, output: str = "") -> None:
        super().__init__(reason)
        self.output = output.strip().splitlines()[-OUTPUT_LINES:]


def venv_of(python: str) -> str | None:
    """The virtual environment folder of ``.../bin/python*``, or None."""
    path = Path(python)
    if path.parent.name == "bin" and path.name.startswith("python") and path.is_absolute():
        return str(path.parent.parent)
    return None


def version_text(found: dict[str, Any]) -> str:
    return ".".join(str(n) for n in found.get("python", []))


class Deployer:
    """Deploys to devices; ``switch=False`` installs each device's new release beside the others
    without switching to it (a rolling deploy switches device by device, :mod:`ops.rollout`)."""

    def __init__(self, inventory: Inventory, *, shipment: Shipment | None = None,
                 on_event: EventCallback | None = None, switch: bool = True,
                 keep: int = releases.DEFAULT_KEEP) -> None:
        self.inventory = inventory
        self.shipment = shipment or catdog_to_ship()
        self.fingerprint = self.shipment.fingerprint
        self.wheel = WheelOnce(self.shipment, inventory.state_dir / "dist")
        self.task_files = task_files(inventory)
        self.task_hashes = hashes(self.task_files)
        self.release = releases.release_id(self.fingerprint, self.task_hashes,
                                           inventory.imports)
        self.on_event = on_event or quiet
        self.switch = switch
        self.keep = keep
        self._shipped: dict[str, str] = {}  # device -> the wheel's path there, once copied

    def deploy(self, devices: Sequence[Device]) -> list[DeviceResult]:
        """Deploy to ``devices`` in parallel; one result per device, in the order given."""
        return on_each(self.inventory, devices, self._deploy, self.on_event)

    def _deploy(self, session: WorkerSession, started: float) -> DeviceResult:
        device = session.device
        if device.is_local:
            return ReleaseResult(device.name, SKIPPED,
                                 "host: local runs the coordinator's own install")
        before: str | None = None
        try:
            before = releases.listing(session).current
            changes = self._steps(session)
            after = releases.listing(session).current
        except (DeployFailed, releases.ReleaseFailed) as exc:
            return ReleaseResult(device.name, FAILED, str(exc), output=exc.output,
                                 previous_release=before, release=before)
        except Unreachable as exc:  # cut off between steps (a copy, a listing): still a row
            reason = str(exc) if device.name in str(exc) else f"{device.name}: {exc}"
            return ReleaseResult(device.name, FAILED, reason, previous_release=before,
                                 release=before)
        if not changes:
            return ReleaseResult(device.name, UNCHANGED,
                                 f"catdog {__version__} ({self.fingerprint[:12]}) already "
                                 f"installed", previous_release=before, release=after)
        return ReleaseResult(device.name, DEPLOYED, "; ".join(changes), previous_release=before,
                             release=after)

    def _steps(self, session: WorkerSession) -> list[str]:
        device = session.device
        where = f"devices.{device.name}.python in {self.inventory.path.name}"
        if not device.python:
            raise DeployFailed(f"{where} is not set; deploy installs into a virtual environment: "
                               f"set it, e.g. python: {session.workdir}/.venv/bin/python")
        changes: list[str] = []
        found = session.probe()
        if found.get("missing"):
            changes.append(self._create_venv(session, where))
            found = session.probe()
        if "python" not in found:
            raise DeployFailed(f"{device.python} does not run: {found.get('error', 'no report')}")
        if tuple(found["python"][:2]) < MIN_PYTHON:
            raise DeployFailed(f"{device.python} is Python {version_text(found)}; CatDog needs "
                               f">= 3.10: install a newer python3 and recreate the venv")
        if not found.get("in_venv"):
            raise DeployFailed(f"{device.python} is not in a virtual environment; deploy installs "
                               f"only into one: point {where} at e.g. "
                               f"{session.workdir}/.venv/bin/python")
        deployed = found.get("deployed") or {}
        base_behind = "catdog" not in found or deployed.get("fingerprint") != self.fingerprint
        held = releases.listing(session)
        # the device venv holds CatDog's dependencies, which every release shares: a device
        # without them gets them first; one that has them is updated after the switch
        if "catdog" not in found:
            changes.append(self._install(session, found))
            base_behind = False
        notes: list[str] = []  # said only when nothing else changed (the rows name the releases)
        if self.release not in held.records:
            changes += self._task_changes(session, held)
            try:
                notes.append(self.install_release(session))
            except releases.ReleaseFailed as exc:
                if not base_behind:
                    raise
                # perhaps the release needs a dependency the device venv lacks: add it first
                changes.append(self._install(session, {**found, "import_error": str(exc)}))
                base_behind = False
                notes.append(self.install_release(session))
        if self.switch and held.current != self.release:
            notes.append(self.switch_to(session, self.release, held))
        if base_behind:
            changes.append(self._install(session, found))
        ca = copy_ca(self.inventory, session)  # a TLS embedded Redis: devices check it against this CA
        if ca and ca[1]:
            changes.append("broker CA in place")
        return changes or notes

    def install_release(self, session: WorkerSession) -> str:
        """Install this deploy's release beside the others (not switched to)."""
        name = session.device.name
        wheel = self._ship_wheel(session)
        self.on_event(name, "installing release", self.release)
        meta = {"catdog": __version__, "fingerprint": self.fingerprint,
                "wheel": posixpath.basename(wheel)}
        check_env = "".join(f"{k}={v}\n" for k, v in referenced_variables(self.inventory).items())
        releases.install(session, self.release, wheel=wheel, task_files=self.task_files,
                         task_hashes=self.task_hashes, meta=meta,
                         inventory_text=self.inventory.text, check_env=check_env)
        return f"installed release {self.release}"

    def switch_to(self, session: WorkerSession, release: str, held: releases.Releases) -> str:
        """Point the device's ``current`` at ``release``, then prune old releases."""
        self.on_event(session.device.name, "switching", f"{held.current or 'none'} -> {release}")
        releases.switch(session, release, keep=self.keep)
        return f"release {held.current or 'none'} -> {release}"

    def _ship_wheel(self, session: WorkerSession) -> str:
        """The wheel on the device (built once for all devices, copied once per device)."""
        shipped = self._shipped.get(session.device.name)
        if shipped:
            return shipped
        name = session.device.name
        self.on_event(name, "building wheel", "")
        wheel = self.wheel.get()
        dist = f"{session.state_dir}/dist"
        self.on_event(name, "copying", f"{wheel.name} to {dist}")
        session.host.shell(f"mkdir -p {shlex.quote(dist)} && rm -f {shlex.quote(dist)}/catdog-*.whl")
        session.host.upload(wheel, f"{dist}/{wheel.name}")
        self._shipped[name] = f"{dist}/{wheel.name}"
        return self._shipped[name]

    def _task_changes(self, session: WorkerSession, held: releases.Releases) -> list[str]:
        """The task modules this release changes against the current one (or against the
        copies an older deploy put in ``workdir``)."""
        if held.current:
            before = held.records[held.current].get("tasks") or {}
        else:
            before = releases.workdir_record(session)
        changed = [n for n, digest in self.task_hashes.items() if before.get(n) != digest]
        removed = [n for n in before if n not in self.task_hashes and inside(n)]
        return ([f"task modules: {', '.join(changed)}"] if changed else []) + (
            [f"removed task modules: {', '.join(removed)}"] if removed else [])

    def _create_venv(self, session: WorkerSession, where: str) -> str:
        venv = venv_of(session.python)
        if venv is None:
            raise DeployFailed(f"{session.python} not found on {session.device.name}, and it is "
                               f"not a venv's bin/python that deploy could create; fix {where}")
        self.on_event(session.device.name, "creating venv", venv)
        done = session.host.shell(f"mkdir -p {shlex.quote(session.workdir)} && "
                                  f"python3 -m venv {shlex.quote(venv)}", timeout=VENV_TIMEOUT_S)
        if done.status != 0:
            raise DeployFailed(f"could not create the venv {venv} with the device's python3 "
                               f"(exit {done.status}); on Debian or Raspberry Pi OS: "
                               f"sudo apt install python3-venv", done.stdout + done.stderr)
        return f"created venv {venv}"

    def _install(self, session: WorkerSession, found: dict[str, Any]) -> str:
        name = session.device.name
        remote = self._ship_wheel(session)
        wheel = Path(remote)
        self.on_event(name, "installing", "the device side only, with the device's pip")
        pip = f"{shlex.quote(session.python)} -m pip install --disable-pip-version-check --quiet"
        # the first pip run adds missing dependencies; the second replaces CatDog itself even when
        # its version number did not change (pip would otherwise call it already satisfied)
        commands = [f"{pip} --force-reinstall --no-deps {shlex.quote(remote)}"]
        if "import_error" in found:
            commands.insert(0, f"{pip} {shlex.quote(remote)}")
        for command in commands:
            done = session.host.shell(command, timeout=PIP_TIMEOUT_S)
            if done.status != 0:
                raise DeployFailed(f"pip install failed on {name} (exit {done.status}); the device "
                                   f"needs its package index for Celery, redis and PyYAML",
                                   done.stdout + done.stderr)
        after = session.probe()
        if "catdog" not in after:
            raise DeployFailed(f"installed, but CatDog does not import with {session.python}: "
                               f"{after.get('import_error') or after.get('error')}")
        record = {"fingerprint": self.fingerprint, "version": __version__, "wheel": wheel.name,
                  "deployed_at": time.time()}
        session.host.write_text(f"{after['prefix']}/{DEPLOYED_RECORD}", json.dumps(record))
        before = (found.get("deployed") or {}).get("fingerprint")
        if "catdog" not in found:
            return f"installed catdog {__version__} ({self.fingerprint[:12]})" + (
                " with its dependencies" if len(commands) > 1 else "")
        return (f"updated catdog {found['catdog']} ({(before or 'not deployed')[:12]}) -> "
                f"{__version__} ({self.fingerprint[:12]})")
