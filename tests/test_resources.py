"""Per-device resources on real workers: ``uses={"camera": 1}`` holds one of the device's
``resources: {camera: 1}`` while it runs, whatever the device's concurrency; a task waiting for
it holds no worker slot; a dead worker's units are freed when their lease runs out."""

from __future__ import annotations

import importlib
import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import redis

from catdog.errors import UsageError
from catdog.resources import LEASE_S, resource_key
from ops import commands
from tests.conftest import FleetUnderTest, device_spec
from tests.fakepi import wait_for

pytestmark = pytest.mark.slow

SOURCE = '''
import os, time
import redis
from catdog import app
from catdog.fleet import fleet


def _note(what, n):
    client = redis.Redis.from_url(os.environ["CATDOG_BROKER_URL"])
    client.rpush("{module}:log", f"{{what}} {{n}} {{time.time()}} {{fleet.device.name}}")


@app.task(name="{module}.photo", uses={{"camera": 1}})
def photo(n, seconds):
    _note("start", n)
    time.sleep(seconds)
    _note("end", n)
    return fleet.device.name


@app.task(name="{module}.plain")
def plain(n):
    _note("plain", n)
    return n
'''


def _module(folder: Path, name: str) -> ModuleType:
    """Write the task module where the workers import it from, and import it here too."""
    (folder / f"{name}.py").write_text(SOURCE.format(module=name))
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(folder))


def _log(client: redis.Redis, module: str) -> list[tuple[str, int, float, str]]:
    rows = [raw.decode().split() for raw in client.lrange(f"{module}:log", 0, -1)]
    return [(w, int(n), float(t), d) for w, n, t, d in rows]


@pytest.fixture
def camfleet(make_fleet: Callable[..., FleetUnderTest]) -> tuple[FleetUnderTest, str, ModuleType]:
    """``cam`` runs 3 tasks at once and has one camera; ``pc`` declares no resources."""
    name = f"res_probe_{uuid.uuid4().hex[:8]}"
    f = make_fleet({
        "cam": device_spec(["camera"], concurrency=3, resources={"camera": 1}),
        "pc": device_spec([], pool="threads", concurrency=2),
    }, imports=[name])
    return f, name, _module(f.folder, name)


def test_one_camera_holds_one_task_at_a_time_and_waiting_holds_no_slot(
        camfleet: tuple, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    f, module, tasks = camfleet
    assert [r.state for r in f.launch()] == ["READY", "READY"]
    try:
        photos = [tasks.photo.on("cam").delay(n, 1.0) for n in range(3)]
        wait_for(lambda: any(w == "start" for w, *_ in _log(redis_client, module)), 15,
                 "a first photo")
        assert commands.facts(str(f.path), json=True) == 0
        rows = {r["device"]: r for r in json.loads(capsys.readouterr().out)}
        assert rows["cam"]["resources"] == {"camera": {"held": 1, "of": 1}}
        assert rows["pc"]["resources"] == {}
        assert commands.status(str(f.path)) == 0
        table = capsys.readouterr().out.splitlines()
        assert "HELD" in table[0] and "camera:1/1" in next(r for r in table if r.startswith("cam"))
        plain = tasks.plain.on("cam").delay(99)  # the photos waiting leave cam's slots free
        assert plain.get(timeout=10) == 99
        assert [p.get(timeout=30) for p in photos] == ["cam"] * 3

        log = _log(redis_client, module)
        spans = sorted((t, w) for w, n, t, _ in log if w in ("start", "end"))
        # starts and ends alternate: never two photos running at once on the one camera
        assert [w for _, w in spans] == ["start", "end"] * 3
        plain_at = next(t for w, _, t, _ in log if w == "plain")
        assert plain_at < spans[-1][0]  # ran while photos were still waiting for the camera
        key = resource_key("cam", "camera")
        # every unit given back as its task settles (in the worker, just after the result)
        wait_for(lambda: redis_client.zcard(key) == 0, 3, "the camera given back")
    finally:
        f.stop(force=True)


def test_a_dead_workers_camera_is_freed_when_its_lease_runs_out(
        camfleet: tuple, redis_client: redis.Redis) -> None:
    f, _, tasks = camfleet
    assert [r.state for r in f.launch(["cam"])] == ["READY"]
    tasks.photo.on("cam").delay(1, 60.0)
    key = resource_key("cam", "camera")
    wait_for(lambda: redis_client.zcard(key) == 1, 15, "the photo holding the camera")
    f.stop(["cam"], force=True)  # the worker dies holding it: nothing gives it back
    assert redis_client.zcount(key, time.time(), "+inf") == 1
    died = time.monotonic()
    wait_for(lambda: redis_client.zcount(key, time.time(), "+inf") == 0, LEASE_S + 3,
             "the lease to run out")
    assert time.monotonic() - died <= LEASE_S + 3


def test_uses_the_device_does_not_declare_is_refused_at_the_call(camfleet: tuple) -> None:
    _, module, tasks = camfleet
    with pytest.raises(UsageError, match=r"uses camera: 1 \(it declares 0\) on device 'pc'"):
        tasks.photo.on("pc").delay(1, 0)
    from catdog import app

    with pytest.raises(UsageError, match="uses must map resource names to whole numbers"):
        app.task(name=f"{module}.bad", uses={"camera": 0}, shared=False, lazy=False)(_nothing)


def _nothing() -> None:
    pass


def test_bad_detect_resources_and_health_are_refused_naming_line_and_field(
        tmp_path: Path) -> None:
    from catdog.errors import InventoryError
    from catdog.loader import load_inventory

    path = tmp_path / "catdog.yaml"
    path.write_text("devices:\n  pi:\n    host: 10.0.0.2\n    detect: [camera, radar]\n"
                    "    resources: {camera: 0, 'bad name': 1}\n"
                    "    health: {max_temp: hot, fan: true}\n")
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    lines = str(caught.value).splitlines()
    assert any(":4 devices.pi.detect: expected a detectable capability (one of camera, gpio, "
               "i2c, gpu), got 'radar'" in line for line in lines), lines
    assert any(":5 devices.pi.resources.camera: expected a whole number >= 1, got 0" in line
               for line in lines), lines
    assert any("devices.pi.resources.bad name: expected a resource name" in line
               for line in lines), lines
    assert any(":6 devices.pi.health.max_temp: expected degrees C" in line for line in lines)
    assert any("devices.pi.health.fan: unknown key 'fan'" in line for line in lines), lines

    path.write_text("defaults: {health: {max_temp: 80}}\ndevices:\n  pi:\n    host: 10.0.0.2\n"
                    "    resources: {camera: 2}\n    detect: [gpio]\n")
    pi = load_inventory(path).devices["pi"]
    assert (pi.resources, pi.health, pi.detect) == ({"camera": 2}, {"max_temp": 80.0}, ("gpio",))
