"""Releases side by side on an SSH device: ``<workdir>/.catdog/releases/<id>/``, one per release.

A release is a virtual environment of its own (``bin/python``, made with the device's Python and
``--without-pip``) holding CatDog itself (the wheel, installed ``--no-deps``) and the project's task
modules (``project/``), plus a copy of the inventory (``inventory.yaml``, mode 600) for the import
check. It shares the device venv's packages (Celery, the Redis client, PyYAML: what ``fab deploy``
installs there) through a ``.pth`` file (``site.addsitedir`` of the venv's site-packages, after
the release's own, so the release's CatDog is the one imported), so a release costs a venv
(~0.2 s) and one small pip install, not a download of Celery. ``release.json``
(:mod:`catdog.release`) is written last, once the release imports cleanly: a folder without it
is an interrupted install, never switched to, removed by the next deploy.

``current`` is a symlink to the release the device's worker starts from, replaced in one rename
(an interrupted switch leaves the old link); the launcher reads it (:mod:`ops.session`). The
release id is a hash of CatDog's sources and the project's task modules (:func:`release_id`), so
deploying the same code twice is one release. Older releases are kept for ``fab rollback`` until a
deploy prunes all but the newest ``--keep`` (the current one always stays).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from catdog.release import RECORD
from ops.remote import Unreachable
from ops.results import DeviceResult
from ops.session import RELEASES, WorkerSession
from ops.taskfiles import RECORD as TASKS_RECORD
from ops.taskfiles import inside

CURRENT = "current"
PROJECT = "project"
INVENTORY = "inventory.yaml"
CHECK_ENV = "check.env"
BASE_PTH = "catdog-base.pth"
DEFAULT_KEEP = 2
VENV_TIMEOUT_S = 300.0
PIP_TIMEOUT_S = 900.0
CHECK_TIMEOUT_S = 120.0
PURELIB = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
#: the release's ``.pth``: the device venv's packages, their own ``.pth`` files processed too
BASE_SITE = ("import sysconfig; p = sysconfig.get_paths()['purelib']; "
             "print('import site; site.addsitedir(%r)' % p)")
#: switches ``current`` in one rename (``mv -T`` is not in every busybox); argv: folder, target
SWITCH = ("import os, sys; d, t = sys.argv[1:3]; n = os.path.join(d, '.current-new'); "
          "os.path.lexists(n) and os.remove(n); os.symlink(t, n); "
          "os.replace(n, os.path.join(d, 'current'))")


class ReleaseFailed(Exception):
    """Installing, checking or switching a release on one device failed; the message says why."""

    def __init__(self, reason: str, output: str = "") -> None:
        super().__init__(reason)
        self.output = output.strip().splitlines()[-15:]


@dataclass
class ReleaseResult(DeviceResult):
    """A device's row of ``fab deploy`` / ``fab rollback``: the release it was on and is on now."""

    previous_release: str | None = None
    release: str | None = None


def release_id(fingerprint: str, task_hashes: Mapping[str, str], imports: tuple[str, ...] = ()
               ) -> str:
    """The id of a release: CatDog's sources, the project's task modules and ``imports:``.

    >>> release_id("ab" * 32, {"tasks.py": "cd" * 32}) == release_id("ab" * 32, {"tasks.py": "cd" * 32})
    True
    """
    digest = hashlib.sha256(fingerprint.encode() + b"\0")
    digest.update(json.dumps(dict(sorted(task_hashes.items())), sort_keys=True).encode())
    digest.update(json.dumps(list(imports)).encode())
    return digest.hexdigest()[:12]


