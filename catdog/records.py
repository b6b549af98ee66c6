"""The small records workers keep in Redis beside the broker's own keys.

- ``catdog:ready:<device>``: a list the worker pushes one JSON record to when it is ready to serve;
  the launcher blocks on it (no polling, no fixed sleeps) and then pings the node by name.
- ``catdog:heartbeat:<device>``: the worker's latest heartbeat (JSON), refreshed every
  :data:`HEARTBEAT_INTERVAL_S` seconds and expiring after :data:`HEARTBEAT_TTL_S`.
- ``catdog:facts:<device>``: the static facts of the device's worker (JSON), kept a week, and
  ``catdog:live:<device>``: the heartbeat's part placement reads (:class:`Live`).
- ``catdog:killswitch``: the kill switch (JSON :class:`Switch`), read by every worker at start.
- ``catdog:autostart``: a hash, device -> its systemd unit (JSON), written by ``fab enable`` and
  removed by ``fab disable``; ``fab status`` reads it for the ``enabled`` field.
- ``catdog:tasks``: a hash, task name -> what it needs (JSON :class:`TaskRecord`), written by
  every worker as it starts, so a task sent by name from a process that never imported it
  (``celery call``, Flower, ``app.send_task``) is routed as a call from Python is.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from catdog.errors import UsageError

HEARTBEAT_INTERVAL_S = 2.0
HEARTBEAT_TTL_S = 30
OFFLINE_AFTER_S = 8.0  # 4 heartbeats missed: offline within 8 s of dying (the contract: 10 s)


def ready_key(device: str) -> str:
    return f"catdog:ready:{device}"


def heartbeat_key(device: str) -> str:
    return f"catdog:heartbeat:{device}"


#: a device's static facts (:mod:`catdog.facts`), written as its worker gets ready and kept a
#: week: what a device can ever satisfy is known while it is offline
FACTS_TTL_S = 7 * 24 * 3600


def facts_key(device: str) -> str:
    return f"catdog:facts:{device}"


def live_key(device: str) -> str:
    return f"catdog:live:{device}"


#: the facts that change while a worker runs, in the order a :class:`Live` record lists them
LIVE_FACTS = ("mem", "temp", "throttled", "load")


@dataclass(frozen=True)
class Live:
    """What placement reads of a device on every call with predicates, written with each
    heartbeat (``catdog:live:<device>``, a short JSON list: 32 of them parse in a fraction of
    the time 32 heartbeats do). ``started`` tells the producer whether the static facts it
    keeps are still this worker's."""

    time: float
    started: float
    active: int
    paused: bool
    degraded: str
    facts: dict[str, Any]

    @classmethod
    def of(cls, beat: Heartbeat) -> Live:
        return cls(beat.time, beat.started, beat.active, beat.paused, beat.degraded,
                   {k: beat.facts.get(k) for k in LIVE_FACTS})

    def dumps(self) -> str:
        return json.dumps([self.time, self.started, self.active, self.paused, self.degraded,
                           *(self.facts.get(k) for k in LIVE_FACTS)], separators=(",", ":"))

    @classmethod
    def loads(cls, data: str | bytes) -> Live:
        return cls.of_list(json.loads(data))

    @classmethod
    def of_list(cls, fields: list[Any]) -> Live:
        time_, started, active, paused, degraded, *facts = fields
        return cls(time_, started, active, paused, degraded, dict(zip(LIVE_FACTS, facts,
                                                                      strict=True)))

    @classmethod
    def loads_many(cls, records: list[bytes]) -> list[Live]:
        """Many records parsed at once (one JSON document of them all: a third of the time)."""
        return [cls.of_list(f) for f in json.loads(b"[" + b",".join(records) + b"]")]

    def age(self, now: float) -> float:
        return now - self.time

    def is_fresh(self, now: float) -> bool:
        """:meth:`Heartbeat.is_fresh`, of the heartbeat this was written with."""
        return self.age(now) <= OFFLINE_AFTER_S


