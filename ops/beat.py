"""The fleet's scheduler: Celery beat over the inventory's ``schedule:``, one active fleet-wide.

``python -m ops.beat --inventory PATH [--env-file F]`` runs it (``fab beat`` starts it in tmux
session ``catdog-beat`` and returns). However many are started, from however many machines on the
same broker, only the holder of a Redis lease (``catdog:beat:lock``, :data:`LEASE_S` seconds,
renewed every tick) fires; the others stand by and take over within :data:`LEASE_S` + 1 s when
the active one dies. When each entry last fired is kept in Redis, so a standby that takes over
does not fire again what the old one just fired.

Scheduling is Celery beat's own (``every:`` -> ``schedule``, ``cron:`` -> ``crontab`` in the
inventory's timezone). A beat missed while the scheduler was down fires once, not in a burst,
and every message carries ``expires`` = the time to the next tick, so ticks that devices could
not take in time expire instead of piling up. A tick outside its entry's ``window`` is skipped;
an entry's ``limit`` goes with the message (the worker defers it until the limit allows).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
from celery.beat import ScheduleEntry as CeleryEntry
from celery.beat import Scheduler
from celery.schedules import crontab, schedule

from catdog import broker
from catdog.inventory import Inventory, ScheduleEntry
from catdog.windows import now_in

log = logging.getLogger("catdog.beat")

LOCK_KEY = "catdog:beat:lock"
LAST_RUN_KEY = "catdog:beat:last-run"
NODE_KEY = "catdog:beat:node:"
LEASE_S = 10.0
TICK_S = 1.0

# KEYS[1]: the lock; ARGV: token, lease (ms). Renew if ours, else take it if free.
HOLD = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def node_key(node: str) -> str:
    return f"{NODE_KEY}{node}"


def celery_schedule(entry: ScheduleEntry) -> Any:
    if entry.every_s is not None:
        return schedule(dt.timedelta(seconds=entry.every_s))
    minute, hour, day, month, weekday = (entry.cron or "* * * * *").split()
    return crontab(minute=minute, hour=hour, day_of_month=day, month_of_year=month,
                   day_of_week=weekday)


class FleetScheduler(Scheduler):
    """Celery's scheduler, firing only while it holds the fleet's lease."""

    def __init__(self, app: Any, inventory: Inventory, client: redis.Redis, node: str,
                 **kwargs: Any) -> None:
        self.inventory = inventory
        self.client = client
        self.node = node
        self.active = False
        self._hold = client.register_script(HOLD)
        self._release = client.register_script(RELEASE)
        super().__init__(app, max_interval=TICK_S, **kwargs)

    def setup_schedule(self) -> None:
        self.data = {
            name: CeleryEntry(name=name, task=e.task, schedule=celery_schedule(e),
                              args=e.args, kwargs=dict(e.kwargs), options={}, app=self.app)
            for name, e in self.inventory.schedule.items()
        }

    @property
    def role(self) -> str:
        return "active" if self.active else "standby"

    def tick(self, *args: Any, **kwargs: Any) -> float:
        holding = bool(self._hold(keys=[LOCK_KEY], args=[self.node, int(LEASE_S * 1000)]))
        if holding and not self.active:
            self._take_over()
        elif not holding and self.active:
            log.warning("lost the lease: standing by")
            self.active = False
        self._record()
        if not self.active:
            return TICK_S
        return min(float(super().tick(*args, **kwargs)), TICK_S)

    def _take_over(self) -> None:
        """Start from when each entry last fired, whoever fired it."""
        last = self.client.hgetall(LAST_RUN_KEY)
        for name, entry in self.data.items():
            raw = last.get(name.encode())
            if raw:
                entry.last_run_at = dt.datetime.fromtimestamp(float(raw), dt.timezone.utc)
        self._heap = None
        self.active = True
        log.warning("active: this scheduler fires the fleet's schedule (%d entries)",
                    len(self.data))

    def reserve(self, entry: Any) -> Any:
        new_entry = super().reserve(entry)
        self.client.hset(LAST_RUN_KEY, entry.name, time.time())
        return new_entry

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True,
                    **kwargs: Any) -> Any:
        spec = self.inventory.schedule[entry.name]
        if spec.window and not spec.window.is_open(now_in(self.inventory.timezone)):
            log.info("%s: tick skipped, outside its window %s", entry.name, spec.window)
            return None
        task = self.app.tasks[entry.task]
        _, next_in = entry.schedule.is_due(dt.datetime.now(dt.timezone.utc))
        options: dict[str, Any] = {"expires": max(1.0, float(next_in)),
                                   "headers": {"celery_beat_task": True}}
        if spec.limit:
            options["limit"] = spec.limit
        if spec.on:
            signature = task.on(spec.on).clone(args=tuple(entry.args), kwargs=dict(entry.kwargs))
            return signature.apply_async(**options)
        return task.apply_async(tuple(entry.args), dict(entry.kwargs), **options)

    def _record(self) -> None:
        self.client.set(node_key(self.node), json.dumps({
            "node": self.node, "role": self.role, "pid": os.getpid(),
            "time": time.time()}), ex=int(LEASE_S * 2))

    def close(self) -> None:
        if self.active:
            self._release(keys=[LOCK_KEY], args=[self.node])
        self.client.delete(node_key(self.node))
        super().close()


def run(inventory: Inventory, broker_url: str, node: str | None = None) -> int:
    from catdog import app

    node = node or f"{socket.gethostname()}:{os.getpid()}"
    client = broker.connect(broker_url)
    scheduler = FleetScheduler(app, inventory, client, node)
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.warning("scheduler %s started: %s", node,
                ", ".join(f"{n} ({e.task})" for n, e in inventory.schedule.items()) or "no entries")
    try:
        while not stopping:
            try:
                delay = scheduler.tick()
            except redis.RedisError as exc:  # the broker is away: stand by and retry
                log.warning("broker unreachable (%s): retrying", exc)
                scheduler.active = False
                delay = TICK_S
            time.sleep(max(0.0, min(delay, TICK_S)))
    finally:
        scheduler.close()
        log.warning("scheduler %s stopped", node)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from catdog import edge

    parser = argparse.ArgumentParser(prog="python -m ops.beat", description=__doc__)
    parser.add_argument("--inventory", required=True)
    parser.add_argument("--env-file", help="a file of VAR=value lines (the broker URL)")
    parser.add_argument("--node", help="this scheduler's name (default host:pid)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="[%(asctime)s] %(name)s %(levelname)s: %(message)s")
    # also when started without `fab beat` (systemd, by hand)
    return edge.run("catdog beat", lambda: start(args))


def start(args: argparse.Namespace) -> int:
    """Load and check the inventory and its schedule's tasks, then :func:`run`."""
    from catdog.errors import InventoryError
    from catdog.fleet import fleet
    from catdog.loader import load_inventory
    from catdog.taskmodules import import_tasks
    from ops.tasknames import unknown_tasks
    from workers.cli import load_env_file

    if args.env_file:
        load_env_file(Path(args.env_file))
    from catdog import app

    inventory = load_inventory(args.inventory)
    fleet.use_loaded(inventory)
    import_tasks(inventory)
    problems = unknown_tasks(inventory, app.tasks)
    if problems:
        raise InventoryError(problems)
    return run(inventory, app.conf.broker_url, args.node)


if __name__ == "__main__":
    sys.exit(main())