@dataclass
class Releases:
    """What a device holds: the current release, each whole release's record, the partial ones."""

    current: str | None = None
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    partial: list[str] = field(default_factory=list)

    def newest_first(self) -> list[str]:
        return sorted(self.records, key=lambda r: float(self.records[r].get("installed_at", 0)),
                      reverse=True)

    def previous(self) -> str | None:
        """The release to go back to: the newest installed before the current one."""
        if self.current not in self.records:
            return None
        when = float(self.records[self.current].get("installed_at", 0))
        older = [r for r in self.newest_first()
                 if r != self.current and float(self.records[r].get("installed_at", 0)) <= when]
        return older[0] if older else None

    def to_prune(self, keep: int, also_keep: tuple[str, ...] = ()) -> list[str]:
        """Whole releases beyond the newest ``keep`` (never the current one or ``also_keep``)."""
        kept = set(self.newest_first()[:keep]) | {self.current, *also_keep}
        return [r for r in self.newest_first() if r not in kept]


def folder(session: WorkerSession) -> str:
    return f"{session.state_dir}/{RELEASES}"


def listing(session: WorkerSession) -> Releases:
    """The device's releases, in one round trip."""
    where = shlex.quote(folder(session))
    done = session.host.shell(
        f"[ -d {where} ] || exit 0; cd {where} || exit 1; "
        f"printf 'current\\t%s\\n' \"$(readlink {CURRENT} 2>/dev/null)\"; "
        f"for r in */; do r=${{r%/}}; [ \"$r\" = {CURRENT} ] && continue; [ -d \"$r\" ] || continue; "
        f"if [ -f \"$r/{RECORD}\" ]; then printf 'record\\t%s\\t' \"$r\"; "
        f"tr -d '\\n' < \"$r/{RECORD}\"; echo; else printf 'partial\\t%s\\n' \"$r\"; fi; done")
    found = Releases()
    for line in done.stdout.splitlines():
        kind, _, rest = line.partition("\t")
        if kind == "current":
            found.current = posixpath.basename(rest.strip().rstrip("/")) or None
        elif kind == "partial":
            found.partial.append(rest.strip())
        elif kind == "record":
            name, _, text = rest.partition("\t")
            try:
                found.records[name] = json.loads(text)
            except ValueError:
                found.partial.append(name)
    if found.current not in found.records:
        found.current = None  # a link to nothing whole: the worker starts from the device's python
    return found


def _run(session: WorkerSession, command: str, what: str, timeout: float = 60.0) -> str:
    try:
        done = session.host.shell(command, timeout=timeout)
    except Unreachable as exc:  # the link went down under it: the step's name says where
        raise ReleaseFailed(f"{what} on {session.device.name} was cut off: {exc}") from exc
    if done.status != 0:
        raise ReleaseFailed(f"{what} on {session.device.name} failed (exit {done.status})",
                            done.stdout + done.stderr)
    return done.stdout


def install(session: WorkerSession, release: str, *, wheel: str, task_files: Mapping[str, Path],
            task_hashes: Mapping[str, str], meta: dict[str, Any], inventory_text: str,
            check_env: str) -> None:
    """Install ``release`` beside the others (not switched to): venv, CatDog from the device's
    copy of the ``wheel``, the task modules, then a clean import of every task module."""
    q = shlex.quote
    base, where = session.python, f"{folder(session)}/{release}"
    python = f"{where}/bin/python"
    _run(session, f"rm -rf {q(where)} && mkdir -p {q(folder(session))} && "
                  f"{q(base)} -m venv --without-pip {q(where)}", "creating the release's venv",
         VENV_TIMEOUT_S)
    _run(session, f"site=$({q(python)} -c {q(PURELIB)}) && "
                  f"{q(base)} -c {q(BASE_SITE)} > \"$site/{BASE_PTH}\"",
         "linking the device venv's packages")
    # --no-compile: the import check below writes the byte-code the worker needs (pip's own
    # compile step once failed here under load: "assert os.path.exists(pyc_path)")
    _run(session, f"{q(python)} -m pip install --disable-pip-version-check --quiet --no-deps "
                  f"--no-compile --ignore-installed {q(wheel)}",
         "pip install of CatDog into the release", PIP_TIMEOUT_S)
    project = f"{where}/{PROJECT}"
    folders = sorted({posixpath.dirname(f"{project}/{n}") for n in task_files} | {project})
    _run(session, f"mkdir -p {shlex.join(folders)}", "making the release's project folder")
    for name, local in task_files.items():
        session.host.upload(local, f"{project}/{name}")
    session.host.write_private(f"{where}/{INVENTORY}", inventory_text)
    check_imports(session, release, check_env)
    record = {**meta, "id": release, "tasks": dict(task_hashes), "installed_at": time.time()}
    session.host.write_text(f"{where}/{RECORD}", json.dumps(record, indent=1))


