"""``fab enable`` / ``fab disable``: a systemd unit on each device that starts its worker at boot.

The unit ``catdog-<device>.service`` runs :mod:`workers.autostart` (the device side needs no
Fabric) with a spec this module writes beside the device's run files: the very tmux command
``fab launch`` runs (session ``catdog-<device>`` on the inventory's socket, its owner record, its
log pipe) and the worker's command reading the same mode-600 env file and inventory copy. The unit
starts after the network is up (``network-online.target``), is ready once the worker's heartbeat
is fresh in Redis (``Type=notify``) and is started again a few seconds after the worker dies
(``Restart=on-failure``); a worker stopped on purpose (``fab stop``) stays stopped until the next
boot. ``KillMode=process``: stopping the unit never kills the worker (``fab stop`` does).

Where the device's commands run as root it is a system unit (``/etc/systemd/system``,
``multi-user.target``); for any other user a user unit (``~/.config/systemd/user``,
``default.target``) with lingering on (``loginctl enable-linger``), so it starts at boot without a
login. ``host: local`` devices are units on the coordinator, by the same rule. ``fab enable``
starts the unit at once (a worker ``fab launch`` started is adopted, not started twice) and
records it in Redis (:data:`catdog.records.AUTOSTART_KEY`), which ``fab status`` reads.

A device without a running systemd is refused before anything is written anywhere, in one line
naming the fix.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from catdog import broker
from catdog.errors import CatDogError
from catdog.inventory import Device, Inventory
from catdog.records import AUTOSTART_KEY, Heartbeat, heartbeat_key
from ops import ownership
from ops.fanout import EventCallback, on_each, parallel, quiet
from ops.logfile import rotating_append
from ops.remote import Unreachable
from ops.results import DISABLED, ENABLED, FAILED, NOT_ENABLED, DeviceResult
from ops.session import WorkerSession, run_env, session_name, worker_session

RESTART_S = 3
JOURNAL_LINES = 20
SYSTEM, USER = "system", "user"


class NoSystemd(CatDogError):
    """``fab enable`` on a device where no systemd runs (nothing was written anywhere)."""

    exit_status = 2


def unit_name(name: str) -> str:
    """The unit of a device's worker or a coordinator service: ``catdog-<name>.service``."""
    return f"{session_name(name)}.service"


def spec_path(session: WorkerSession) -> str:
    return f"{session.state_dir}/run/{session.device.name}.autostart.json"


@dataclass(frozen=True)
class Place:
    """Where a device's unit goes, from one look at the device (:func:`probe_command`)."""

    uid: int
    user: str
    home: str
    #: the SSH session's ``$TMUX_TMPDIR`` (the unit's tmux must find the same sockets)
    tmux_tmpdir: str
    #: the device's python, resolved to a full path ("" when it is missing)
    python: str
    systemd: bool

    @property
    def scope(self) -> str:
        return SYSTEM if self.uid == 0 else USER

    @property
    def unit_dir(self) -> str:
        return "/etc/systemd/system" if self.scope == SYSTEM else \
            f"{self.home}/.config/systemd/user"

    @property
    def target(self) -> str:
        return "multi-user.target" if self.scope == SYSTEM else "default.target"

    def systemctl(self, *args: str) -> str:
        """A ``systemctl`` shell command for this scope (user: its own manager's socket)."""
        if self.scope == SYSTEM:
            return shlex.join(["systemctl", *args])
        return (f"XDG_RUNTIME_DIR=/run/user/{self.uid} "
                + shlex.join(["systemctl", "--user", *args]))

    def describe(self, name: str) -> str:
        return (f"{unit_name(name)} (system unit, runs as root)" if self.scope == SYSTEM else
                f"{unit_name(name)} (user unit of {self.user}, lingering on)")


def probe_command(python: str) -> str:
    """One shell command saying who runs there, whether systemd is the init, and the python."""
    return ("printf 'uid=%s\\nuser=%s\\nhome=%s\\ntmux_tmpdir=%s\\n' \"$(id -u)\" \"$(id -un)\" "
            "\"$HOME\" \"${TMUX_TMPDIR:-}\"; "
            f"printf 'python=%s\\n' \"$(command -v {shlex.quote(python)} 2>/dev/null)\"; "
            "[ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 "
            "&& echo systemd=yes; true")


def parse_probe(output: str) -> Place:
    found = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    return Place(int(found.get("uid") or -1), found.get("user", ""), found.get("home", ""),
                 found.get("tmux_tmpdir", ""), found.get("python", ""),
                 found.get("systemd") == "yes")


def probe(session: WorkerSession) -> Place:
    return parse_probe(session.host.shell(probe_command(session.python)).stdout)


def no_systemd_line(names: Sequence[str]) -> str:
    listed = ", ".join(names)
    return (f"fab enable: no systemd runs on {listed} (no /run/systemd/system or systemctl "
            f"there), nothing was enabled: leave {'it' if len(names) == 1 else 'them'} out "
            f"with --devices and start {'its worker' if len(names) == 1 else 'their workers'} "
            f"with `fab launch` after a boot")


