"""CatDog beside a plain Celery app on one Redis database, and Celery's own ways of sending work
(by name: ``app.send_task``, ``celery call``, Flower) and of purging it, against real fleets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from catdog import NoRoute, UsageError, app
from catdog.inventory import INVENTORY_ENV
from catdog.routing import ANY_QUEUE, capability_queue, device_queue, queue_keys
from ops.results import READY

from .conftest import ROOT, device_spec

pytestmark = pytest.mark.slow

PLAIN = '''
import time

import redis
from celery import Celery

app = Celery("plain", broker={url!r}, backend={url!r})
app.conf.task_acks_late = True  # as many apps do: its messages sit in kombu's unacked hash


@app.task
def add(x, y):
    return x + y


@app.task(bind=True)
def hold(self, seconds):
    redis.Redis.from_url({url!r}).rpush("plain:runs", self.request.id)
    time.sleep(seconds)
    return "held"
'''


def wait_for(condition: Any, timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.1)


@pytest.fixture
def plain_worker(tmp_path: Path, redis_url: str) -> Iterator[Callable[[], tuple[Celery, Path]]]:
    """Starts a plain Celery app (Celery's defaults) and its worker on the fleet's database."""
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "plain.py").write_text(PLAIN.format(url=redis_url))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATDOG_")}
    env["PYTHONPATH"] = str(folder)
    log = open(folder / "worker.log", "w")  # noqa: SIM115
    client = Celery("plain", broker=redis_url, backend=redis_url, set_as_current=False)
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> tuple[Celery, Path]:
        proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "plain", "worker",
                                 "--pool", "threads", "--concurrency", "2", "-n", "plain@%h",
                                 "--without-gossip", "--without-mingle", "--loglevel", "INFO"],
                                cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        wait_for(lambda: proc.poll() is not None or client.control.ping(timeout=0.5), 60,
                 "the plain Celery worker")
        assert proc.poll() is None, (folder / "worker.log").read_text()
        return client, folder / "worker.log"

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=30)
    log.close()
    client.close()


def test_catdog_and_a_plain_celery_app_share_one_redis_database(
        make_fleet: Any, plain_worker: Any, redis_client: redis.Redis) -> None:
    from catdog.tasks import examples

    fleet = make_fleet({"kitchen": device_spec(["camera"], pool="threads"),
                        "garden": device_spec([], pool="solo")})
    # what a CatDog before 0.1.0 left in Celery's own table: plain Celery cannot read it
    stale = b"::kitchen@old.celery.pidbox"
    redis_client.sadd("_kombu.binding.celery.pidbox", stale)
    plain, plain_log = plain_worker()
    assert {r.state for r in fleet.launch()} == {READY}
    table = redis_client.smembers("_kombu.binding.celery.pidbox")
    assert stale not in table and any(b"plain@" in m for m in table)  # the plain one stays

    for _ in range(3):  # each app pings its workers, and each worker answers only its own app
        replies = plain.control.ping(timeout=1)
        assert sorted(n.split("@")[0] for r in replies for n in r) == ["plain"]
        ours = app.control.ping(timeout=1)
        assert sorted(n.split("@")[0] for r in ours for n in r) == ["garden", "kitchen"]
    assert plain.send_task("plain.add", (2, 3)).get(timeout=30) == 5
    assert examples.snapshot.delay().get(timeout=30)["device"] == "kitchen"
    assert examples.whoami.delay().get(timeout=30)["device"] in {"kitchen", "garden"}

    # a plain task held past CatDog's 60 s visibility timeout is not CatDog's to restore: a
    # CatDog worker's sweep (every 5 s) would put it back, and it would run twice
    held = plain.send_task("plain.hold", (8,))
    tag = wait_for(lambda: redis_client.hkeys("unacked"), 20, "the plain worker to hold it")[0]
    redis_client.zadd("unacked_index", {tag: time.time() - 120}, xx=True)
    assert held.get(timeout=60) == "held"
    assert redis_client.lrange("plain:runs", 0, -1) == [held.id.encode()]  # it ran once

    # the celery command line of each app: each sees its own workers
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATDOG_")}
    plain_cli = subprocess.run(
        [sys.executable, "-m", "celery", "-b", fleet.url, "inspect", "ping", "--timeout", "2"],
        capture_output=True, text=True, env=env, cwd=fleet.folder, timeout=60)
    assert plain_cli.returncode == 0, plain_cli.stderr
    assert "plain@" in plain_cli.stdout and "kitchen@" not in plain_cli.stdout
    ours_cli = celery_cli(fleet, "inspect", "ping", "--timeout", "2")
    assert ours_cli.returncode == 0, ours_cli.stderr
    assert "kitchen@" in ours_cli.stdout and "plain@" not in ours_cli.stdout
    errors = [line for line in plain_log.read_text().splitlines() if "ERROR" in line]
    assert errors == []  # was: Control command error: ValueError('not enough values to unpack


def celery_cli(fleet: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """The real ``celery -A catdog ...`` in the fleet's folder, as a user runs it."""
    env = {**os.environ, INVENTORY_ENV: str(fleet.path),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "celery", "-A", "catdog", *args],
                          capture_output=True, text=True, env=env, cwd=fleet.folder, timeout=120)


