"""Reaching a device: over SSH with Fabric for remote hosts, directly for ``host: local``.

Host keys are checked: the inventory's ``known_hosts`` (else ``~/.ssh/known_hosts``), and an
unknown key is refused with the command that accepts it. Nothing is read from ``~/.ssh/config``:
the inventory is the whole truth about how a device is reached. SSH failures become
:class:`Unreachable` with a short reason (refused, timeout, auth failed, host key unknown).

Files reach a device over SFTP when its sshd offers the subsystem, else over the SSH channel
(``cat`` reading stdin; a minimal ``sshd_config`` or dropbear offers no SFTP): asked once per
connection, the same calls either way, and nothing a file holds is ever on a command line.

A link that dies under a connection (a cable pulled, a device gone off the network) is noticed:
the connection sends an SSH keepalive after ``KEEPALIVE_S`` idle seconds and gives up once sent
data has gone unanswered for ``DEAD_LINK_S`` (``TCP_USER_TIMEOUT``); the command it was running
then raises :class:`Unreachable` saying so, instead of waiting out its own timeout (a pip
install's is 15 minutes) or, once the link is back, going on as if nothing had happened.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import io
import os
import secrets
import shlex
import shutil
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from catdog.errors import CatDogError
from catdog.inventory import Device
from ops.files import write_private
from ops.tmux import Completed, LocalRunner

CONNECT_TIMEOUT_S = 10
COMMAND_TIMEOUT_S = 30
UPLOAD_TIMEOUT_S = 600  # a wheel over a slow link: the timeout is per read or write, not in all
CHUNK_BYTES = 32768
KEEPALIVE_S = 5
DEAD_LINK_S = 15
DAMAGED_STATUS = 3  # a copy over the SSH channel that did not arrive whole
#: what copying a file over the SSH channel needs, for a device whose sshd offers no SFTP
CHANNEL_TOOLS = ("cat", "mv", "rm", "chmod", "mkdir")
SFTP_FIX = ("enable SFTP on the device: `Subsystem sftp /usr/lib/openssh/sftp-server` in "
            "/etc/ssh/sshd_config (package openssh-sftp-server), then restart sshd")


class Unreachable(CatDogError):
    """A device could not be reached over SSH; the message says why and what to do."""


class SSHRunner:
    """Runs argv lists on a device over one Fabric connection (no login shell, no .bashrc reliance)."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.conn = connect(device)
        self._sftp_offered: bool | None = None

    def __call__(self, argv: Sequence[str]) -> Completed:
        return self.shell(shlex.join(argv))

    def shell(self, command: str, timeout: float = COMMAND_TIMEOUT_S) -> Completed:
        try:
            done = self.conn.run(command, hide=True, warn=True, pty=False, in_stream=False,
                                 timeout=timeout)
        except Exception as exc:
            raise Unreachable(describe(exc, self.device)) from exc
        if done.exited == -1 and not self.alive():  # the channel closed with no exit status
            raise Unreachable(lost(self.device))
        return Completed(done.exited, done.stdout, done.stderr)

    def alive(self) -> bool:
        transport = self.conn.client.get_transport()
        return transport is not None and transport.is_active()

    def stream(self, command: str) -> int:
        """Run ``command`` with its output going straight to ours, until it ends or Ctrl-C.

        A pty on the device, so Fabric's forwarded Ctrl-C really interrupts the command there.
        """
        try:
            return int(self.conn.run(command, hide=False, warn=True, pty=True,
                                     in_stream=False).exited)
        except KeyboardInterrupt:
            return 130

    def transfer(self) -> str:
        """How files reach this device: ``"sftp"`` when its sshd offers the SFTP subsystem, else
        ``"ssh"`` (``cat`` over the SSH channel). Asked once per connection."""
        if self._sftp_offered is None:
            from paramiko import SSHException

            try:
                self.conn.sftp()
                self._sftp_offered = True
            except (SSHException, EOFError) as exc:
                # a refused subsystem ends only its channel ("Channel closed."); a dead
                # transport is the device going away
                transport = self.conn.client.get_transport()
                if transport is None or not transport.is_active():
                    raise Unreachable(describe(exc, self.device)) from exc
                self._sftp_offered = False
        return "sftp" if self._sftp_offered else "ssh"

    def missing_tools(self) -> list[str]:
        """The commands that copying files over the SSH channel needs and the device lacks."""
        done = self.shell(f"for t in {' '.join(CHANNEL_TOOLS)}; do "
                          f"command -v $t >/dev/null 2>&1 || echo $t; done")
        if done.status != 0:
            return ["sh"]
        return done.stdout.split()

    def write_private(self, path: str, text: str) -> None:
        """Write ``text`` to ``path`` on the device, mode 600, never on a command line.

        The file is made private before it gets its text; a missing folder is created mode 700.
        """
        if self.transfer() == "ssh":
            self._channel_write(path, io.BytesIO(text.encode()), private=True)
            return
        try:
            try:
                self._sftp_private(path, text)
            except FileNotFoundError:  # the folder is missing: make it (once), then write
                folder = shlex.quote(os.path.dirname(path))
                done = self.shell(f"umask 077 && mkdir -p {folder} && chmod 700 {folder}")
                if done.status != 0:
                    raise Unreachable(f"could not create {folder} on {self.device.name}: "
                                      f"{done.stderr.strip()}") from None
                self._sftp_private(path, text)
        except OSError as exc:
            raise Unreachable(f"could not write {path} on {self.device.name}: {exc}") from exc

    def _sftp_private(self, path: str, text: str) -> None:
        sftp = self.conn.sftp()
        with sftp.open(path, "w") as remote:
            sftp.chmod(path, 0o600)
            remote.write(text)

    def write_text(self, path: str, text: str) -> None:
        """Write ``text`` to ``path`` on the device (for files that hold no secret)."""
        if self.transfer() == "ssh":
            self._channel_write(path, io.BytesIO(text.encode()), private=False)
            return
        try:
            with self.conn.sftp().open(path, "w") as remote:
                remote.write(text)
        except OSError as exc:
            raise Unreachable(f"could not write {path} on {self.device.name}: {exc}") from exc

    def upload(self, local: Path, path: str) -> None:
        """Copy the coordinator's file ``local`` to ``path`` on the device."""
        if self.transfer() == "ssh":
            with local.open("rb") as source:
                self._channel_write(path, source, private=False, timeout=UPLOAD_TIMEOUT_S)
            return
        try:
            self.conn.sftp().put(str(local), path)
        except OSError as exc:
            raise Unreachable(f"could not copy {local.name} to {path} on {self.device.name}: "
                              f"{exc}") from exc

    def _channel_write(self, path: str, source: BinaryIO, *, private: bool,
                       timeout: float = COMMAND_TIMEOUT_S) -> None:
        """Write ``source`` to ``path`` over the SSH channel, for a device without SFTP.

        One command: its stdin is a header line (size and sha256) and then the bytes, which
        ``cat`` puts under a temporary name beside ``path`` (private: mode 600 before it holds a
        byte, in a folder made mode 700 if missing). The device checks what it got (``sha256sum``,
        else the size) and only a whole copy is moved onto ``path``: a dropped connection never
        leaves half a file, and nothing about the contents is ever on a command line.
        """
        q = shlex.quote
        folder = os.path.dirname(path) or "."
        temp_name = f"{path}.catdog-{secrets.token_hex(4)}"
        temp = q(temp_name)
        size, digest = _size_and_sha256(source)
        make = (f"umask 077; [ -d {q(folder)} ] || {{ mkdir -p {q(folder)} && chmod 700 "
                f"{q(folder)}; }} && : > {temp} && chmod 600 {temp} || exit\n" if private else "")
        script = (f"{make}read -r n h\n"
                  f"cat > {temp} || {{ s=$?; rm -f {temp}; exit $s; }}\n"
                  f"set -- $(sha256sum {temp} 2>/dev/null)\n"
                  f'if [ -n "$1" ]; then got=$1 want=$h; else set -- $(wc -c < {temp}); '
                  f"got=$1 want=$n; fi\n"
                  f'if [ "$got" != "$want" ]; then rm -f {temp}; '
                  f'echo "arrived damaged: got $got for $want" >&2; exit {DAMAGED_STATUS}; fi\n'
                  f"mv -f {temp} {q(path)}")
        header = io.BytesIO(f"{size} {digest}\n".encode())
        status, err = self._exec(script, (header, source), timeout)
        if status == 0:
            return
        missing = self.missing_tools() if status != DAMAGED_STATUS else []
        if missing:
            raise Unreachable(f"could not write {path} on {self.device.name}: its sshd offers no "
                              f"SFTP and its shell lacks {', '.join(missing)} to copy files over "
                              f"the SSH channel; {SFTP_FIX}")
        reason = (err.strip().splitlines() or [f"exit status {status}"])[-1]
        raise Unreachable(f"could not write {path} on {self.device.name}: "
                          f"{reason.replace(temp_name, path)}")

    def _exec(self, command: str, sources: Sequence[BinaryIO], timeout: float
              ) -> tuple[int, str]:
        """Run ``command`` on a channel of its own with ``sources`` streamed to its stdin, one
        after the other; its exit status and stderr."""
        try:
            channel = self.conn.client.get_transport().open_session(timeout=timeout)
            try:
                channel.settimeout(timeout)
                channel.exec_command(command)
                for source in sources:
                    source.seek(0)
                    while chunk := source.read(CHUNK_BYTES):
                        channel.sendall(chunk)
                channel.shutdown_write()
                channel.makefile("rb").read()
                err = channel.makefile_stderr("rb").read()
                status = channel.recv_exit_status()
            finally:
                channel.close()
        except TimeoutError as exc:
            raise Unreachable(f"{self.device.host}:{self.device.port} stopped answering for "
                              f"{timeout:g}s during a file copy over the SSH channel") from exc
        except Exception as exc:
            raise Unreachable(describe(exc, self.device)) from exc
        return status, err.decode(errors="replace")

    def close(self) -> None:
        self.conn.close()


