"""``fab deploy``: put this project on each SSH device: CatDog into the device's Python environment,
the project's task modules into its ``workdir``.

Per device, in parallel: the device's ``python`` must live in a virtual environment, which is
created (``python3 -m venv``) when missing. The device's Python reports which CatDog it has (a
record ``fab deploy`` leaves in the environment); a device already on this CatDog
(:func:`ops.build.catdog_to_ship`: the checkout's sources, or the installed package's files) gets
nothing built or copied. Otherwise the wheel is built once on the coordinator, copied to
``<workdir>/.catdog/dist/`` (over SFTP, else the SSH channel) and installed with the device's pip:
the device side only (Celery, the Redis client, PyYAML), never Fabric or Flower. Then the project's task
modules (:mod:`ops.taskfiles`) that differ from what the device has (a record in ``<workdir>/.catdog/``) are
copied into ``workdir``, where the device's worker imports them; ones the project no longer has are
removed. A device with nothing to change is UNCHANGED; each other row says what changed.
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
from ops.build import Shipment, WheelOnce, catdog_to_ship
from ops.device_probe import DEPLOYED_RECORD
from ops.fanout import EventCallback, on_each, quiet
from ops.lan_broker import copy_ca
from ops.results import DEPLOYED, FAILED, SKIPPED, UNCHANGED, DeviceResult
from ops.session import WorkerSession
from ops.taskfiles import RECORD, hashes, task_files

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


def inside(name: object) -> bool:
    """A record's path that stays inside the workdir (the only ones deploy removes)."""
    return (isinstance(name, str) and bool(name) and not name.startswith("/")
            and ".." not in name.split("/"))


def version_text(found: dict[str, Any]) -> str:
    return ".".join(str(n) for n in found.get("python", []))


class Deployer:
    def __init__(self, inventory: Inventory, *, shipment: Shipment | None = None,
                 on_event: EventCallback | None = None) -> None:
        self.inventory = inventory
        self.shipment = shipment or catdog_to_ship()
        self.fingerprint = self.shipment.fingerprint
        self.wheel = WheelOnce(self.shipment, inventory.state_dir / "dist")
        self.task_files = task_files(inventory)
        self.task_hashes = hashes(self.task_files)
        self.on_event = on_event or quiet

    def deploy(self, devices: Sequence[Device]) -> list[DeviceResult]:
        """Deploy to ``devices`` in parallel; one result per device, in the order given."""
        return on_each(self.inventory, devices, self._deploy, self.on_event)

    def _deploy(self, session: WorkerSession, started: float) -> DeviceResult:
        device = session.device
        if device.is_local:
            return DeviceResult(device.name, SKIPPED,
                                "host: local runs the coordinator's own install")
        try:
            changes = self._steps(session)
        except DeployFailed as exc:
            return DeviceResult(device.name, FAILED, str(exc), output=exc.output)
        if not changes:
            return DeviceResult(device.name, UNCHANGED,
                                f"catdog {__version__} ({self.fingerprint[:12]}) already installed")
        return DeviceResult(device.name, DEPLOYED, "; ".join(changes))

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
        if "catdog" not in found or deployed.get("fingerprint") != self.fingerprint:
            changes.append(self._install(session, found))
        ca = copy_ca(self.inventory, session)  # a TLS embedded Redis: devices check it against this CA
        if ca and ca[1]:
            changes.append("broker CA in place")
        return changes + self._copy_task_modules(session)

    def _copy_task_modules(self, session: WorkerSession) -> list[str]:
        """Copy the project's task modules the device lacks or has older; remove the ones the
        project no longer has (a stale ``tasks/`` module would still be imported there)."""
        record = f"{session.state_dir}/{RECORD}"
        try:
            before = json.loads(session.host.shell(f"cat {shlex.quote(record)} 2>/dev/null").stdout
                                or "{}")
        except ValueError:
            before = {}
        before = before if isinstance(before, dict) else {}
        changed = [name for name, digest in self.task_hashes.items() if before.get(name) != digest]
        removed = [name for name in before if name not in self.task_hashes and inside(name)]
        if not changed and not removed:
            return []
        workdir = session.workdir
        self.on_event(session.device.name, "copying", f"task modules to {workdir}")
        folders = sorted({posixpath.dirname(f"{workdir}/{name}") for name in changed}
                         | {session.state_dir})
        command = f"mkdir -p {shlex.join(folders)}"
        if removed:
            command += f" && rm -f {shlex.join(f'{workdir}/{name}' for name in removed)}"
        done = session.host.shell(command)
        if done.status != 0:
            raise DeployFailed(f"could not prepare {workdir} on {session.device.name} for the "
                               f"task modules (exit {done.status})", done.stdout + done.stderr)
        for name in changed:
            session.host.upload(self.task_files[name], f"{workdir}/{name}")
        session.host.write_text(record, json.dumps(self.task_hashes, indent=1))
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
        self.on_event(name, "building wheel", "")
        wheel = self.wheel.get()
        dist = f"{session.state_dir}/dist"
        remote = f"{dist}/{wheel.name}"
        self.on_event(name, "copying", f"{wheel.name} to {dist}")
        session.host.shell(f"mkdir -p {shlex.quote(dist)} && rm -f {shlex.quote(dist)}/catdog-*.whl")
        session.host.upload(wheel, remote)
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