BY_NAME = '''
from catdog import app
from catdog.tasks.examples import _where


@app.task(name="{module}.snap", requires=("camera",))
def snap():
    return _where()


@app.task(name="{module}.gpio", requires=("gpio",))
def gpio():
    return _where()


@app.task(name="{module}.both", requires=("camera", "gpio"))
def both():
    return _where()


@app.task(name="{module}.pinned", target_arg=True)
def pinned(target):
    return _where()
'''


def by_name_fleet(make_fleet: Any) -> tuple[Any, str]:
    """kitchen has a camera, garden nothing, attic (never launched) a camera and gpio; the
    tasks' module is imported by the workers only: the test process sends them by name."""
    module = f"by_name_{uuid.uuid4().hex[:8]}"
    fleet = make_fleet({"kitchen": device_spec(["camera"], pool="threads", concurrency=2),
                        "garden": device_spec([], pool="solo"),
                        "attic": device_spec(["camera", "gpio"])}, imports=[module])
    (fleet.folder / f"{module}.py").write_text(BY_NAME.format(module=module))
    assert module not in sys.modules
    return fleet, module


def test_a_worker_hands_on_a_task_it_may_not_run(make_fleet: Any,
                                                  redis_client: redis.Redis) -> None:
    fleet, module = by_name_fleet(make_fleet)
    assert {r.state for r in fleet.launch(["garden"])} == {READY}

    # published by hand to catdog.any: garden, without a camera, hands it on to the camera queue
    forced = app.send_task(f"{module}.snap", queue=ANY_QUEUE, priority=3)
    camera = capability_queue(["camera"])
    wait_for(lambda: backlog(redis_client, camera) == 1, 30, "garden to hand the task on")
    assert backlog(redis_client, ANY_QUEUE) == 0 and forced.state == "PENDING"
    assert priorities(redis_client, camera) == [3]  # handed on at its own priority
    # a task pinned to kitchen, forced onto garden's own queue: handed on to kitchen's
    misplaced = app.send_task(f"{module}.pinned", ("kitchen",), queue=device_queue("garden"))
    wait_for(lambda: backlog(redis_client, device_queue("kitchen")) == 1, 30,
             "garden to hand the pinned task on")

    assert {r.state for r in fleet.launch(["kitchen"])} == {READY}
    assert forced.get(timeout=30)["device"] == "kitchen"
    assert misplaced.get(timeout=30)["device"] == "kitchen"


