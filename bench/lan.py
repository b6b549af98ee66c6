"""A private LAN of "devices": one network namespace per device, each with its own address and sshd.

The coordinator gets a bridge (``10.77.<n>.1/24``); each device is a network namespace joined to
it by a veth pair, with address ``10.77.<n>.<10+i>``, its own host key and an sshd listening on
port 22 of that address. Workers started over SSH inherit the namespace, so a device's traffic
really leaves through its own interface and can be cut off by taking its link down. Each device
also gets its own ``TMUX_TMPDIR`` (real hosts have their own ``/tmp``): tmux sockets are files,
which namespaces do not separate.

Also a password-protected Redis listening on the bridge address only: the LAN's broker;
``durable`` gives it an append-only file (fsync every second, no eviction, as the embedded Redis
has), so a kill loses no queued task and :meth:`Lan.restart_redis` brings it back on its port.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops.embedded_redis import redis_server_binary


class NetnsUnavailable(Exception):
    """This machine does not let us create network namespaces (no root, or a locked sandbox)."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def netns_permitted() -> str | None:
    """None when ``ip netns`` works here, else why not."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"catdog-probe-{uuid.uuid4().hex[:6]}"
    done = ip("netns", "add", probe, check=False)
    if done.returncode != 0:
        return f"`ip netns add` is not permitted here: {done.stderr.strip()}"
    ip("netns", "del", probe, check=False)
    return None


@dataclass
class LanHost:
    name: str
    namespace: str
    address: str
    veth: str
    #: None when something else runs the device's sshd (a booted :mod:`bench.systemdbox`)
    sshd: subprocess.Popen[bytes] | None
    home: Path | None = None

    def link(self, up: bool) -> None:
        """Plug or unplug the device's cable (its end of the veth pair)."""
        ip("-n", self.namespace, "link", "set", f"{self.veth}n", "up" if up else "down")


