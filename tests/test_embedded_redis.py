"""The embedded Redis: a real redis-server per inventory folder, private, reused, durable."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from catdog.broker import embedded_url
from catdog.redis_scripts import BELL_PREFIX
from ops.embedded_redis import EmbeddedRedis, alive


@pytest.fixture
def server(tmp_path: Path):
    s = EmbeddedRedis(tmp_path / ".catdog")
    yield s
    s.stop()


def test_starts_once_then_is_reused(server: EmbeddedRedis) -> None:
    url = server.ensure_running()
    pid = server.pid()
    assert pid and alive(pid)
    assert server.ensure_running() == url
    assert server.pid() == pid
    assert embedded_url(server.dir) == url


def test_keeps_its_files_private_beside_the_inventory(server: EmbeddedRedis) -> None:
    server.ensure_running()
    names = {p.name for p in server.dir.iterdir()}
    assert {"redis.conf", "redis.pid", "redis.port", "redis.password", "redis.log"} <= names
    assert "appendonly.aof" in names
    for secret in ("redis.conf", "redis.password"):
        assert stat.S_IMODE((server.dir / secret).stat().st_mode) == 0o600
    assert stat.S_IMODE(server.dir.stat().st_mode) == 0o700


def test_listens_on_loopback_and_requires_its_password(server: EmbeddedRedis) -> None:
    url = server.ensure_running()
    port = int((server.dir / "redis.port").read_text())
    assert "@127.0.0.1:" in url
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0)).ping()
    client = redis.Redis.from_url(url)
    assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}


def test_stop_keeps_data_and_restart_uses_the_same_port(server: EmbeddedRedis) -> None:
    url = server.ensure_running()
    redis.Redis.from_url(url).rpush("catdog.any", "queued-task")
    assert server.stop() is True
    assert not server.answers()
    assert server.stop() is False
    assert server.ensure_running() == url
    assert redis.Redis.from_url(url).lrange("catdog.any", 0, -1) == [b"queued-task"]


def test_killed_server_loses_no_queued_task(server: EmbeddedRedis) -> None:
    import signal
    import time

    url = server.ensure_running()
    client = redis.Redis.from_url(url)
    client.rpush("catdog.any", *[f"t{i}" for i in range(100)])
    time.sleep(1.5)  # appendfsync everysec: the guarantee is "at most the last second"
    os.kill(server.pid() or 0, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while server.answers() and time.monotonic() < deadline:
        time.sleep(0.05)
    server.ensure_running()
    assert redis.Redis.from_url(url).llen("catdog.any") == 100


def test_starting_it_says_so_on_stderr_once(server: EmbeddedRedis, capfd: pytest.CaptureFixture
                                            ) -> None:
    inventory = server.dir.parent / "catdog.yaml"
    server.ensure_running(inventory)
    port = int((server.dir / "redis.port").read_text())
    said = capfd.readouterr()
    assert said.out == ""
    assert said.err == (f"catdog: started the embedded Redis for {inventory} on 127.0.0.1:{port} "
                        f"(data in {server.dir}); `fab stop --inventory {inventory}` stops it\n")
    server.ensure_running(inventory)
    assert capfd.readouterr().err == ""


SCRIPT = """
import sys
for name in sys.argv[1:]:  # a CatDog installed without these (the coordinator's side)
    class Block:
        def find_spec(self, module, path=None, target=None, name=name):
            if module.split(".")[0] == name:
                raise ImportError("not installed: " + module)
    sys.meta_path.insert(0, Block())
from catdog.tasks.examples import whoami
try:
    whoami.delay()
except Exception as exc:
    print(type(exc).__name__ + ": " + str(exc))
else:
    print("sent")
"""


def _user_script(tmp_path: Path, *blocked: str) -> tuple[str, str]:
    """A user's own script on the coordinator sends a task; its (stdout, stderr)."""
    import subprocess
    import sys

    (tmp_path / "catdog.yaml").write_text("devices:\n  pc:\n    host: local\n")
    env = {**os.environ, "CATDOG_INVENTORY": str(tmp_path / "catdog.yaml")}
    env.pop("CATDOG_BROKER_URL", None)
    done = subprocess.run([sys.executable, "-c", SCRIPT, *blocked], cwd=tmp_path, env=env,
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip(), done.stderr


def test_a_users_script_on_the_coordinator_starts_the_embedded_redis(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / ".catdog")
    try:
        out, err = _user_script(tmp_path)
        assert out == "sent"
        assert "catdog: started the embedded Redis for " in err
        assert server.answers()
        queued = redis.Redis.from_url(server.url)
        lists = [k for k in queued.scan_iter() if queued.type(k) == b"list"
                 and not k.startswith(BELL_PREFIX.encode())]  # (a bell is a wake-up, not a task)
        assert sum(queued.llen(k) for k in lists) == 1
    finally:
        server.stop()


def test_without_the_coordinators_code_the_script_is_told_what_to_install(tmp_path: Path
                                                                          ) -> None:
    out, err = _user_script(tmp_path, "ops")
    assert out == (f"BrokerError: {tmp_path / 'catdog.yaml'}: no broker is set and the embedded "
                   "Redis needs the coordinator extra: pip install 'catdog[coordinator]' "
                   "(or set `broker:` in the inventory)")
    assert "started the embedded Redis" not in err
    assert not (tmp_path / ".catdog" / "redis.pid").exists()
