"""One fleet context per operation, one Redis client factory with one timeout policy.

Real Redis (the session's embedded one); the source checks read the code as text.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis
import yaml

from catdog import broker, killswitch
from catdog.context import open_fleet
from catdog.errors import BrokerError, CatDogError
from catdog.fleet import fleet
from catdog.loader import load_inventory
from catdog.records import KILLSWITCH_KEY
from ops.launch import Launcher
from ops.stop import Stopper
from workers.extension import Extensions
from workers.telemetry import Telemetry

ROOT = Path(__file__).resolve().parent.parent
#: the one place a Redis client is built; the device probe runs on a device against whatever
#: CatDog is installed there (maybe one without :func:`catdog.broker.connect`)
FACTORY = {"catdog/broker.py", "ops/device_probe.py"}
CLIENT_RE = re.compile(r"\bRedis(\.from_url)?\(")


def sources(*packages: str) -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text()
            for package in packages for p in sorted((ROOT / package).rglob("*.py"))}


def test_every_redis_client_of_catdog_ops_and_workers_comes_from_the_one_factory() -> None:
    built = [f"{path}:{n}" for path, text in sources("catdog", "ops", "workers").items()
             if path not in FACTORY
             for n, line in enumerate(text.splitlines(), 1) if CLIENT_RE.search(line)]
    assert built == []


def test_the_broker_is_resolved_once_per_layer() -> None:
    calls = {path: text.count("broker.resolve(")
             for path, text in sources("catdog", "ops", "workers").items()}
    assert {path: n for path, n in calls.items() if n} == {
        "catdog/application.py": 1, "ops/opening.py": 1}


def policy(client: redis.Redis) -> tuple[object, ...]:
    kwargs = client.connection_pool.connection_kwargs
    return (kwargs["socket_timeout"], kwargs["socket_connect_timeout"],
            kwargs["health_check_interval"])


def test_coordinator_and_worker_clients_share_one_timeout_policy(tmp_path: Path) -> None:
    path = tmp_path / "catdog.yaml"
    path.write_text(yaml.safe_dump({"devices": {"a": {"host": "local"}}}))
    inventory = load_inventory(path)
    url = "redis://127.0.0.1:1/0"  # never connected to: the clients connect on first use
    expected = (broker.SOCKET_TIMEOUT_S, broker.CONNECT_TIMEOUT_S, broker.HEALTH_CHECK_S)
    stopper = Stopper(open_fleet(inventory, url))
    assert stopper.redis is not None
    clients = {"launcher": Launcher(open_fleet(inventory, url)).redis, "stopper": stopper.redis,
               "worker": Telemetry("a", url, ["catdog.any"], Extensions()).redis,
               "context": open_fleet(inventory, url).redis()}
    assert {name: policy(c) for name, c in clients.items()} == dict.fromkeys(clients, expected)


def test_the_kill_switch_works_on_the_context_it_is_given_not_the_process_fleet(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis) -> None:
    path = tmp_path / "catdog.yaml"
    path.write_text(yaml.safe_dump({"devices": {"mine-1": {"host": "local"},
                                                "mine-2": {"host": "local"}}}))
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"devices": {"theirs": {"host": "local"}}}))
    before = fleet._path, fleet._inventory
    fleet.use_loaded(load_inventory(other))  # the process's fleet is another one
    try:
        context = open_fleet(load_inventory(path), redis_url)
        report = killswitch.engage("context test", by="tester", context=context)
        assert [r["device"] for r in report.devices] == ["mine-1", "mine-2"]
        assert killswitch.current(context).reason == "context test"
        assert [r["device"] for r in killswitch.devices_state(context).devices] == [
            "mine-1", "mine-2"]
        assert not killswitch.release(by="tester", context=context).switch.on
    finally:
        fleet._path, fleet._inventory = before
        redis_client.delete(KILLSWITCH_KEY)


def test_a_context_without_a_broker_says_to_launch_the_fleet(tmp_path: Path) -> None:
    path = tmp_path / "catdog.yaml"
    path.write_text(yaml.safe_dump({"devices": {"a": {"host": "local"}}}))
    with pytest.raises(BrokerError, match="fab launch"):
        open_fleet(load_inventory(path), None).redis()


# -- the inventory text: read once per operation, the validated text shipped, ${VAR}s found once

INVENTORY_TEXT = """\
# ${IN_A_COMMENT} is not read by the loader
broker: "redis://:${CTX_PASSWORD}@127.0.0.1:6379/0"
devices:
  far:
    host: ${CTX_HOST}
    user: "$${LITERAL}"