class LocalHost(LocalRunner):
    """The coordinator itself, with the same interface as :class:`SSHRunner`."""

    def shell(self, command: str, timeout: float = COMMAND_TIMEOUT_S) -> Completed:
        proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                              timeout=timeout, check=False, stdin=subprocess.DEVNULL)
        return Completed(proc.returncode, proc.stdout, proc.stderr)

    def stream(self, command: str) -> int:
        try:
            return subprocess.call(["sh", "-c", command], stdin=subprocess.DEVNULL)
        except KeyboardInterrupt:
            return 130

    def transfer(self) -> str:
        return "local"

    def missing_tools(self) -> list[str]:
        return []

    def write_private(self, path: str, text: str) -> None:
        write_private(path, text)

    def write_text(self, path: str, text: str) -> None:
        Path(path).write_text(text)

    def upload(self, local: Path, path: str) -> None:
        shutil.copyfile(local, path)

    def close(self) -> None:
        pass


Host = SSHRunner | LocalHost


def open_host(device: Device) -> Host:
    return LocalHost() if device.is_local else SSHRunner(device)


def _size_and_sha256(source: BinaryIO) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    source.seek(0)
    while chunk := source.read(CHUNK_BYTES):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def known_hosts_path(device: Device) -> Path:
    return Path(device.known_hosts or "~/.ssh/known_hosts").expanduser()


