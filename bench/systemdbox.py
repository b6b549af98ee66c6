"""A "device" that boots: a real systemd as PID 1 of its own PID, mount, UTS, IPC and cgroup
namespaces, inside a network namespace of :mod:`bench.lan` (its own address), with its sshd started
by that systemd. Killing it is a power cut; booting it again is a reboot.

Booted on the machine's own filesystem, systemd would clean the machine's real ``/tmp``,
``/var/tmp`` and ``/run`` (tmpfiles), start the machine's enabled services, set its hostname and
apply its sysctls. So, before systemd starts, inside the new mount namespace (every mount made
private first):

- fresh tmpfs on ``/tmp``, ``/var/tmp``, ``/run`` and ``/var/log/journal``, and a fresh sysfs and
  cgroup tree; the box first moves into a cgroup of its own in every hierarchy, and its cgroup
  namespace is rooted there, so the cgroups its systemd makes stay below (removed at power off);
- the box's own folders bound on ``/etc/systemd/system``, ``/etc/systemd/user`` and
  ``/var/lib/systemd`` (they survive its reboots, like a disk: units installed there stay);
- systemd reads units only from ``/etc/systemd/system`` (the box's) and a folder of the box holding
  links to the few units a boot needs (journald, dbus, logind, the user manager, the targets), plus
  the box's sshd: ``$SYSTEMD_UNIT_PATH``; no generator runs (``$SYSTEMD_GENERATOR_PATH`` empty).
  tmpfiles, sysusers, sysctl, udev, timesyncd, fsck and the machine's own services are simply not
  there to start (and masked in the box's ``/etc/systemd/system`` besides).

The boot script checks each guard before it ``exec``s systemd: a guard file the harness left in
the real ``/tmp``, ``/var/tmp`` and ``/run`` must be invisible there (else it stops, and nothing
boots). :func:`guard_files` are those files; a test checks a canary in the real ``/tmp`` survives.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.lan import Lan, LanHost

#: units (of /lib/systemd/system) a boot needs, linked into the box's unit folder
BOOT_UNITS = (
    "basic.target", "sysinit.target", "sockets.target", "timers.target", "paths.target",
    "slices.target", "local-fs.target", "local-fs-pre.target", "swap.target", "network.target",
    "network-pre.target", "network-online.target", "nss-lookup.target", "nss-user-lookup.target",
    "remote-fs.target", "remote-fs-pre.target", "time-set.target", "time-sync.target",
    "multi-user.target", "shutdown.target", "umount.target", "final.target", "reboot.target",
    "halt.target", "poweroff.target", "exit.target", "emergency.target", "rescue.target",
    "emergency.service", "rescue.service", "systemd-exit.service", "systemd-reboot.service",
    "systemd-poweroff.service", "systemd-halt.service",
    "systemd-journald.service", "systemd-journald.socket", "systemd-journald-dev-log.socket",
    "dbus.service", "dbus.socket", "systemd-logind.service", "systemd-user-sessions.service",
    "user.slice", "user-.slice.d", "user@.service", "user@.service.d", "user@0.service.d",
    "user-runtime-dir@.service",
)
#: what the boot starts, by the target that wants it
WANTS = {
    "sysinit.target": ("systemd-journald.service",),
    "sockets.target": ("systemd-journald.socket", "systemd-journald-dev-log.socket",
                       "dbus.socket"),
    "multi-user.target": ("dbus.service", "systemd-logind.service",
                          "systemd-user-sessions.service", "catdog-box-sshd.service"),
}
#: masked as well (a second guard, should systemd ever read /lib/systemd/system after all): what
#: would touch the machine (its files, clock, kernel settings, devices)
MASKED = (
    "systemd-tmpfiles-setup.service", "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-setup-dev-early.service", "systemd-tmpfiles-clean.service",
    "systemd-tmpfiles-clean.timer", "systemd-sysusers.service", "systemd-sysctl.service",
    "systemd-remount-fs.service", "systemd-timesyncd.service", "ldconfig.service",
    "systemd-firstboot.service", "systemd-machine-id-commit.service",
    "systemd-update-utmp.service", "systemd-update-utmp-runlevel.service",
    "systemd-binfmt.service", "systemd-modules-load.service", "systemd-udevd.service",
    "systemd-udev-trigger.service", "systemd-hwdb-update.service", "systemd-journal-flush.service",
    "systemd-random-seed.service", "systemd-update-done.service", "tmp.mount",
)
PRIVATE_TMPFS = ("/tmp", "/var/tmp", "/run")
SYSTEM_UNITS = Path("/lib/systemd/system")

ROOT = Path(__file__).resolve().parent.parent
BOOT_SCRIPT = r"""
set -eu
box=$1; cgroup=$2; keep=$3
# a cgroup of its own in every hierarchy (cpuset but needs cpus and mems: left), then a cgroup
# namespace rooted there: what its systemd creates stays below them, and they are removed after
: > "$box/cgroups"
while IFS=: read -r _ controllers path; do
  case "$controllers" in
    "") dir=/sys/fs/cgroup/unified;;
    cpuset) continue;;
    name=*) dir="/sys/fs/cgroup/${controllers#name=}";;
    *) dir="/sys/fs/cgroup/$controllers";;
  esac
  [ -f "$dir${path%/}/cgroup.procs" ] || continue
  mkdir "$dir${path%/}$cgroup"
  echo "$dir${path%/}$cgroup" >> "$box/cgroups"
  echo $$ > "$dir${path%/}$cgroup/cgroup.procs"
