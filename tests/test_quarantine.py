"""Poison tasks are quarantined, not redelivered for ever, on real workers.

A task that ``os._exit``s and one that runs its pool process out of memory under a cgroup v1
memory limit (the kernel's OOM killer ends it) are each held after exactly their
``max_deliveries`` worker losses, moving from device to device meanwhile, while the fleet keeps
serving other work and loses none of it; a task that raises is not counted. ``fab quarantine``
lists, requeues (the very message runs again) and drops; ``fab status`` says how many are held.
A whole worker lost (a solo pool) counts too, found by the next delivery; a task the hard kill
switch terminates does not.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis
from celery.result import AsyncResult

from catdog import app, killswitch
from catdog.errors import UsageError
from catdog.quarantine import QUARANTINE_KEY, Entry, entries
from catdog.records import EXIT_LINE, POOL_PROCESS_DIED, WORKER_LOST
from catdog.routing import device_queue, queue_keys
from ops import api, commands
from ops.results import READY

from .chaos.breaks import worker_pids
from .conftest import FleetUnderTest, device_spec

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SOURCE = '''
import os, time
import redis
from catdog import app
from catdog.fleet import fleet


def _client():
    return redis.Redis.from_url(os.environ["CATDOG_BROKER_URL"])


def _note(what, n):
    _client().rpush("MODULE:starts", f"{what} {n} {time.time()} {fleet.device.name}")


@app.task(name="MODULE.work")
def work(n, seconds=0.0):
    _note("work", n)
    time.sleep(seconds)
    return n


@app.task(name="MODULE.exits", max_deliveries=3)
def exits(n):
    _note("exits", n)
    os._exit(1)


@app.task(name="MODULE.hog")
def hog(n):
    _note("hog", n)
    held = []
    while True:  # each chunk written, so its pages count against the cgroup's limit
        held.append(b"\\x01" * (16 << 20))


@app.task(name="MODULE.raises")
def raises(n):
    _note("raises", n)
    raise ValueError(f"bad argument {n}")


@app.task(name="MODULE.flaky")
def flaky(n):
    _note("flaky", n)
    if _client().exists("MODULE:poison"):
        os._exit(3)
    return n
'''

MEMORY = Path("/sys/fs/cgroup/memory")
MEMORY_LIMIT = 320 << 20


def write_tasks(folder: Path, module: str) -> ModuleType:
    (folder / f"{module}.py").write_text(SOURCE.replace("MODULE", module))
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(folder))


def starts(client: redis.Redis, module: str, what: str) -> list[tuple[int, str]]:
    rows = [raw.decode().split() for raw in client.lrange(f"{module}:starts", 0, -1)]
    return [(int(n), device) for kind, n, _, device in rows if kind == what]


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)
    return found


def held(client: redis.Redis) -> dict[str, Entry]:
    return {e.id: e for e in entries(client)}


@contextlib.contextmanager
def memory_cgroup(limit: int) -> Iterator[Path]:
    """A cgroup v1 memory group of its own under this process's, limited to ``limit`` bytes
    (swap included); what is still in it at the end goes back to the parent, then it is gone."""
    own = next(line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()
               if "memory" in line.split(":")[1].split(","))
    group = MEMORY / own.lstrip("/") / f"catdog-test-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        (group / "memory.limit_in_bytes").write_text(str(limit))
        if (group / "memory.memsw.limit_in_bytes").exists():
            (group / "memory.memsw.limit_in_bytes").write_text(str(limit))
        yield group
    finally:
        deadline = time.monotonic() + 20
        while True:  # (a pool may fork a process into it while the others move out)
            for pid in (group / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    (group.parent / "cgroup.procs").write_text(pid)
            try:
                group.rmdir()
                break
            except OSError:
                assert time.monotonic() < deadline, f"{group} still in use"
                time.sleep(0.1)


def confine(fleet: FleetUnderTest, device: str, group: Path) -> list[int]:
    """Move the device's worker (its whole process tree) into ``group``."""
    pids = worker_pids(fleet, device)
    for pid in pids:
        (group / "cgroup.procs").write_text(str(pid))
    return pids


@pytest.fixture
def tasks(make_fleet, tmp_path: Path) -> Iterator[tuple[FleetUnderTest, ModuleType, str]]:
    module = f"poison_{uuid.uuid4().hex[:8]}"
    fleet = make_fleet({"qa": device_spec(["q"], concurrency=2),
                        "qb": device_spec(["q"], concurrency=2)}, imports=[module])
    yield fleet, write_tasks(fleet.folder, module), module
    fleet.stop(force=True)