def test_tasks_sent_by_name_are_routed_as_from_python(make_fleet: Any,
                                                      redis_client: redis.Redis) -> None:
    fleet, module = by_name_fleet(make_fleet)
    assert {r.state for r in fleet.launch(["kitchen", "garden"])} == {READY}

    # by name, from a process that never imported the task: by the requirements workers publish
    camera = capability_queue(["camera"])
    assert app.amqp.router.route({}, f"{module}.snap")["queue"].name == camera
    sent = [app.send_task(f"{module}.snap") for _ in range(8)]
    assert {r.get(timeout=30)["device"] for r in sent} == {"kitchen"}
    # pinned by its first argument to attic, which is offline: it waits there
    waiting = app.send_task(f"{module}.pinned", ("attic",))
    wait_for(lambda: backlog(redis_client, device_queue("attic")) == 1, 10, "the attic queue")
    assert {app.send_task(f"{module}.pinned", (d,)).get(timeout=30)["device"]
            for d in ("kitchen", "garden")} == {"kitchen", "garden"}
    assert waiting.state == "PENDING"  # run nowhere else meanwhile
    with pytest.raises(UsageError, match="one message reaches one device"):
        app.send_task(f"{module}.pinned", ("all:camera",))

    # the real `celery call`, which imports no task
    called = celery_cli(fleet, "call", f"{module}.gpio")
    assert called.returncode == 0, called.stderr
    assert backlog(redis_client, capability_queue(["gpio"])) == 1


def test_messages_sent_by_name_get_the_default_priority(make_fleet: Any,
                                                        redis_client: redis.Redis) -> None:
    fleet, module = by_name_fleet(make_fleet)
    assert {r.state for r in fleet.launch(["garden"])} == {READY}  # publishes the tasks' needs
    attic = device_queue("attic")
    app.send_task(f"{module}.pinned", ("attic",))
    app.send_task(f"{module}.pinned", ("attic",), queue=attic)
    app.send_task(f"{module}.pinned", ("attic",), queue=attic, priority=7)
    called = celery_cli(fleet, "call", "tasks.run_on", "--args", '["attic", "true"]')
    assert called.returncode == 0, called.stderr
    called = celery_cli(fleet, "call", "tasks.run_on", "--args", '["attic", "true"]', "--queue",
                        attic)
    assert called.returncode == 0, called.stderr
    assert sorted(priorities(redis_client, attic)) == [5, 5, 5, 5, 7]


def test_celery_purge_empties_every_catdog_queue(make_fleet: Any,
                                                 redis_client: redis.Redis) -> None:
    fleet, module = by_name_fleet(make_fleet)
    assert {r.state for r in fleet.launch(["garden"])} == {READY}
    fleet.stop(["garden"])
    sent = {ANY_QUEUE: f"{module}.gpio", device_queue("attic"): f"{module}.pinned",
            capability_queue(["gpio"]): f"{module}.gpio",
            capability_queue(["camera", "gpio"]): f"{module}.both"}
    for queue, name in sent.items():
        for priority in (0, 5, 9):
            app.send_task(name, ("attic",) if "pinned" in name else (), queue=queue,
                          priority=priority)
    assert {q: backlog(redis_client, q) for q in sent} == dict.fromkeys(sent, 3)
    purged = celery_cli(fleet, "purge", "-f")
    assert purged.returncode == 0, purged.stderr
    assert {q: backlog(redis_client, q) for q in sent} == dict.fromkeys(sent, 0), purged.stdout
    assert "Purged 12 messages" in purged.stdout, purged.stdout


def backlog(client: redis.Redis, queue: str) -> int:
    return sum(client.llen(k) for k in queue_keys(queue))


def priorities(client: redis.Redis, queue: str) -> list[int]:
    return [json.loads(m)["properties"]["priority"] for k in queue_keys(queue)
            for m in client.lrange(k, 0, -1)]



RESULTS = '''
import datetime
import decimal
import uuid

from catdog import app
from catdog.tasks import examples


@app.task(name="{module}.when")
def when():
    return {{"at": datetime.datetime(2026, 1, 2, 3, 4, 5), "day": datetime.date(2026, 1, 2)}}


@app.task(name="{module}.ident")
def ident():
    return uuid.UUID("12345678-1234-5678-1234-567812345678")


@app.task(name="{module}.money")
def money():
    return decimal.Decimal("1.25")


@app.task(name="{module}.spawn")
def spawn():
    return examples.whoami.delay()


@app.task(name="{module}.spread")
def spread():
    return examples.whoami.on("all").delay()


@app.task(name="{module}.weird")
def weird():
    return {{1, 2}}
'''