class Lan:
    def __init__(self, folder: Path) -> None:
        why = netns_permitted()
        if why:
            raise NetnsUnavailable(why)
        self.folder = folder
        self.uid = uuid.uuid4().hex[:6]
        used = ip("-4", "-o", "addr").stdout
        self.net = next(f"10.77.{n}" for n in random.sample(range(1, 250), 249)
                        if f"10.77.{n}." not in used)
        self.gateway = f"{self.net}.1"
        self.bridge = f"cdb{self.uid}"
        self.hosts: list[LanHost] = []
        self.redis: subprocess.Popen[bytes] | None = None
        self._redis_argv: list[str] = []
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        self.client_key = folder / "client_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.client_key)],
                       check=True)
        self.known_hosts = folder / "known_hosts"
        self.known_hosts.write_text("")

    def add_host(self, name: str, sshd: bool = True) -> LanHost:
        """A device: its namespace, address, keys and ``sshd_config`` (in its folder);
        ``sshd=False`` leaves starting its sshd to the caller (``<folder>/sshd_config``)."""
        index = len(self.hosts)
        namespace = f"catdog-{self.uid}-{name}"
        veth = f"cd{self.uid}{index}"  # host end; the device's end gets an "n" suffix
        address = f"{self.net}.{10 + index}"
        home = self.folder / name
        (home / "tmp").mkdir(parents=True)
        ip("netns", "add", namespace)
        ip("link", "add", veth, "type", "veth", "peer", "name", f"{veth}n")
        ip("link", "set", f"{veth}n", "netns", namespace)
        ip("link", "set", veth, "master", self.bridge)
        ip("link", "set", veth, "up")
        ip("-n", namespace, "addr", "add", f"{address}/24", "dev", f"{veth}n")
        ip("-n", namespace, "link", "set", f"{veth}n", "up")
        ip("-n", namespace, "link", "set", "lo", "up")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(home / "host_key")], check=True)
        kind, key = (home / "host_key.pub").read_text().split()[:2]
        with self.known_hosts.open("a") as f:
            f.write(f"{address} {kind} {key}\n")
        (home / "authorized_keys").write_text((self.folder / "client_key.pub").read_text())
        (home / "sshd_config").write_text("\n".join([
            "Port 22", f"ListenAddress {address}", f"HostKey {home / 'host_key'}",
            f"PidFile {home / 'sshd.pid'}", f"AuthorizedKeysFile {home / 'authorized_keys'}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            f"SetEnv TMUX_TMPDIR={home / 'tmp'}", "Subsystem sftp internal-sftp",
            "LogLevel ERROR", "",
        ]))
        if not sshd:
            host = LanHost(name, namespace, address, veth, None, home)
            self.hosts.append(host)
            return host
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        with open(home / "sshd.log", "w") as log:
            server = subprocess.Popen(["ip", "netns", "exec", namespace, "/usr/sbin/sshd", "-D",
                                       "-e", "-f", str(home / "sshd_config")], stderr=log)
        host = LanHost(name, namespace, address, veth, server, home)
        self.hosts.append(host)
        _wait_for_port(address, 22, home / "sshd.log")
        return host

    def device(self, host: LanHost, capabilities: list[str], **fields: Any) -> dict[str, Any]:
        import getpass

        spec: dict[str, Any] = {
            "host": host.address, "user": getpass.getuser(), "key": str(self.client_key),
            "known_hosts": str(self.known_hosts), "python": sys.executable,
            "workdir": str(self.folder / host.name / "work"), "capabilities": capabilities,
        }
        if os.geteuid() == 0:
            spec["allow_root"] = True
        return {**spec, **fields}

    def start_redis(self, durable: bool = False, fsync: str = "everysec") -> tuple[str, int]:
        """A Redis on the bridge address only, with a password; returns (password, port).

        The port is picked free, then handed to redis-server: another process may take it in
        between, so a server that exits is started again on a new port (its log says why)."""
        password = secrets.token_urlsafe(16)
        persistence = (["--appendonly", "yes", "--appendfsync", fsync,
                        "--appendfilename", "lan-redis.aof", "--maxmemory-policy", "noeviction"]
                       if durable else ["--appendonly", "no"])
        for _attempt in range(3):
            with socket.socket() as s:
                s.bind((self.gateway, 0))
                port = s.getsockname()[1]
            self._redis_argv = [redis_server_binary(), "--bind", self.gateway, "--port", str(port),
                                "--requirepass", password, "--save", "", *persistence,
                                "--dir", str(self.folder)]
            if self._spawn_redis():
                return password, port
        raise RuntimeError(f"redis-server would not start on {self.gateway}: {self._redis_log()}")

    def restart_redis(self) -> None:
        """Start the LAN's Redis again, same port, password and data (after it died or was
        killed); raises when it will not come up."""
        if self.redis is not None and self.redis.poll() is None:
            return
        if not self._spawn_redis():
            raise RuntimeError(f"redis-server would not start again on {self.gateway}: "
                               f"{self._redis_log()}")

    def _spawn_redis(self) -> bool:
        with (self.folder / "lan-redis.log").open("ab") as out:  # the child keeps its own copy
            self.redis = subprocess.Popen(self._redis_argv, stdout=out, stderr=subprocess.STDOUT)
        port = int(self._redis_argv[self._redis_argv.index("--port") + 1])
        return _wait_for_port(self.gateway, port, self.folder / "lan-redis.log", self.redis)

    def _redis_log(self) -> str:
        log = self.folder / "lan-redis.log"
        return log.read_text() if log.exists() else "(it wrote nothing)"

    def close(self) -> None:
        for host in self.hosts:
            pids = ip("netns", "pids", host.namespace, check=False).stdout.split()
            for pid in pids:  # sshd, tmux servers and workers started in the namespace
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            if host.sshd is not None:
                host.sshd.wait(timeout=10)
            ip("netns", "del", host.namespace, check=False)
        if self.redis is not None:
            self.redis.kill()
            self.redis.wait(timeout=10)
        ip("link", "del", self.bridge, check=False)


def _wait_for_port(address: str, port: int, log: Path | None,
                   server: subprocess.Popen[bytes] | None = None) -> bool:
    """True once something listens on ``address:port``; False when ``server`` exited first
    (raises after 30 s, with ``log``)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection((address, port), timeout=1).close()
            return True
        except OSError:
            if server is not None and server.poll() is not None:
                return False
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {address}:{port}"
                                   + (f"; {log.read_text()}" if log and log.exists() else "")
                                   ) from None
            time.sleep(0.05)