def linger_fix(user: str) -> str:
    return (f"lingering is off for {user} and {user} may not turn it on: run `sudo loginctl "
            f"enable-linger {user}` on the device once, then `fab enable` again")


def systemd_quote(arg: str) -> str:
    """One ``ExecStart=`` word: ``%`` and ``$`` doubled, quoted when it holds spaces or quotes."""
    text = arg.replace("%", "%%").replace("$", "$$")
    if text and not any(c in text for c in " \t\"'\\;"):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(description: str, argv: Sequence[str], workdir: str, place: Place, *,
                notify: bool = True, environment: dict[str, str] | None = None,
                after: Sequence[str] = ()) -> str:
    """The text of a unit that runs ``argv`` in ``workdir`` at boot and again when it fails
    (``after``: units it needs started first, such as the embedded Redis)."""
    env = {**({"HOME": place.home} if place.home else {}),
           **({"TMUX_TMPDIR": place.tmux_tmpdir} if place.tmux_tmpdir else {}),
           **(environment or {})}
    lines = [
        "# written by `fab enable` (CatDog); `fab disable` removes it",
        "[Unit]", f"Description={description}",
        f"Wants={' '.join(['network-online.target', *after])}",
        f"After={' '.join(['network-online.target', *after])}",
        "StartLimitIntervalSec=0", "",
        "[Service]",
        f"Type={'notify' if notify else 'simple'}",
        *(["NotifyAccess=main", "TimeoutStartSec=infinity"] if notify else []),
        f"ExecStart={' '.join(systemd_quote(a) for a in argv)}",
        f"WorkingDirectory={systemd_quote(workdir)}",
        *(f"Environment={systemd_quote(f'{k}={v}')}" for k, v in env.items()),
        "Restart=on-failure", f"RestartSec={RESTART_S}",
        # 2: the session is another inventory's (restarting cannot help)
        "RestartPreventExitStatus=2",
        # stopping the unit (fab disable) leaves the worker to `fab stop`
        "KillMode=process", "",
        "[Install]", f"WantedBy={place.target}", "",
    ]
    return "\n".join(lines)


def worker_spec(inventory: Inventory, session: WorkerSession, command: list[str],
                env_file: str) -> dict[str, object]:
    """What :mod:`workers.autostart` runs: ``fab launch``'s own tmux commands."""
    tmux, name = session.tmux, session.name
    return {
        "device": session.device.name, "session": name, "env_file": env_file,
        "owner": ownership.record(inventory),
        "start": tmux.new_session_argv(name, command, session.workdir,
                                       pipe=rotating_append(session.log_path),
                                       owner=ownership.record(inventory)),
        "query": tmux.pane_query(name), "kill": tmux.kill_argv(name),
    }


def check_systemd(inventory: Inventory, devices: Sequence[Device]) -> None:
    """Refuse (before anything is written or started) when a reachable device has no systemd."""

    def look(device: Device) -> Place | None:
        try:
            with worker_session(inventory, device) as session:
                return probe(session)
        except Unreachable:
            return None  # said in its row by enable

    places = parallel(devices, look)
    lacking = [d.name for d, p in zip(devices, places, strict=True)
               if p is not None and not p.systemd]
    if lacking:
        raise NoSystemd(no_systemd_line(lacking))