def connect(device: Device) -> Any:
    """An open Fabric connection to ``device`` that refuses unknown host keys."""
    from fabric import Config, Connection
    from paramiko import RejectPolicy

    config = Config(overrides={"load_ssh_configs": False})
    connect_kwargs: dict[str, Any] = {"allow_agent": device.key is None}
    if device.key:
        connect_kwargs.update(key_filename=[str(Path(device.key).expanduser())],
                              look_for_keys=False)
    conn = Connection(device.host, user=device.user or getpass.getuser(), port=device.port,
                      config=config, connect_timeout=CONNECT_TIMEOUT_S,
                      connect_kwargs=connect_kwargs)
    conn.client.set_missing_host_key_policy(RejectPolicy())
    known = known_hosts_path(device)
    if known.exists():
        conn.client.load_host_keys(str(known))
    try:
        conn.open()
    except Exception as exc:
        raise Unreachable(describe(exc, device)) from exc
    watch_link(conn.client.get_transport())
    return conn


def watch_link(transport: Any) -> None:
    """Make ``transport`` notice a dead link: keepalives when idle, and the kernel dropping the
    connection once data sent has gone unanswered for ``DEAD_LINK_S`` (Linux; elsewhere only
    the keepalives)."""
    transport.set_keepalive(KEEPALIVE_S)
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if option is not None and transport.sock is not None:
        with contextlib.suppress(OSError):
            transport.sock.setsockopt(socket.IPPROTO_TCP, option, DEAD_LINK_S * 1000)


def lost(device: Device) -> str:
    return (f"the connection to {device.name} ({device.host}:{device.port}) was lost: no answer "
            f"for {DEAD_LINK_S}s (its link down, or the device gone)")


def describe(exc: BaseException, device: Device) -> str:
    """A one-line reason for an SSH failure, with the fix where there is one."""
    from paramiko import AuthenticationException, BadHostKeyException, SSHException
    from paramiko.ssh_exception import NoValidConnectionsError

    where = f"{device.host}:{device.port}"
    if isinstance(exc, NoValidConnectionsError | ConnectionRefusedError):
        return f"connection refused at {where}: is sshd running there?"
    if isinstance(exc, socket.timeout | TimeoutError):
        return f"timeout connecting to {where} after {CONNECT_TIMEOUT_S}s"
    if isinstance(exc, AuthenticationException):
        key = f" with key {device.key}" if device.key else ""
        return (f"authentication failed for {device.user or getpass.getuser()}@{where}{key}; "
                f"install the public key in the device's ~/.ssh/authorized_keys")
    if isinstance(exc, BadHostKeyException):
        return (f"host key of {where} does not match {known_hosts_path(device)}: possible "
                f"man-in-the-middle; if the device was reinstalled, remove its old line")
    if isinstance(exc, SSHException) and "known_hosts" in str(exc):
        target = f"[{device.host}]:{device.port}" if device.port != 22 else device.host
        return (f"host key of {where} unknown (not in {known_hosts_path(device)}); check it, then "
                f"accept it with: ssh-keyscan -p {device.port} {device.host} >> "
                f"{known_hosts_path(device)}  # adds {target}")
    if isinstance(exc, OSError):
        return f"cannot reach {where}: {exc.strerror or exc}"
    return f"{type(exc).__name__} talking to {where}: {exc}"
