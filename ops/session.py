"""A device's worker session: tmux session ``catdog-<device>`` on the device, reached locally or
over SSH, with the run files the worker reads (its env file and a copy of the inventory)."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from catdog.inventory import Device, Inventory
from ops import device_probe, ownership
from ops.logfile import rotating_append
from ops.remote import Host, open_host
from ops.tmux import Pane, Tmux, parse_pane

SESSION_PREFIX = "catdog-"
STATE_DIR = ".catdog"  # under an SSH device's workdir: run files and logs
RELEASES = "releases"  # under an SSH device's .catdog: the releases side by side (ops.releases)


def session_name(name: str) -> str:
    """The tmux session of a device's worker, or of a coordinator service (``beat``, ``flower``):
    ``catdog-<name>``. The one place the name is built (a device may not be named like a service)."""
    return f"{SESSION_PREFIX}{name}"


def referenced_variables(inventory: Inventory, environ: dict[str, str] | None = None
                         ) -> dict[str, str]:
    """The ``${VAR}``s the inventory uses, with the coordinator's values (for the device's env file):
    those its loader expanded (:attr:`Inventory.variables`), not the file read again."""
    environ = dict(os.environ) if environ is None else environ
    return {n: environ[n] for n in sorted(inventory.variables) if n in environ}


def run_env(inventory: Inventory, broker_url: str) -> str:
    """The env file of a fleet process (worker or scheduler): the broker URL and the ``${VAR}``s
    the inventory uses, as ``VAR=value`` lines (kept in a mode-600 file, never on a command line)."""
    env = f"CATDOG_BROKER_URL={broker_url}\nPYTHONUNBUFFERED=1\n"
    return env + "".join(f"{k}={v}\n" for k, v in referenced_variables(inventory).items())


class WorkerSession:
    def __init__(self, inventory: Inventory, device: Device, host: Host) -> None:
        self.inventory = inventory
        self.device = device
        self.host = host
        self.name = session_name(device.name)
        self.tmux = Tmux(inventory.tmux_socket, runner=host)
        self._home: str | None = None
        #: the release ``current`` points at (read by :meth:`prepare`), None: no release
        self.release: str | None = None

    @property
    def python(self) -> str:
        return self.device.python or (sys.executable if self.device.is_local else "python3")

    @property
    def home(self) -> str:
        if self._home is None:
            self._home = self.host.shell('printf %s "$HOME"').stdout.strip() or "/tmp"
        return self._home

    @property
    def workdir(self) -> str:
        if self.device.workdir:
            return self.device.workdir
        return str(self.inventory.root) if self.device.is_local else self.home

    def prepare(self) -> tuple[Pane | None, bool]:
        """In one round trip: the session's pane, whether the device's python is there, the
        release ``current`` points at (:attr:`release`, SSH devices), and the run and log folders
        made (run files private)."""
        run_dir, log_dir = (shlex.quote(f"{self.state_dir}/{d}") for d in ("run", "logs"))
        releases = shlex.quote(f"{self.state_dir}/{RELEASES}")
        release = ("" if self.device.is_local else
                   f"r=$(readlink {releases}/current 2>/dev/null) && "
                   f"[ -f {releases}/\"$r\"/release.json ] && [ -x {releases}/\"$r\"/bin/python ] "
                   f"&& printf 'release=%s\\n' \"${{r##*/}}\"; ")
        done = self.host.shell(
            f"printf 'pane=%s\\n' \"$({shlex.join(self.tmux.pane_query(self.name))} 2>/dev/null)\"; "
            f"command -v {shlex.quote(self.python)} >/dev/null && echo python=yes; {release}"
            f"umask 077; mkdir -p {run_dir} {log_dir} && chmod 700 {run_dir}")
        found = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
        self.release = found.get("release") or None
        return parse_pane(self.name, found.get("pane", "")), found.get("python") == "yes"

    @property
    def release_dir(self) -> str | None:
        """The folder of the release the worker starts from (None: the device's own python)."""
        return f"{self.state_dir}/{RELEASES}/{self.release}" if self.release else None

    @property
    def worker_python(self) -> str:
        """The worker's python: the current release's (its own resolved folder, so a later switch
        never changes a running worker), else the device's ``python``."""
        return f"{self.release_dir}/bin/python" if self.release_dir else self.python

    @property
    def project_dir(self) -> str:
        """Where the worker imports the project's task modules from: the current release's
        ``project/``, else ``workdir``."""
        return f"{self.release_dir}/project" if self.release_dir else self.workdir

    def probe(self, env_file: str = "-") -> dict[str, Any]:
        """What the device's python can do, from :mod:`ops.device_probe` run there, in ``workdir``.

        ``{"missing": True}`` when the python cannot be run; ``{"error": ...}`` when it fails.
        """
        source = Path(device_probe.__file__).read_text()
        done = self.host.shell(f"cd {shlex.quote(self.workdir)} 2>/dev/null; "
                               f"{shlex.quote(self.python)} -c {shlex.quote(source)} "
                               f"{shlex.quote(env_file)}")
        if done.status in (126, 127):
            return {"missing": True, "error": done.stderr.strip()}
        try:
            found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            return {"error": f"exit status {done.status}" + (f": {tail[0]}" if tail else "")}
        return found

    @property
    def state_dir(self) -> str:
        """``.catdog/`` of this device: beside the inventory (local) or in its workdir (SSH)."""
        if self.device.is_local:
            return str(self.inventory.state_dir)
        return f"{self.workdir}/{STATE_DIR}"

    @property
    def log_path(self) -> str:
        """The worker's output, appended by tmux on the device (``fab logs`` reads it)."""
        return f"{self.state_dir}/logs/{self.device.name}.log"

    def install_run_files(self, env: str, inventory_text: str) -> tuple[str, str]:
        """Write the env file (mode 600) and, on SSH devices, the inventory; return their paths."""
        run_dir = f"{self.state_dir}/run"
        inventory = str(self.inventory.path)
        if not self.device.is_local:
            inventory = f"{run_dir}/{self.device.name}.yaml"
            self.host.write_private(inventory, inventory_text)
        env_file = f"{run_dir}/{self.device.name}.env"
        self.host.write_private(env_file, env)
        return env_file, inventory

    def pane(self) -> Pane | None:
        return self.tmux.pane(self.name)

    def clash(self, pane: Pane | None) -> str | None:
        """Why this inventory must leave the session alone (another inventory started it), in
        words naming that inventory and the fix; None when it is this inventory's or absent."""
        if pane is None:
            return None
        why = ownership.clash(self.inventory, self.tmux, self.name, pane, self.device.is_local)
        return f"device {self.device.name}: {why}" if why else None

    def start(self, command: list[str]) -> bool:
        return self.tmux.new_session(self.name, command, self.workdir,
                                     pipe=rotating_append(self.log_path),
                                     owner=ownership.record(self.inventory))

    def kill(self) -> bool:
        return self.tmux.kill_session(self.name)

    def dead_status(self) -> int | None:
        return self.tmux.dead_status(self.name, wait_s=1.0)

    def last_lines(self, lines: int) -> list[str]:
        return self.tmux.last_lines(self.name, lines)

    def signal(self, pid: int, signame: str, group: bool = False) -> None:
        """Send a signal to the worker (``group``: its whole process group, pool included)."""
        if pid <= 1:
            return
        target = f"-- -{pid}" if group else str(pid)
        self.host.shell(f"kill -{signame} {target} 2>/dev/null || kill -{signame} {pid}")


@contextlib.contextmanager
def worker_session(inventory: Inventory, device: Device) -> Iterator[WorkerSession]:
    host = open_host(device)
    try:
        yield WorkerSession(inventory, device, host)
    finally:
        host.close()