#: remote-control command: write buffered task metrics now (``fab metrics``)
METRICS_FLUSH_COMMAND = "catdog_metrics_flush"
#: message header: when the caller sent the task (epoch seconds), for the queue wait
SENT_HEADER = "catdog_sent"
#: message headers: a call's own ``window=``, ``limit=`` and ``window_close=`` (the worker's gate
#: reads them before the task's own defaults)
WINDOW_HEADER = "catdog_window"
LIMIT_HEADER = "catdog_limit"
CLOSE_HEADER = "catdog_window_close"
#: message header: a call's own ``max_deliveries=`` (worker losses before quarantine)
MAX_DELIVERIES_HEADER = "catdog_max_deliveries"
#: ``apply_async`` option -> the header that carries it to the worker
CONTROL_HEADERS = {"window": WINDOW_HEADER, "limit": LIMIT_HEADER, "window_close": CLOSE_HEADER,
                   "max_deliveries": MAX_DELIVERIES_HEADER}

#: poison tasks (:mod:`catdog.quarantine`): worker losses after which a message is quarantined,
#: unless the task or the call says otherwise; each message's delivery record
#: worker losses after which a message is quarantined, unless the task or the call says otherwise
DEFAULT_MAX_DELIVERIES = 3
#: a delivery record outlives no message: one left behind (its worker died as the task settled)
#: expires after a week
DELIVERY_TTL_S = 7 * 24 * 3600
#: how a delivery was lost
POOL_PROCESS_DIED = "pool process died"
WORKER_LOST = "worker lost"


def delivery_key(tag: str) -> str:
    return f"catdog:delivery:{tag}"