def test_tasks_killing_their_pool_process_are_held_after_exactly_their_limit(
        tasks, redis_client: redis.Redis) -> None:
    fleet, mod, module = tasks
    with memory_cgroup(MEMORY_LIMIT) as qa_group, memory_cgroup(MEMORY_LIMIT) as qb_group:
        assert [r.state for r in fleet.launch()] == [READY, READY]
        confine(fleet, "qa", qa_group)
        confine(fleet, "qb", qb_group)
        work = [mod.work.on("cap:q").delay(n, 0.2) for n in range(10)]
        exits = mod.exits.on("cap:q").delay(100)  # max_deliveries=3, the task's own
        hog = mod.hog.on("cap:q").apply_async((200,), max_deliveries=2)  # for this call
        raises = mod.raises.on("cap:q").delay(300)
        work += [mod.work.on("cap:q").delay(n, 0.2) for n in range(10, 30)]

        found = wait_for(lambda: len(held(redis_client)) == 2 and held(redis_client), 120,
                         "both poison tasks quarantined")
        assert [r.get(timeout=60) for r in work] == list(range(30))  # served throughout
    assert sorted(n for n, _ in starts(redis_client, module, "work")) == list(range(30))

    exited, hogged = found[exits.id], found[hog.id]
    assert len(starts(redis_client, module, "exits")) == 3 == len(exited.losses)
    assert len(starts(redis_client, module, "hog")) == 2 == len(hogged.losses)
    assert (exited.task, exited.args, exited.max_deliveries) == (f"{module}.exits", [100], 3)
    assert (hogged.task, hogged.args, hogged.max_deliveries) == (f"{module}.hog", [200], 2)
    for loss in exited.losses:
        assert (loss.how, loss.exit_status, loss.signal, loss.oom) == (POOL_PROCESS_DIED, 1,
                                                                        None, False)
    for loss in hogged.losses:
        assert (loss.how, loss.signal, loss.oom) == (POOL_PROCESS_DIED, 9, True)
    for entry in (exited, hogged):
        assert [loss.device for loss in entry.losses] == [d for _, d in starts(
            redis_client, module, entry.task.rsplit(".", 1)[1])]
        assert all(loss.started and loss.lost and loss.lost >= loss.started and loss.node
                   for loss in entry.losses)
        assert entry.keys and entry.message["headers"]["id"] == entry.id

    with pytest.raises(Exception, match="quarantined after 3 worker loss") as caught:
        exits.get(timeout=10)
    assert type(caught.value).__name__ == "Quarantined"
    with pytest.raises(ValueError, match="bad argument 300"):  # raised: not counted
        raises.get(timeout=10)
    assert len(starts(redis_client, module, "raises")) == 1

    wait_for(lambda: not redis_client.keys("catdog:delivery:*"), 10,
             "every settled message's delivery record removed")
    lost_by = {d: sum(d in e.devices for e in found.values()) for d in ("qa", "qb")}
    def idle() -> list[dict[str, Any]] | None:
        rows = api.status(str(fleet.path))
        return rows if {r["state"] for r in rows} == {"idle"} else None

    rows = wait_for(idle, 10, "both devices idle, serving (their heartbeat comes every 2 s)")
    assert {r["device"]: r["quarantined"] for r in rows} == lost_by
    assert sum(lost_by.values()) >= 2


def run(command: Any, capsys: pytest.CaptureFixture[str], *args: Any, **given: Any
        ) -> tuple[int, str, str]:
    status = command(*args, **given)
    out, err = capsys.readouterr()
    return status, out, err


