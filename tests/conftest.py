"""Fixtures: CatDog's own embedded Redis (real), private tmux sockets, real launched fleets.

One embedded Redis serves the whole session (the app's broker is fixed once per process); each
fleet gets a freshly flushed database, its own inventory folder and its own tmux socket, killed
at teardown. The developer's ``~/.ssh``, default tmux server and Redis are never touched.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from bench.lan import Lan, NetnsUnavailable
from bench.sshd import Sshd
from bench.tmuxserver import end_server
from catdog import broker
from catdog.context import open_fleet
from catdog.fleet import fleet
from catdog.inventory import BROKER_ENV, INVENTORY_ENV
from catdog.loader import load_inventory
from ops.build import build_wheel
from ops.embedded_redis import EmbeddedRedis
from ops.launch import Launcher
from ops.results import DeviceResult
from ops.stop import Stopper

ROOT = Path(__file__).resolve().parent.parent
IS_ROOT = os.geteuid() == 0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI (``CI`` set, as ``.ci/run`` does) a skipped test is a failed one: CI proves the
    whole suite ran, not the part the machine happened to support."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped, which fails in CI: {report.longrepr}"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's broker: CatDog's embedded Redis in a private folder."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("broker") / ".catdog")
    url = server.ensure_running()
    old = os.environ.get(BROKER_ENV)
    os.environ[BROKER_ENV] = url
    os.environ.pop(INVENTORY_ENV, None)
    yield url
    server.stop()
    if old is None:
        os.environ.pop(BROKER_ENV, None)
    else:
        os.environ[BROKER_ENV] = old


@pytest.fixture(scope="session")
def redis_client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def device_spec(capabilities: list[str], **fields: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"host": "local", "capabilities": capabilities, **fields}
    if IS_ROOT:
        spec.setdefault("allow_root", True)  # CI runs as root; workers refuse it otherwise
    return spec


class FleetUnderTest:
    """A fleet of local devices on a private tmux socket, launched for real."""

    def __init__(self, folder: Path, devices: dict[str, dict[str, Any]], **top: Any) -> None:
        self.folder = folder
        self.socket = f"catdog-test-{uuid.uuid4().hex[:10]}"
        doc = {"tmux_socket": self.socket, **top, "devices": devices}
        self.path = folder / "catdog.yaml"
        self.path.write_text(yaml.safe_dump(doc, sort_keys=False))
        self.inventory = load_inventory(self.path)
        fleet.use_loaded(self.inventory)
        self.url = broker.resolve(self.inventory, start_embedded=False)

    def launch(self, names: list[str] | None = None, timeout: float = 30.0) -> list[DeviceResult]:
        fleet.use_loaded(self.inventory)
        return Launcher(open_fleet(self.inventory, self.url), timeout=timeout).launch(
            self.inventory.select(names))

    def stop(self, names: list[str] | None = None, **kwargs: Any) -> list[DeviceResult]:
        return Stopper(open_fleet(self.inventory, self.url), **kwargs).stop(
            self.inventory.select(names))

    def tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True,
                              check=False)

    def sessions(self) -> list[str]:
        done = self.tmux("list-sessions", "-F", "#{session_name}")
        return sorted(done.stdout.split()) if done.returncode == 0 else []

    def close(self) -> None:
        end_server(self.socket)


@pytest.fixture
def make_fleet(tmp_path: Path, redis_client: redis.Redis
               ) -> Iterator[Callable[..., FleetUnderTest]]:
    made: list[FleetUnderTest] = []

    def make(devices: dict[str, dict[str, Any]], **top: Any) -> FleetUnderTest:
        redis_client.flushdb()
        folder = tmp_path / f"fleet{len(made)}"
        folder.mkdir()
        made.append(FleetUnderTest(folder, devices, **top))
        return made[-1]

    yield make
    for f in made:
        f.close()


THREE = {
    "kitchen": device_spec(["camera", "gpu"], concurrency=2),
    "garden": device_spec(["sensor", "gpio"], pool="solo"),
    "garage": device_spec(["sensor", "camera"], pool="threads", concurrency=2),
}


@pytest.fixture(scope="module")
def fleet3(tmp_path_factory: pytest.TempPathFactory, redis_client: redis.Redis
           ) -> Iterator[FleetUnderTest]:
    """Three launched local devices shared by a module's routing tests."""
    redis_client.flushdb()
    f = FleetUnderTest(tmp_path_factory.mktemp("fleet3"), THREE)
    results = f.launch()
    assert [r.state for r in results] == ["READY"] * 3, [r.as_dict() for r in results]
    yield f
    f.stop(force=True)
    f.close()


@pytest.fixture
def use_fleet3(fleet3: FleetUnderTest) -> FleetUnderTest:
    fleet.use_loaded(fleet3.inventory)
    return fleet3


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.close()


@pytest.fixture(scope="session")
def sshd_no_sftp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A real sshd that offers no SFTP subsystem (files must go over the SSH channel)."""
    server = Sshd(tmp_path_factory.mktemp("sshd-no-sftp"), sftp=False)
    yield server
    server.close()


@pytest.fixture(scope="session")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with CatDog's wheel and its coordinator extra (from the local index): CatDog
    as a user installs it, outside this checkout (one per session: installing takes a while)."""
    where = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(ROOT, where / "dist")
    with zipfile.ZipFile(wheel) as zipped:
        names = zipped.namelist()
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert "catdog = ops.cli:main" in zipped.read(entry_points).decode()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"catdog", "workers", "ops"}  # no tasks, celeryconfig or fabfile to collide
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", f"catdog[coordinator] @ {wheel.as_uri()}"],
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


@pytest.fixture(scope="module")
def lan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lan]:
    """A network-namespace LAN for one test module (each device its own address and sshd)."""
    try:
        net = Lan(tmp_path_factory.mktemp("lan"))
    except NetnsUnavailable as exc:
        pytest.skip(f"network-namespace fleet not run: {exc}")
    try:
        yield net
    finally:
        net.close()


@pytest.fixture(scope="module")
def device_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A device's virtualenv (the worker side only) that rollout tests copy per device."""
    from .rollout_rigs import device_venv

    return device_venv(tmp_path_factory.mktemp("device-venv"))


@pytest.fixture(scope="module")
def lan_broker(lan: Lan) -> Any:
    """The coordinator's Redis on the module's LAN (a :class:`tests.rollout_rigs.LanBroker`)."""
    from .rollout_rigs import LanBroker

    return LanBroker.start(lan)