class Autostart:
    def __init__(self, inventory: Inventory, broker_url: str, *, timeout: float = 30.0,
                 on_event: EventCallback | None = None) -> None:
        self.inventory = inventory
        self.broker_url = broker_url
        self.timeout = timeout
        self.on_event = on_event or quiet
        self.redis = broker.connect(broker_url)

    def enable(self, devices: Sequence[Device]) -> list[DeviceResult]:
        """Install and start each device's unit (:func:`check_systemd` first, as ``fab enable``
        does before its broker starts)."""
        return on_each(self.inventory, devices, self._enable, self.on_event)

    def disable(self, devices: Sequence[Device]) -> list[DeviceResult]:
        return on_each(self.inventory, devices, self._disable, self.on_event)

    def _enable(self, session: WorkerSession, started: float) -> DeviceResult:
        from ops.launch import worker_command

        device = session.device
        place = probe(session)
        pane, _ = session.prepare()
        if clash := session.clash(pane):
            return DeviceResult(device.name, FAILED, clash)
        if not place.python:
            return DeviceResult(device.name, FAILED,
                                f"python {session.python} not found on {device.name}; fix "
                                f"devices.{device.name}.python in {self.inventory.path.name}"
                                + ("" if device.is_local else " or run `fab deploy`"))
        from ops.lan_broker import device_url

        # as `fab launch` does: the device's own broker user on a LAN fleet (and its CA)
        url = device_url(self.inventory, session, self.broker_url)
        env_file, inventory = session.install_run_files(run_env(self.inventory, url),
                                                        self.inventory.text)
        command = worker_command(session, env_file, inventory, python=place.python)
        spec = spec_path(session)
        session.host.write_private(spec, json.dumps(
            worker_spec(self.inventory, session, command, env_file), indent=1) + "\n")
        unit = unit_name(device.name)
        session.host.write_private(f"{place.unit_dir}/{unit}", render_unit(
            f"CatDog worker of device {device.name} ({self.inventory.path.name})",
            [place.python, "-m", "workers.autostart", spec], session.workdir, place))
        self.on_event(device.name, "enabling", place.describe(device.name))
        done = session.host.shell(self._activate(place, unit))
        if done.status == 3:
            return DeviceResult(device.name, FAILED, f"{device.name}: {done.stderr.strip()}")
        if done.status != 0:
            return DeviceResult(device.name, FAILED,
                                f"systemctl could not enable {unit}: "
                                f"{(done.stderr or done.stdout).strip()}")
        self.redis.hset(AUTOSTART_KEY, device.name, json.dumps(
            {"unit": unit, "scope": place.scope, "user": place.user, "at": time.time()}))
        nodename = self._answer(device.name, started)
        if nodename is None:
            journal = session.host.shell(f"{place.systemctl('status', '--no-pager', unit)}; "
                                         f"journalctl -n {JOURNAL_LINES} --no-pager "
                                         f"{'-u' if place.scope == SYSTEM else '--user-unit'} "
                                         f"{unit} 2>&1")
            return DeviceResult(device.name, FAILED,
                                f"{unit} is enabled, but the worker did not answer within "
                                f"{self.timeout:g}s (see its journal below)",
                                output=journal.stdout.splitlines()[-JOURNAL_LINES:])
        return DeviceResult(device.name, ENABLED, f"{place.describe(device.name)}; {nodename} "
                            f"answers", nodename=nodename)

    def _activate(self, place: Place, unit: str) -> str:
        # restarted, not only started: a unit already running picks up the new spec (its
        # starter adopts the running worker)
        start = (f"{place.systemctl('daemon-reload')} && {place.systemctl('enable', unit)} && "
                 f"{place.systemctl('restart', '--no-block', unit)}")
        if place.scope == SYSTEM:
            return start
        user = shlex.quote(place.user)
        # lingering starts the user's manager now and at every boot (logind may refuse a user
        # turning it on for themselves: then sudo, if allowed without a password); wait for the
        # manager's socket
        return (f"[ -e /var/lib/systemd/linger/{user} ] || loginctl enable-linger {user} "
                f"2>/dev/null || sudo -n loginctl enable-linger {user} 2>/dev/null || "
                f"{{ echo {shlex.quote(linger_fix(place.user))} >&2; exit 3; }}; "
                f"for i in $(seq 100); do [ -S /run/user/{place.uid}/systemd/private ] && break; "
                f"sleep 0.1; done; {start}")

    def _answer(self, device: str, started: float) -> str | None:
        """The worker's node name once its heartbeat is fresh (None after the timeout)."""
        deadline = started + self.timeout
        while time.monotonic() < deadline:
            try:
                raw = self.redis.get(heartbeat_key(device))
            except redis.RedisError:
                raw = None
            if raw:
                beat = Heartbeat.loads(raw)
                if beat.is_fresh(time.time()):
                    return beat.nodename
            time.sleep(0.2)
        return None

    def _disable(self, session: WorkerSession, started: float) -> DeviceResult:
        device = session.device
        place = probe(session)
        unit = unit_name(device.name)
        path = shlex.quote(f"{place.unit_dir}/{unit}")
        stop = (f"{place.systemctl('disable', '--now', unit)} >/dev/null 2>&1; "
                f"{place.systemctl('daemon-reload')}; " if place.systemd else "")
        done = session.host.shell(
            f"if [ -e {path} ]; then echo had=yes; fi; {stop}rm -f {path} "
            f"{shlex.quote(spec_path(session))}; [ ! -e {path} ] && echo gone=yes")
        self.redis.hdel(AUTOSTART_KEY, device.name)
        if "gone=yes" not in done.stdout:
            return DeviceResult(device.name, FAILED, f"could not remove {path}: "
                                                     f"{done.stderr.strip()}")
        if "had=yes" not in done.stdout:
            return DeviceResult(device.name, NOT_ENABLED, f"no {unit} on {device.name}")
        pane = session.pane()
        running = pane is not None and not pane.dead
        return DeviceResult(device.name, DISABLED, f"{unit} removed"
                            + ("; the worker keeps running until `fab stop`" if running else ""))


def enabled_devices(client: redis.Redis) -> set[str]:
    """The devices ``fab enable`` recorded (one Redis call)."""
    return {k.decode() if isinstance(k, bytes) else str(k) for k in client.hkeys(AUTOSTART_KEY)}