def check_imports(session: WorkerSession, release: str, check_env: str) -> None:
    """Import every task module with the release's python, as its worker will (in a fresh
    process, :mod:`catdog.taskmodules`); a failure is :class:`ReleaseFailed` with the reason."""
    q = shlex.quote
    where = f"{folder(session)}/{release}"
    env = f"{where}/{CHECK_ENV}"
    session.host.write_private(env, check_env)
    done = session.host.shell(
        f"cd {q(where)}/{PROJECT} && {q(where)}/bin/python -m catdog.taskmodules --inventory "
        f"{q(where)}/{INVENTORY} --project {q(where)}/{PROJECT} --env-file {q(env)}; "
        f"s=$?; rm -f {q(env)}; exit $s", timeout=CHECK_TIMEOUT_S)
    lines = done.stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1]) if lines else {}
    except ValueError:
        report = {}
    if done.status == 0 and "tasks" in report:
        return
    why = report.get("error") or ((done.stderr or done.stdout).strip().splitlines() or ["?"])[-1]
    raise ReleaseFailed(f"release {release} does not import cleanly on {session.device.name}, "
                        f"so it was not switched to: {why}", done.stdout + done.stderr)


def switch(session: WorkerSession, release: str, *, keep: int | None = DEFAULT_KEEP) -> None:
    """Point ``current`` at ``release`` in one rename (the old link stays if this is cut), then
    remove what is no longer needed: task modules an older deploy copied into ``workdir``, and
    releases beyond the newest ``keep`` (None: none removed, as going back does)."""
    _run(session, f"{shlex.quote(session.python)} -c {shlex.quote(SWITCH)} "
                  f"{shlex.quote(folder(session))} {shlex.quote(release)}",
         f"switching to release {release}")
    remove_workdir_copies(session)
    if keep is not None:
        prune(session, listing(session), keep, (release,))


def workdir_record(session: WorkerSession) -> dict[str, Any]:
    """What a deploy before releases copied into ``workdir`` (``{path: sha256}``), or {}."""
    record = f"{session.state_dir}/{TASKS_RECORD}"
    try:
        before = json.loads(session.host.shell(f"cat {shlex.quote(record)} 2>/dev/null").stdout
                            or "{}")
    except ValueError:
        before = {}
    return before if isinstance(before, dict) else {}


def remove_workdir_copies(session: WorkerSession) -> None:
    """Remove the task modules an older deploy copied into ``workdir`` (each release now has its
    own), so that no stale module is imported from there."""
    before = [n for n in workdir_record(session) if inside(n)]
    if before:
        paths = [f"{session.workdir}/{n}" for n in before]
        session.host.shell(f"rm -f {shlex.join(paths)} "
                           f"{shlex.quote(f'{session.state_dir}/{TASKS_RECORD}')}")


def unswitch(session: WorkerSession) -> None:
    """Remove ``current``: the worker starts from the device's own python again (going back
    from a device's first release)."""
    _run(session, f"rm -f {shlex.quote(folder(session) + '/' + CURRENT)}", "removing current")


def prune(session: WorkerSession, found: Releases, keep: int, also_keep: tuple[str, ...] = ()
          ) -> list[str]:
    """Remove partial releases and whole ones beyond the newest ``keep``; the ones removed."""
    gone = found.to_prune(keep, also_keep) + [p for p in found.partial if p not in also_keep]
    if gone:
        paths = [f"{folder(session)}/{r}" for r in gone]
        _run(session, f"rm -rf {shlex.join(paths)}", "removing old releases")
    return gone