def test_what_kombus_json_encodes_is_a_result_and_the_rest_fails_clearly(make_fleet: Any
                                                                         ) -> None:
    import datetime
    import decimal

    from celery.result import AsyncResult

    module = f"results_{uuid.uuid4().hex[:8]}"
    fleet = make_fleet({"pi": device_spec([], pool="threads", concurrency=2)}, imports=[module])
    (fleet.folder / f"{module}.py").write_text(RESULTS.format(module=module))
    sys.path.insert(0, str(fleet.folder))
    try:
        tasks = __import__(module)
    finally:
        sys.path.remove(str(fleet.folder))
    assert fleet.launch()[0].state == READY

    assert tasks.when.delay().get(timeout=30) == {
        "at": datetime.datetime(2026, 1, 2, 3, 4, 5), "day": datetime.date(2026, 1, 2)}
    assert tasks.ident.delay().get(timeout=30) == uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert tasks.money.delay().get(timeout=30) == decimal.Decimal("1.25")
    (child_id, _parent), _ = tasks.spawn.delay().get(timeout=30)  # the child's id tuple
    assert AsyncResult(child_id, app=app).get(timeout=30)["device"] == "pi"
    (_group_id, _), members = tasks.spread.delay().get(timeout=30)
    assert [AsyncResult(m[0][0], app=app).get(timeout=30)["device"] for m in members] == ["pi"]
    with pytest.raises(TypeError, match="returned a set, which is not JSON: return dicts"):
        tasks.weird.delay().get(timeout=30)
    assert tasks.money.delay().get(timeout=30) == decimal.Decimal("1.25")  # still serving


def test_serves_forward_queue_and_fleet_queues_agree_with_plan() -> None:
    """Unit checks of the worker-side rules on inventory values (no broker)."""
    from catdog.inventory import Device, Inventory
    from catdog.records import TaskRecord, task_records
    from catdog.routing import MAX_SET_CAPABILITIES, fleet_queues, forward_queue, plan, serves

    pi4 = Device("pi4", "10.0.0.2", ("camera", "gpio"))
    zero = Device("zero", "10.0.0.3", ("gpio",))
    inv = Inventory(path=Path("/x/catdog.yaml"), devices={"pi4": pi4, "zero": zero})
    assert serves(pi4, ("camera",)) and not serves(zero, ("camera",))
    assert serves(zero, (), "zero") and not serves(pi4, (), "zero")
    assert serves(pi4, (), "cap:camera") and not serves(zero, (), "all:camera")
    assert serves(zero, (), "all") and not serves(zero, ("camera",), "all")
    assert serves(zero, (), "no such:target")  # the task fails with the target's own error
    assert forward_queue(inv, ("camera",)) == "catdog.cap.camera"
    assert forward_queue(inv, (), "pi4") == "catdog.device.pi4"
    assert forward_queue(inv, ("gpio",), "all:camera") == "catdog.caps.camera+gpio"
    with pytest.raises(NoRoute):
        forward_queue(inv, ("gpu",))
    queues = set(fleet_queues(inv))
    assert queues == {ANY_QUEUE, "catdog.device.pi4", "catdog.device.zero", "catdog.cap.camera",
                      "catdog.cap.gpio", "catdog.caps.camera+gpio"}
    for requires in [(), ("camera",), ("gpio", "camera")]:  # every route is a declared queue
        for target in [None, "pi4", "cap:gpio"]:
            assert set(plan(inv, requires, target).queues) <= queues
    many = Device("many", "local", tuple(f"c{i}" for i in range(MAX_SET_CAPABILITIES + 2)))
    wide = fleet_queues(Inventory(path=Path("/x/catdog.yaml"), devices={"many": many}))
    assert len(wide) == 1 + 1 + 12 + 66  # any, its own, one per capability, and the pairs

    from types import SimpleNamespace

    registry = {"snap": SimpleNamespace(requires=("camera",)), "plain": SimpleNamespace(),
                "run_on": SimpleNamespace(requires=(), target_arg=True),
                "celery.ping": SimpleNamespace()}  # Celery's own tasks are left out
    records = {n: TaskRecord.loads(r) for n, r in task_records(registry).items()}
    assert records == {"snap": TaskRecord(("camera",)), "plain": TaskRecord(),
                       "run_on": TaskRecord((), target_arg=True)}
