"""The watchdog: a worker that is connected but no longer consuming restarts itself.

After a broker reconnect a Celery worker can keep its connection and its heartbeat and still never
fetch again (celery/celery#8091, #10205): a process or port check cannot see it. The symptom the
worker itself can see is plain: its queues have a backlog, it has room for more work, it is not
paused by the kill switch, and it has taken nothing for :data:`STUCK_AFTER_S` seconds. A healthy
worker with room takes a waiting message within milliseconds.

The cure is the one an operator would apply: restart the worker, in place (same process id,
same tmux pane, same arguments). The restart is warm, as Celery's own SIGHUP restart: running
tasks finish first. Held messages are safe either way (late acks).

The watchdog is one of the worker's extensions (:mod:`workers.extension`): every message that
reaches the worker is a take (``on_received``), and each heartbeat asks in the same round trip
whether its queues have a backlog (``on_beat``): one ``EXISTS`` over every list of every queue
(a Redis list exists only while it holds a message), which counts the lists that hold work, not
the messages; and only every :data:`CHECK_EVERY_BEATS` beats (10 s), which a 30 s limit
allows. One command every 10 s, where an ``LLEN`` per list (three queues at ten priority
levels) on every beat made an idle worker send 15 commands a second.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from catdog.routing import queue_keys
from workers.extension import Extension, Replies, Worker

log = logging.getLogger(__name__)

STUCK_AFTER_S = 30.0
#: the backlog is looked at on every fifth heartbeat (every 10 s): a stuck worker is restarted
#: 30 to 40 s after its backlog built up
CHECK_EVERY_BEATS = 5
#: a warm restart that has not ended the worker after this long becomes an immediate one
WARM_RESTART_GRACE_S = 120.0


class Watchdog(Extension):
    """Decides, from what each heartbeat sees, whether the worker is stuck; restarts it then.

    ``paused`` tells whether the kill switch holds the worker (a paused worker takes nothing).
    """

    def __init__(self, stuck_after: float = STUCK_AFTER_S,
                 clock: Callable[[], float] = time.monotonic,
                 paused: Callable[[], bool] = lambda: False) -> None:
        self.stuck_after = stuck_after
        self.paused = paused
        self.queues: list[str] = []
        self.queue_keys: list[str] = []
        self.argv: list[str] = []
        self.consumer: Any = None
        self.clock = clock
        self.last_take = clock()
        self.waiting_since: float | None = None  # a backlog seen with room to take it, since
        self.fired = False
        self.beats = 0

    def on_start(self, worker: Worker) -> None:
        self.queues, self.argv, self.consumer = worker.queues, worker.argv, worker.consumer
        self.queue_keys = [key for q in worker.queues for key in queue_keys(q)]

    def took(self, **_: Any) -> None:
        """A message reached the worker (a task, an unknown one or a rejected one)."""
        self.last_take = self.clock()
        self.waiting_since = None

    def on_received(self) -> None:
        self.took()

    def on_beat(self, pipe: Any) -> Replies | None:
        self.beats += 1
        if not self.queue_keys or (self.beats - 1) % CHECK_EVERY_BEATS:
            return None
        pipe.exists(*self.queue_keys)
        return self._seen

    def _seen(self, replies: list[Any]) -> None:
        waiting = int(replies[0] or 0)  # how many of the lists hold a message
        if self.check(waiting, self.has_room(), self.paused()):
            restart_in_place(f"tasks waiting on {', '.join(self.queues)} ({waiting} priority "
                             f"list(s) not empty) but none taken for {self.stuck_after:.0f} s "
                             f"while able to take one (connected but not consuming)", self.argv)

    def has_room(self) -> bool:
        """Whether the worker may take another message (its prefetch allows it)."""
        channel = getattr(getattr(self.consumer, "task_consumer", None), "channel", None)
        qos = getattr(channel, "qos", None)
        return bool(qos is not None and qos.can_consume())

    def check(self, backlog: int, room: bool, paused: bool) -> bool:
        """True once, when the worker has left a backlog untouched for ``stuck_after`` seconds
        while able to take it."""
        now = self.clock()
        if backlog <= 0 or not room or paused:
            self.waiting_since = None
            return False
        if self.waiting_since is None:
            self.waiting_since = now
        idle = now - max(self.waiting_since, self.last_take)
        if idle < self.stuck_after or self.fired:
            return False
        self.fired = True
        return True


def restart_in_place(reason: str, argv: Sequence[str]) -> None:
    """Warm-stop the worker, then run it again in this process (``python -m workers argv``)."""
    from celery.worker import state

    log.error("catdog watchdog: %s; restarting the worker", reason)
    print(f"catdog watchdog: {reason}; restarting the worker", file=sys.stderr, flush=True)
    atexit.register(_exec_again, list(argv))
    state.should_stop = 0  # the consumer loop ends at its next tick: a warm shutdown
    timer = threading.Timer(WARM_RESTART_GRACE_S, _exec_again, (list(argv),))
    timer.daemon = True
    timer.start()


def rerun_argv(argv: Sequence[str]) -> list[str]:
    """The worker's arguments for a restart: the env file was read once and its values are in
    the environment the new image inherits (the file itself may be gone)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--env-file":
            skip = True
        elif not arg.startswith("--env-file="):
            out.append(arg)
    return out


def _exec_again(argv: list[str]) -> None:
    from celery import platforms

    platforms.close_open_fds([sys.__stdin__, sys.__stdout__, sys.__stderr__])
    os.execv(sys.executable, [sys.executable, "-m", "workers", *rerun_argv(argv)])
