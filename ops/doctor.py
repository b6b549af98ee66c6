"""``fab doctor``: can each device run its worker? Every check, and the fix for each that fails.

Per device, in parallel: host key known, SSH reachable, SFTP offered (else files go over the SSH
channel, which needs ``cat``, ``mv``...), Python >= 3.10, CatDog importable by the
device's python (and on this checkout's sources when ``fab deploy`` put it there), tmux present,
the broker reachable *from the device* (with the real URL, read from a mode-600 file), and the
device clock's skew against the coordinator's. A check that cannot run because an earlier one
failed is reported as not run, never as passed.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from catdog.inventory import Device, Inventory
from ops.deploy import MIN_PYTHON, venv_of, version_text
from ops.fanout import EventCallback, parallel, quiet
from ops.lan_broker import device_url
from ops.remote import SFTP_FIX, Unreachable, known_hosts_path, open_host
from ops.results import FAILED, OK, DeviceResult
from ops.session import WorkerSession

CHECKS = ("host_key", "ssh", "sftp", "python", "catdog", "tmux", "broker", "clock")
MAX_SKEW_S = 1.0


@dataclass
class Check:
    name: str
    ok: bool | None  # None: not run, because an earlier check failed
    detail: str
    fix: str = ""


@dataclass
class DoctorResult(DeviceResult):
    checks: list[Check] = field(default_factory=list)

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)


class Doctor:
    def __init__(self, inventory: Inventory, broker_url: str | None, *,
                 broker_problem: str = "", fingerprint: str | None = None,
                 on_event: EventCallback | None = None) -> None:
        self.inventory = inventory
        self.broker_url = broker_url
        self.broker_problem = broker_problem
        self.fingerprint = fingerprint
        self.on_event = on_event or quiet

    def check(self, devices: Sequence[Device]) -> list[DoctorResult]:
        return parallel(devices, self._one)

    def _one(self, device: Device) -> DoctorResult:
        started = time.monotonic()
        self.on_event(device.name, "checking", "")
        checks = self._checks(device)
        failed = [c.name for c in checks if c.ok is False]
        result = DoctorResult(device.name, FAILED if failed else OK,
                              f"{', '.join(failed)} check{'s' * (len(failed) > 1)} failed"
                              if failed else "all checks passed",
                              checks=checks)
        result.elapsed_s = round(time.monotonic() - started, 3)
        self.on_event(device.name, result.state.lower(), result.reason)
        return result

    def _checks(self, device: Device) -> list[Check]:
        if device.is_local:
            checks = [Check("host_key", True, "local"), Check("ssh", True, "local")]
        else:
            checks = [host_key_check(device)]
            if not checks[0].ok:
                return checks + not_run(CHECKS[1:], "needs the host key")
        started = time.monotonic()
        try:
            host = open_host(device)
        except Unreachable as exc:
            if "host key" in str(exc):
                return [Check("host_key", False, str(exc)), *not_run(CHECKS[1:], "host key")]
            return [*checks, Check("ssh", False, str(exc)), *not_run(CHECKS[2:], "needs SSH")]
        try:
            if not device.is_local:
                checks.append(Check("ssh", True, f"{device.user or 'login'}@{device.host}:"
                                                 f"{device.port} in {time.monotonic() - started:.2f}s"))
            return checks + self._on_device(WorkerSession(self.inventory, device, host))
        except Unreachable as exc:  # the connection dropped half-way
            return [checks[0], Check("ssh", False, str(exc)), *not_run(CHECKS[2:], "lost SSH")]
        finally:
            host.close()

    def _on_device(self, session: WorkerSession) -> list[Check]:
        sftp = sftp_check(session)
        clock = clock_check(session)
        tmux = tmux_check(session)
        env_file = "-"
        if self.broker_url and sftp.ok:
            # one file per device and run: devices may share a workdir, doctors may run at once
            env_file = f"{session.state_dir}/run/doctor-{session.device.name}-{os.getpid()}.env"
            url = device_url(self.inventory, session, self.broker_url)  # the device's own, on a LAN fleet
            session.host.write_private(env_file, f"CATDOG_BROKER_URL={url}\n")
        try:
            found = session.probe(env_file)
        finally:
            if env_file != "-":
                session.host.shell(f"rm -f {shlex.quote(env_file)}")
        python = python_check(session, self.inventory, found)
        if not python.ok:
            return [sftp, python, *not_run(["catdog"], "needs python"), tmux,
                    *not_run(["broker"], "needs python"), clock]
        broker = (self._broker_check(session, found) if sftp.ok or not self.broker_url else
                  not_run(["broker"], "needs a way to copy files")[0])
        return [sftp, python, self._catdog_check(session, found), tmux, broker, clock]

    def _catdog_check(self, session: WorkerSession, found: dict[str, Any]) -> Check:
        name = session.device.name
        deploy = f"fab deploy --devices {name}"
        if "catdog" not in found:
            return Check("catdog", False, f"not importable: {found.get('import_error')}",
                         deploy if not session.device.is_local else
                         "pip install -e '.[coordinator]' in the coordinator's environment")
        deployed = (found.get("deployed") or {}).get("fingerprint")
        if deployed and self.fingerprint and deployed != self.fingerprint:
            return Check("catdog", False, f"{found['catdog']} from older sources "
                                          f"({deployed[:12]}, here {self.fingerprint[:12]})", deploy)
        return Check("catdog", True, found["catdog"])

    def _broker_check(self, session: WorkerSession, found: dict[str, Any]) -> Check:
        if not self.broker_url:
            return Check("broker", False, self.broker_problem or "no broker",
                         "set broker: in the inventory or $CATDOG_BROKER_URL")
        at = found.get("broker_at", "?")
        if found.get("broker") == "ok":
            return Check("broker", True, at)
        error = found.get("broker_error", "no answer")
        if "uthenticat" in error or "password" in error.lower():
            fix = "the broker URL's password is wrong: check the ${VAR} it comes from"
        elif at.startswith(("127.", "localhost", "[::1]", "::1")):
            fix = ("nothing answers there: is Redis running? (`fab launch` starts the embedded one)"
                   if session.device.is_local else
                   "the broker URL is loopback, which on the device is the device itself: use "
                   "the coordinator's LAN address (or an SSH tunnel)")
        else:
            fix = (f"Redis at {at} must accept connections from {session.device.host}: bind it to "
                   f"the LAN address, require a password, open port {at.rsplit(':', 1)[-1]}")
        return Check("broker", False, error, fix)


def not_run(names: Sequence[str], why: str) -> list[Check]:
    return [Check(n, None, f"not run ({why})") for n in names]


def host_key_check(device: Device) -> Check:
    """Is there a key for the device in the known_hosts the connection will use?"""
    from paramiko import HostKeys

    path = known_hosts_path(device)
    name = device.host if device.port == 22 else f"[{device.host}]:{device.port}"
    keyscan = (f"check the device's key, then: ssh-keyscan -p {device.port} {device.host} "
               f">> {path}")
    try:
        keys = HostKeys(str(path)) if path.exists() else HostKeys()
    except (OSError, ValueError) as exc:
        return Check("host_key", False, f"cannot read {path}: {exc}", keyscan)
    if keys.lookup(name) is None:
        return Check("host_key", False, f"no key for {name} in {path}", keyscan)
    return Check("host_key", True, f"known in {path.name}")


def python_check(session: WorkerSession, inventory: Inventory, found: dict[str, Any]) -> Check:
    device = session.device
    where = f"devices.{device.name}.python in {inventory.path.name}"
    if found.get("missing"):
        fix = (f"fab deploy --devices {device.name} creates it" if venv_of(session.python)
               else f"install Python >= 3.10 there, or fix {where}")
        return Check("python", False, f"{session.python} not found", fix)
    if "python" not in found:
        return Check("python", False, f"{session.python} fails: {found.get('error')}",
                     f"fix {where}")
    if tuple(found["python"][:2]) < MIN_PYTHON:
        return Check("python", False, f"{version_text(found)} is older than 3.10",
                     f"install Python >= 3.10 and point {where} at it")
    return Check("python", True, version_text(found))


def sftp_check(session: WorkerSession) -> Check:
    """Files reach the device over SFTP, or over the SSH channel when its sshd offers no SFTP
    (that is fine, as long as the device's shell has the few commands it needs)."""
    way = session.host.transfer()
    if way != "ssh":
        return Check("sftp", True, "offered" if way == "sftp" else way)
    missing = session.host.missing_tools()
    if missing:
        return Check("sftp", False, f"not offered, and the shell lacks {', '.join(missing)} to "
                                    f"copy files over the SSH channel", SFTP_FIX)
    return Check("sftp", True, "none, via SSH")


def tmux_check(session: WorkerSession) -> Check:
    done = session.host.shell("tmux -V")
    if done.status != 0:
        return Check("tmux", False, "not found on the PATH of a non-login shell",
                     "sudo apt install tmux")
    return Check("tmux", True, done.stdout.strip().removeprefix("tmux "))


def clock_check(session: WorkerSession) -> Check:
    """The device clock minus the coordinator's, measured across one round trip."""
    before = time.time()
    done = session.host.shell("date +%s.%N")
    after = time.time()
    try:
        device_time = float(done.stdout.strip())
    except ValueError:
        return Check("clock", False, f"could not read the clock: {done.stdout.strip()!r}",
                     "a `date` that supports +%s.%N (GNU coreutils)")
    skew = device_time - (before + after) / 2
    detail = f"{skew:+.2f}s (+-{(after - before) / 2:.2f}s)"
    if abs(skew) > MAX_SKEW_S + (after - before) / 2:
        return Check("clock", False, f"{detail} off the coordinator",
                     "sync clocks (schedules, windows and ETAs use them): "
                     "sudo timedatectl set-ntp true")
    return Check("clock", True, detail)