done < /proc/self/cgroup
exec unshare --cgroup /bin/sh -eu -c '
box=$1; keeps=$2
mount --make-rprivate /
# the folders the box keeps seeing, even under /tmp (its disk, the checkout and Python running
# it): held at a private staging point, then bound back over the fresh tmpfs
mount -t tmpfs -o mode=700 tmpfs /mnt
i=0; IFS=:
for k in $keeps; do i=$((i+1)); mkdir "/mnt/keep$i"; mount --no-canonicalize --bind "$k" "/mnt/keep$i"; done
unset IFS
for d in /tmp /var/tmp; do mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$d"; done
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
if [ -d /var/log/journal ]; then mount -t tmpfs -o mode=2755 tmpfs /var/log/journal; fi
i=0; IFS=:
for k in $keeps; do
  i=$((i+1))
  case "$k" in
    /tmp/*|/var/tmp/*|/run/*) mkdir -p "$k"; mount --no-canonicalize --bind "/mnt/keep$i" "$k";;
  esac
done
unset IFS
cd /
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup
mkdir /sys/fs/cgroup/systemd
mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
mount --bind "$box/etc-system" /etc/systemd/system
mount --bind "$box/etc-user" /etc/systemd/user
mount --bind "$box/var-lib-systemd" /var/lib/systemd
mount --bind "$box/hostname" /etc/hostname
if [ -f "$box/passwd" ]; then  # users of its own, their homes, and the machine'"'"'s Python reachable
  for f in passwd group shadow; do mount --bind "$box/$f" "/etc/$f"; done
  mount -t tmpfs -o mode=755 tmpfs /home
  for h in "$box"/homes/*; do mkdir "/home/${h##*/}"; mount --bind "$h" "/home/${h##*/}"; done
  cd /root  # root'"'"'s home opened (mode 755) with its entries bound back: a venv may live there
  mount -t tmpfs -o mode=755 tmpfs /root
  for e in $(ls -A .); do
    if [ -d "$e" ]; then mkdir "/root/$e"; else touch "/root/$e"; fi
    mount --no-canonicalize --bind "./$e" "/root/$e"
  done
  cd /
fi
# every guard must be hidden now: the machine'"'"'s own /tmp, /var/tmp and /run are out of reach
for g in $(cat "$box/guards"); do
  if [ -e "$g" ]; then echo "guard $g still visible: not booting" >&2; exit 97; fi
done
for d in /tmp /var/tmp /run; do
  mountpoint -q "$d" || { echo "$d is not private: not booting" >&2; exit 98; }
done
exec env -i container=docker PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  SYSTEMD_UNIT_PATH="/etc/systemd/system:$box/units" \
  SYSTEMD_GENERATOR_PATH="$box/empty" SYSTEMD_ENVIRONMENT_GENERATOR_PATH="$box/empty" \
  /usr/bin/systemd --system --log-target=console --show-status=no
' box "$box" "$keep"
"""


def kept_folders(folders: list[Path]) -> list[Path]:
    """``folders`` resolved, without those inside another (a bind of the outer one shows them)."""
    resolved = sorted({f.resolve() for f in folders}, key=lambda f: len(f.parts))
    kept: list[Path] = []
    for folder in resolved:
        if not any(folder.is_relative_to(k) for k in kept):
            kept.append(folder)
    return kept


class BootFailed(RuntimeError):
    """The box did not come up (its console log says why)."""


def guard_files(uid: str) -> list[Path]:
    """Files the harness puts in the machine's real /tmp, /var/tmp and /run before a boot; the
    boot script refuses to start systemd while it can see any of them."""
    return [Path(d) / f".catdog-box-guard-{uid}" for d in PRIVATE_TMPFS]


class SystemdBox:
    """A bootable device in network namespace ``namespace``; its sshd reads ``sshd_config``.

    ``folder`` holds the box's persistent state (its ``/etc/systemd/system``, its
    ``/var/lib/systemd``) and its console log; ``keep`` (a folder holding it) stays visible in
    the box even under the machine's ``/tmp``: everything else there is hidden."""

    def __init__(self, folder: Path, namespace: str, sshd_config: Path, hostname: str,
                 keep: Path | None = None, users: dict[str, str] | None = None) -> None:
        self.folder = folder
        #: the one folder of the machine's /tmp (or /var/tmp, /run) the box still sees: its
        #: "disk" (its folder, its sshd's keys, the devices' workdirs); default ``folder``
        self.keep = keep or folder
        #: what stays visible under the hidden folders: :attr:`keep`, and the checkout and the
        #: Python running this (a CI clone may itself live under /tmp)
        self.keeps = kept_folders([self.keep, ROOT, Path(sys.prefix)])
        self.namespace = namespace
        self.uid = uuid.uuid4().hex[:8]
        self.cgroup = f"/catdog-box-{self.uid}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.boots = 0
        for name in ("etc-system", "etc-user", "var-lib-systemd", "units", "empty"):
            (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / "hostname").write_text(hostname + "\n")
        self.users = dict(users or {})
        if self.users:
            self._add_users()
        self._write_units(self._sshd_config(sshd_config))

    def _add_users(self) -> None:
        """The box's own ``/etc/passwd``, ``group`` and ``shadow``: the machine's with these users
        added (uid 2000 on), each with a home in the box's folder (``/home/<user>`` inside)."""
        lines = {f: Path(f"/etc/{f}").read_text() for f in ("passwd", "group", "shadow")}
        for i, (user, authorized) in enumerate(self.users.items()):
            uid = 2000 + i
            lines["passwd"] += f"{user}:x:{uid}:{uid}::/home/{user}:/bin/sh\n"
            lines["group"] += f"{user}:x:{uid}:\n"
            lines["shadow"] += f"{user}:*:19000:0:99999:7:::\n"
            home = self.folder / "homes" / user
            (home / ".ssh").mkdir(parents=True, exist_ok=True)
            (home / ".ssh" / "authorized_keys").write_text(authorized)
            for path in (home, home / ".ssh", home / ".ssh" / "authorized_keys"):
                os.chown(path, uid, uid)
        for name, text in lines.items():
            (self.folder / name).write_text(text)
        (self.folder / "shadow").chmod(0o640)

    def user_id(self, user: str) -> int:
        return 2000 + list(self.users).index(user)

    def _sshd_config(self, given: Path) -> Path:
        """``given``, or for a box with users of its own a copy that also reads
        ``~/.ssh/authorized_keys`` and leaves ``$TMUX_TMPDIR`` alone (the box has its own /tmp)."""
        if not self.users:
            return given
        lines = []
        for line in given.read_text().splitlines():
            if line.startswith("AuthorizedKeysFile "):
                line = f"AuthorizedKeysFile .ssh/authorized_keys {line.split(None, 1)[1]}"
            if not line.startswith("SetEnv TMUX_TMPDIR"):
                lines.append(line)
        path = self.folder / "sshd_config"
        path.write_text("\n".join(lines) + "\n")
        return path

    def _write_units(self, sshd_config: Path) -> None:
        for name in MASKED:  # in the box's /etc/systemd/system, the first place systemd looks
            mask = self.folder / "etc-system" / name
            if not mask.is_symlink():
                mask.symlink_to("/dev/null")
        units = self.folder / "units"
        for name in BOOT_UNITS:
            link = units / name
            if (SYSTEM_UNITS / name).exists() and not link.is_symlink():
                link.symlink_to(SYSTEM_UNITS / name)
        if not (units / "default.target").is_symlink():
            (units / "default.target").symlink_to(units / "multi-user.target")  # an alias
        (units / "catdog-box-sshd.service").write_text(
            "[Unit]\nDescription=the box's OpenSSH server\nAfter=network.target\n\n"
            "[Service]\nRuntimeDirectory=sshd\nRuntimeDirectoryMode=0755\n"
            f"ExecStart=/usr/sbin/sshd -D -e -f {sshd_config}\nRestart=always\n")
        for target, wanted in WANTS.items():
            folder = units / f"{target}.wants"
            folder.mkdir(exist_ok=True)
            for name in wanted:
                if not (folder / name).is_symlink():
                    (folder / name).symlink_to(units / name)

    @property
    def pid(self) -> int:
        """The box's PID 1 (systemd) as the machine sees it."""
        if self.proc is None or self.proc.poll() is not None:
            raise BootFailed("the box is not running")
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        if not children:
            raise BootFailed("the box has no PID 1 yet")
        return int(children[0])

    def boot(self, timeout: float = 60.0) -> float:
        """Boot (the machine's /tmp, /var/tmp, /run out of reach first); return the seconds until
        systemd says the system is up (``running`` or ``degraded``)."""
        if self.proc is not None and self.proc.poll() is None:
            raise BootFailed("the box is already running")
        guards = guard_files(self.uid)
        for guard in guards:
            guard.write_text("a box booting now must not see this file\n")
        (self.folder / "guards").write_text("\n".join(str(g) for g in guards) + "\n")
        started = time.monotonic()
        self.boots += 1
        try:
            with open(self.folder / "console.log", "ab") as log:
                log.write(f"--- boot {self.boots}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    ["nsenter", f"--net=/run/netns/{self.namespace}", "--",
                     "unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--mount-proc",
                     "--propagation", "private", "--kill-child",
                     "/bin/sh", "-c", BOOT_SCRIPT, "boot", str(self.folder), self.cgroup,
                     ":".join(str(k) for k in self.keeps)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True)
            self._wait_up(started + timeout)
        finally:
            for guard in guards:
                guard.unlink(missing_ok=True)
        return time.monotonic() - started

    def _wait_up(self, deadline: float) -> None:
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise BootFailed(f"the box stopped while booting: {self.console_tail()}")
            with contextlib.suppress(BootFailed, OSError):
                state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
                if state in ("running", "degraded"):
                    return
            if time.monotonic() > deadline:
                raise BootFailed(f"the box is not up in time (state {state!r}): "
                                 f"{self.console_tail()}")
            time.sleep(0.2)

    def run(self, *argv: str, check: bool = True, timeout: float = 30.0
            ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the box (its namespaces, as its services see them)."""
        done = subprocess.run(
            ["nsenter", "-t", str(self.pid), "-m", "-p", "-u", "-i", "-n", "-C", "--", *argv],
            capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise BootFailed(f"{shlex.join(argv)} in the box: exit {done.returncode}: "
                             f"{(done.stderr or done.stdout).strip()}")
        return done

    def power_off(self) -> None:
        """A power cut: every process of the box dies at once (SIGKILL to its PID 1)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(BootFailed, ProcessLookupError, OSError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None
        self._drop_cgroups()

    def reboot(self, timeout: float = 60.0) -> float:
        """Power cut, then boot again; the seconds the boot took."""
        self.power_off()
        return self.boot(timeout)

    def _drop_cgroups(self) -> None:
        """Remove the box's cgroups, in every hierarchy (empty once every process is gone)."""
        listed = self.folder / "cgroups"
        roots = [Path(p) for p in listed.read_text().split()] if listed.exists() else []
        deadline = time.monotonic() + 10
        while (left := [r for r in roots if r.exists()]) and time.monotonic() < deadline:
            for root in left:
                for folder in sorted((p for p in root.rglob("*") if p.is_dir()),
                                     key=lambda p: len(p.parts), reverse=True):
                    with contextlib.suppress(OSError):
                        folder.rmdir()
                with contextlib.suppress(OSError):
                    root.rmdir()
            if [r for r in roots if r.exists()]:
                time.sleep(0.1)

    def console_tail(self, lines: int = 15) -> str:
        path = self.folder / "console.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return " | ".join(text.strip().splitlines()[-lines:])


def lan_box(lan: Lan, name: str, users: dict[str, str] | None = None
            ) -> tuple[LanHost, SystemdBox]:
    """A device of ``lan`` that boots (not booted yet): its address, its sshd run by its own
    systemd, the LAN's folder its "disk". ``box.boot()``, ``box.power_off()``, ``box.reboot()``::

        host, box = lan_box(lan, "pi")
        box.boot()                      # then reach it over SSH at host.address
    """
    host = lan.add_host(name, sshd=False)
    assert host.home is not None
    box = SystemdBox(host.home / "box", host.namespace, host.home / "sshd_config", name,
                     keep=lan.folder, users=users)
    return host, box