def checked_max_deliveries(value: Any, where: str) -> int:
    """``value`` as a number of worker losses (an int, 1 or more), else a UsageError naming
    ``where`` it was given and the fix.

    >>> checked_max_deliveries(2, "task 'x'")
    2
    >>> checked_max_deliveries(0, "task 'x'")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    catdog.errors.UsageError: task 'x': max_deliveries must be a whole number of 1 or more ...
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{where}: max_deliveries must be a whole number of 1 or more (worker "
                         f"losses before the message is quarantined), got {value!r}; leave it "
                         f"out for the default {DEFAULT_MAX_DELIVERIES}")
    return value


TASKS_KEY = "catdog:tasks"
AUTOSTART_KEY = "catdog:autostart"
#: message header: how many times workers handed the message on to another queue
HOPS_HEADER = "catdog_hops"

KILLSWITCH_KEY = "catdog:killswitch"
#: the remote-control command workers answer to pause (``on``) or resume
KILLSWITCH_COMMAND = "catdog_killswitch"


@dataclass
class Switch:
    """The kill switch: who turned it on or off, when, and why."""

    on: bool
    reason: str = ""
    by: str = ""
    at: float = 0.0
    hard: bool = False

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, data: str | bytes | None) -> Switch:
        if not data:
            return cls(on=False)
        raw: dict[str, Any] = json.loads(data)
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})


#: kombu's own separator in its binding tables (``kombu.transport.redis.Channel.sep``)
KOMBU_SEP = b"\x06\x16"
#: Celery's binding tables that CatDog workers before 0.1.0 wrote to, with ":" as separator
CELERY_BINDINGS = ("_kombu.binding.celery.pidbox", "_kombu.binding.reply.celery.pidbox",
                   "_kombu.binding.celeryev")


def drop_stale_bindings(client: Any) -> int:
    """Remove from Celery's own binding tables the entries an older CatDog wrote there, which a
    plain Celery app cannot read (``ValueError: not enough values to unpack``); returns how many.
    Only entries of that exact shape go (``<key>:<pattern>:<queue>``, no kombu separator)."""
    removed = 0
    for key in CELERY_BINDINGS:
        stale = [m for m in client.smembers(key) if KOMBU_SEP not in m and m.count(b":") == 2]
        if stale:
            removed += int(client.srem(key, *stale))
    return removed


@dataclass(frozen=True)
class TaskRecord:
    """What a task needs, as its workers publish it: capabilities, and a target first argument."""

    requires: tuple[str, ...] = ()
    target_arg: bool = False

    @classmethod
    def of(cls, task: Any) -> TaskRecord:
        return cls(tuple(getattr(task, "requires", ()) or ()),
                   bool(getattr(task, "target_arg", False)))

    def dumps(self) -> str:
        return json.dumps({"requires": list(self.requires), "target_arg": self.target_arg},
                          separators=(",", ":"))

    @classmethod
    def loads(cls, data: str | bytes) -> TaskRecord:
        raw: dict[str, Any] = json.loads(data)
        return cls(tuple(str(c) for c in raw.get("requires") or ()),
                   bool(raw.get("target_arg")))


def task_records(tasks: Any) -> dict[str, str]:
    """The record of every CatDog task in a registry (Celery's own ``celery.*`` left out)."""
    return {name: TaskRecord.of(task).dumps() for name, task in dict(tasks).items()
            if not name.startswith("celery.")}


@dataclass
class Heartbeat:
    device: str
    nodename: str
    pid: int
    time: float
    started: float
    active: int = 0
    active_names: list[str] = field(default_factory=list)
    done: int = 0
    failed: int = 0
    queues: list[str] = field(default_factory=list)
    paused: bool = False
    #: 1-minute load average of the device, the worker's memory (main process and pool), and
    #: the device's available memory
    load: float | None = None
    rss_mb: float | None = None
    mem_available_mb: float | None = None
    #: the release the worker runs (:mod:`catdog.release`), None when started from no release
    release: str | None = None
    #: what the device reports about itself (:mod:`catdog.facts`)
    facts: dict[str, Any] = field(default_factory=dict)
    #: why the device takes no shared work now (:mod:`workers.health`), "" when healthy
    degraded: str = ""

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    def age(self, now: float) -> float:
        """Seconds since the worker wrote this heartbeat."""
        return now - self.time

    def is_fresh(self, now: float) -> bool:
        """Whether the worker counts as alive at ``now``: the one test ``fab status``, ``fab
        metrics`` and the kill switch's report use (written within :data:`OFFLINE_AFTER_S`).

        >>> beat = Heartbeat("pi", "celery@pi", 1, time=100.0, started=90.0)
        >>> beat.is_fresh(100.0 + OFFLINE_AFTER_S), beat.is_fresh(100.1 + OFFLINE_AFTER_S)
        (True, False)
        """
        return self.age(now) <= OFFLINE_AFTER_S

    @classmethod
    def loads(cls, data: str | bytes) -> Heartbeat:
        raw: dict[str, Any] = json.loads(data)
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        return cls(**known)


EXIT_LINE = "[catdog] worker exiting with status {status}"
_EXIT_RE = re.compile(r"^\[catdog\] worker exiting with status (-?\d+)$")


def exit_status_from(lines: list[str]) -> int | None:
    """The status a worker printed as its last word (tmux sometimes never records it).

    >>> exit_status_from(["boom", EXIT_LINE.format(status=3)])
    3
    """
    for line in reversed(lines):
        found = _EXIT_RE.match(line.strip())
        if found:
            return int(found.group(1))
    return None


def live_nodes(client: Any, devices: list[str], now: float | None = None) -> dict[str, str]:
    """The Celery node name of each device whose heartbeat is fresh (one MGET), by device."""
    if not devices:
        return {}
    now = time.time() if now is None else now
    beats = {d: Heartbeat.loads(raw)
             for d, raw in zip(devices, client.mget([heartbeat_key(d) for d in devices]),
                               strict=True) if raw}
    return {d: b.nodename for d, b in beats.items() if b.is_fresh(now)}