"""


class RecordedSession:
    """What ``Launcher._command`` needs of a session; keeps what it would install."""

    python, state_dir, workdir = "python3", "/tmp/state", "/tmp/work"
    worker_python, project_dir = python, workdir  # no release deployed: the device's own

    def __init__(self, device: object) -> None:
        self.device = device
        self.installed: list[tuple[str, str]] = []

    def install_run_files(self, env: str, inventory_text: str) -> tuple[str, str]:
        self.installed.append((env, inventory_text))
        return "env", "inventory"


def test_the_launcher_ships_the_validated_inventory_text_and_its_variables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ops.session import referenced_variables

    environ = {"CTX_PASSWORD": "pw", "CTX_HOST": "10.9.8.7", "IN_A_COMMENT": "x", "LITERAL": "y"}
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "catdog.yaml"
    path.write_text(INVENTORY_TEXT)
    inventory = load_inventory(path)
    path.write_text("devices: {}\n")  # changed after it was validated: never shipped, never read
    assert inventory.text == INVENTORY_TEXT
    assert referenced_variables(inventory, environ) == {"CTX_HOST": "10.9.8.7",
                                                        "CTX_PASSWORD": "pw"}
    session = RecordedSession(inventory.devices["far"])
    Launcher(open_fleet(inventory, "redis://127.0.0.1:1/0"))._command(session)  # type: ignore[arg-type]
    [(env, shipped)] = session.installed
    assert shipped == INVENTORY_TEXT
    assert "CTX_HOST=10.9.8.7\nCTX_PASSWORD=pw\n" in env and "IN_A_COMMENT" not in env


# -- operations take their context: they never touch the process's fleet or app

def test_an_operation_never_changes_the_fleet_the_task_api_routes_by(
        tmp_path: Path, redis_url: str) -> None:
    from ops import api

    path = tmp_path / "catdog.yaml"
    path.write_text(yaml.safe_dump({"devices": {"mine": {"host": "local"}}}))
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"devices": {"theirs": {"host": "local"}}}))
    before = fleet._path, fleet._inventory
    fleet.use_loaded(load_inventory(other))
    try:
        assert [row["device"] for row in api.status(str(path))] == ["mine"]
        with pytest.raises(CatDogError, match="no worker log"):
            api.logs(str(path))
        assert [r["device"] for r in api.killswitch(str(path)).as_dict()["devices"]] == ["mine"]
        assert api.stop(str(path), "mine")["mine"].state == "NOT RUNNING"
        assert list(fleet.inventory.devices) == ["theirs"]
    finally:
        fleet._path, fleet._inventory = before


def test_a_context_reaches_the_workers_of_its_own_broker_not_the_process_apps(
        tmp_path: Path) -> None:
    from catdog import app, settings

    path = tmp_path / "catdog.yaml"
    path.write_text(yaml.safe_dump({"devices": {"a": {"host": "local"}}}))
    url = "redis://127.0.0.1:1/7"  # never connected to; the process app's conf is never read
    with open_fleet(load_inventory(path), url) as context:
        assert context.app is not app
        assert context.app.conf.broker_url == url == context.app.conf.result_backend
        assert context.app.conf.control_exchange == settings.control_exchange == "catdog"
        assert context.app.conf.accept_content == ["json"]


def test_only_the_fleet_processes_use_the_process_app_on_the_coordinator() -> None:
    """beat and Flower are fleet processes (they send tasks, serve the app); every other
    coordinator module works through the context it is given."""
    users = sorted(path for path, text in sources("ops").items()
                   if re.search(r"^\s*from catdog import .*\bapp\b", text, re.M))
    assert users == ["ops/beat.py", "ops/flower.py", "ops/starter.py"]