def test_fab_quarantine_lists_requeues_the_very_message_and_drops(
        tasks, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    fleet, mod, module = tasks
    assert [r.state for r in fleet.launch()] == [READY, READY]
    redis_client.set(f"{module}:poison", 1)
    flaky = mod.flaky.on("qa").apply_async((7,), max_deliveries=1)
    exits = mod.exits.on("qb").apply_async((8,), max_deliveries=1)
    wait_for(lambda: len(held(redis_client)) == 2, 60, "both held")

    status, out, err = run(commands.quarantine, capsys, str(fleet.path), json=True)
    listed = json.loads(out)
    assert status == 0 and listed["action"] == "listed"
    assert {(e["id"], e["task"], tuple(e["args"]), len(e["losses"])) for e in listed["entries"]} \
        == {(flaky.id, f"{module}.flaky", (7,), 1), (exits.id, f"{module}.exits", (8,), 1)}
    assert [loss["exit_status"] for e in listed["entries"] for loss in e["losses"]
            if e["id"] == flaky.id] == [3]
    assert "message" not in listed["entries"][0]
    status, out, _ = run(commands.quarantine, capsys, str(fleet.path))
    assert status == 0 and flaky.id in out and "exit status 3" in out and "--requeue" in out

    redis_client.delete(f"{module}:poison")  # what made it fail is fixed: run it again
    status, out, _ = run(commands.quarantine, capsys, str(fleet.path), requeue=flaky.id)
    assert status == 0 and f"requeued {flaky.id}" in out
    wait_for(lambda: AsyncResult(flaky.id, app=app).state == "SUCCESS", 30, "requeued ran")
    assert AsyncResult(flaky.id, app=app).get(timeout=5) == 7
    assert starts(redis_client, module, "flaky") == [(7, "qa"), (7, "qa")]  # its own queue
    assert list(held(redis_client)) == [exits.id]

    status, out, _ = run(commands.quarantine, capsys, str(fleet.path), drop=exits.id, json=True)
    assert status == 0 and json.loads(out)["action"] == "dropped"
    assert not redis_client.exists(QUARANTINE_KEY)
    assert len(starts(redis_client, module, "exits")) == 1  # dropped: never ran again

    for given in ({"requeue": "no-such-id"}, {"drop": "no-such-id"}):
        status, out, err = run(commands.quarantine, capsys, str(fleet.path), **given)
        assert status == 2 and out == "" and len(err.strip().splitlines()) == 1
        assert "no-such-id" in err and "`fab quarantine` lists" in err
    status, _, err = run(commands.quarantine, capsys, str(fleet.path), requeue="a", drop="b")
    assert status == 2 and "choose one" in err


def test_tasks_the_hard_kill_switch_terminates_are_not_counted(
        tasks, redis_client: redis.Redis) -> None:
    fleet, mod, module = tasks
    assert [r.state for r in fleet.launch(["qa"])] == [READY]
    long_one = mod.work.on("qa").apply_async((5, 4.0), max_deliveries=1)
    wait_for(lambda: starts(redis_client, module, "work"), 20, "the task started")
    try:
        report = killswitch.engage("hard stop", hard=True, by="pytest")
        assert "1 running task(s) terminated" in report.devices[0]["detail"]
        wait_for(lambda: not long_one.ready() and sum(
            redis_client.llen(k) for k in queue_keys(device_queue("qa"))) == 1, 20,
            "the terminated task back in its queue")
    finally:
        killswitch.release(by="pytest")
    assert long_one.get(timeout=30) == 5  # ran again: the operator's kill is no worker loss
    assert starts(redis_client, module, "work") == [(5, "qa"), (5, "qa")]
    assert not redis_client.exists(QUARANTINE_KEY)


def test_a_lost_whole_worker_counts_found_by_the_next_delivery(
        make_fleet, redis_client: redis.Redis) -> None:
    module = f"poison_{uuid.uuid4().hex[:8]}"
    fleet = make_fleet({"qs": device_spec([], pool="solo")}, imports=[module])
    mod = write_tasks(fleet.folder, module)
    assert [r.state for r in fleet.launch()] == [READY]
    exits = mod.exits.on("qs").apply_async((9,), max_deliveries=1)
    wait_for(lambda: fleet.tmux("list-panes", "-t", "catdog-qs", "-F",
                                "#{pane_dead}").stdout.strip() == "1", 30, "the worker died")
    assert [r.state for r in fleet.launch()] == [READY]  # back; it finds the message again
    entry = wait_for(lambda: held(redis_client).get(exits.id), 150,
                     "held once the message came back (visibility timeout 60 s)")
    assert len(starts(redis_client, module, "exits")) == 1
    [loss] = entry.losses
    assert (loss.device, loss.how, loss.exit_status, loss.oom) == ("qs", WORKER_LOST, None, None)
    assert loss.started is not None and entry.held_by == "qs"
    assert mod.work.on("qs").delay(1).get(timeout=30) == 1  # and it serves
    fleet.stop(force=True)


def test_max_deliveries_below_one_or_not_a_whole_number_is_refused(make_fleet) -> None:
    fleet = make_fleet({"qa": device_spec([])})  # (not launched: the call is refused first)
    def risky() -> None:
        pass

    for bad in (0, -1, "3", 2.5, True, None):
        with pytest.raises(UsageError, match=r"max_deliveries must be a whole number of 1 or "
                                             r"more .* leave it out for the default 3"):
            app.task(name=f"bad_{uuid.uuid4().hex[:6]}", max_deliveries=bad, shared=False,
                     lazy=False)(risky)
    module = f"poison_{uuid.uuid4().hex[:8]}"
    mod = write_tasks(fleet.folder, module)
    for bad in (0, -2, "1"):
        with pytest.raises(UsageError, match=f"task '{module}.work': max_deliveries"):
            mod.work.apply_async((1,), max_deliveries=bad, queue="catdog.nowhere")


def test_a_worker_whose_task_has_max_deliveries_0_refuses_to_start_in_one_line(
        make_fleet, redis_url: str) -> None:
    fleet = make_fleet({"qa": device_spec([])}, imports=["bad_poison"])
    (fleet.folder / "bad_poison.py").write_text(
        "from catdog import app\n\n\n@app.task(max_deliveries=0)\ndef risky():\n    pass\n")
    done = subprocess.run([sys.executable, "-m", "workers", "--device", "qa", "--inventory",
                           str(fleet.path)], cwd=fleet.folder, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    line, last = done.stderr.strip().splitlines()  # (the last: the exit status, for tmux)
    assert last == EXIT_LINE.format(status=2)
    assert "task 'bad_poison.risky': max_deliveries must be a whole number of 1 or more" in line
    assert "got 0; leave it out for the default 3" in line


def test_a_requeue_goes_only_to_catdogs_own_queues_and_a_bad_entry_is_left_out(
        redis_client: redis.Redis) -> None:
    from catdog.quarantine import Loss, hold, requeue

    redis_client.flushdb()
    entry = Entry(id="forged", task="x.y", args=[], kwargs={}, max_deliveries=1,
                  losses=[Loss(device="qa")], held_at=time.time(), held_by="qa",
                  keys=["celery", "catdog.any"], message={"body": "e30="})
    hold(redis_client, entry)
    with pytest.raises(UsageError, match=r"names no CatDog queue to go back to \(celery\); "
                                         r"`fab quarantine --drop forged`"):
        requeue(redis_client, "forged")
    assert not redis_client.exists("celery") and not redis_client.exists("catdog.any")
    assert list(held(redis_client)) == ["forged"]  # still held
    redis_client.hset(QUARANTINE_KEY, "scribbled", "not an entry")
    assert list(held(redis_client)) == ["forged"]  # one that does not read is left out


def test_the_oom_count_is_read_from_the_most_specific_place_the_kernel_keeps_it(
        tmp_path: Path) -> None:
    """The files as the kernels write them (v1 with and without ``oom_kill``, v2, vmstat only)."""
    from workers.oom import OomCounter

    proc, cgroups = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "vmstat").write_text("nr_free_pages 1\noom_kill 7\n")
    counter = OomCounter(proc, cgroups)
    membership = proc / "self" / "cgroup"
    membership.write_text("4:memory:/lab/w\n0::/\n")
    v1 = cgroups / "memory" / "lab" / "w"
    v1.mkdir(parents=True)
    (v1 / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    (v1 / "memory.failcnt").write_text("40\n")
    before = counter.read()
    assert before == (str(v1 / "memory.oom_control"), 2)
    (v1 / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    assert (counter.involved(9, before), counter.involved(None, before)) == (True, False)
    assert counter.involved(9, counter.read()) is False  # SIGKILL, but not the OOM killer's
    (v1 / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\n")  # before 4.13
    assert counter.read() == (str(v1 / "memory.failcnt"), 40)
    membership.write_text("0::/user.slice/w\n")  # cgroup v2 only
    v2 = cgroups / "user.slice" / "w"
    v2.mkdir(parents=True)
    (v2 / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
    assert counter.read() == (str(v2 / "memory.events"), 1)
    assert counter.involved(9, before) is None  # counted elsewhere since: not known
    membership.write_text("0::/\n")
    assert counter.read() == (str(proc / "vmstat"), 7)
    (proc / "vmstat").write_text("nr_free_pages 1\n")
    assert counter.read() is None and counter.involved(9, None) is None
