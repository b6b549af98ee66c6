"""The kill switch, worker side: a flag cached in the worker's main process, and its consumers.

- At start (``worker_ready``, before the event loop's first tick, hence before any fetch) the
  worker reads the switch from Redis; if it is on, the worker cancels its task queues. It reads
  it again with the ready announcement, once the control channel listens.
- The ``catdog_killswitch`` remote-control command pauses (cancels every task queue) or resumes
  (consumes them again). With ``hard`` it also kills the pool processes running tasks: with late
  acks and reject-on-worker-lost their messages go back to their queues.
- Every other heartbeat (every 4 s) carries the switch back in the same round trip, so a worker
  that missed a broadcast, say while reconnecting, still converges (one ``GET`` every 4 s: an
  idle device's broker traffic is counted in docs/performance.md).
- Before each task starts, the cached flag is looked at (no Redis round trip): a task that slipped
  in between the switch and the cancel goes back to its queue unstarted.

All changes to consumers happen in the worker's event-loop thread. The switch is one of the
worker's extensions (:mod:`workers.extension`); the gate asks it too.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

from celery.worker import state

from catdog.records import KILLSWITCH_COMMAND, KILLSWITCH_KEY, Switch
from workers.extension import Extension, Replies, Worker

log = logging.getLogger(__name__)

#: the switch is read back on one heartbeat in this many
READ_EVERY_BEATS = 2


class KillSwitch(Extension):
    def __init__(self) -> None:
        self.engaged = False
        #: when the switch this worker follows was set (a stale read never undoes a newer one)
        self.at = 0.0
        self.queues: list[str] = []
        self.consumer: Any = None
        self.hub: Any = None
        #: called after each change (the heartbeat reports the new state at once)
        self.on_change: Callable[[], None] = lambda: None
        self.beats = 0
        #: queues not to consume again on resuming: the shared ones of a degraded device
        #: (:mod:`workers.health`)
        self.withheld: set[str] = set()

    def attach(self, consumer: Any, queues: Sequence[str]) -> None:
        self.consumer = consumer
        self.queues = list(queues)

    def on_start(self, worker: Worker) -> None:
        """Honour the switch now: a switch that is on cancels the task queues before any fetch."""
        self.attach(worker.consumer, worker.queues)
        self.hub = worker.hub
        self.on_change = worker.wake
        recorded = Switch.loads(worker.redis.get(KILLSWITCH_KEY))
        if recorded.on:
            self.apply(True, at=recorded.at)

    def on_ready(self, pipe: Any) -> Replies:
        """The switch again, now that the control channel listens: one turned on between the
        first read and the subscription reached no broadcast to this worker."""
        pipe.get(KILLSWITCH_KEY)
        return lambda replies: self.follow(Switch.loads(replies[0]))

    def on_beat(self, pipe: Any) -> Replies | None:
        self.beats += 1
        if (self.beats - 1) % READ_EVERY_BEATS:
            return None
        pipe.get(KILLSWITCH_KEY)
        return self._caught_up

    def _caught_up(self, replies: list[Any]) -> None:
        wanted = Switch.loads(replies[0])
        if wanted.on != self.engaged and self.hub is not None:
            self.hub.call_soon(self.follow, wanted)  # a missed broadcast: catch up

    def follow(self, wanted: Switch) -> None:
        """Bring the switch to ``wanted`` (in the event-loop thread), unless the worker already
        follows a newer one (a read from before a broadcast must not undo it)."""
        if wanted.on != self.engaged and wanted.at > self.at:
            self.apply(wanted.on, at=wanted.at)

    def apply(self, on: bool, hard: bool = False, at: float = 0.0) -> dict[str, Any]:
        """Pause or resume this worker (call in its event-loop thread)."""
        self.engaged = on
        self.at = max(self.at, at)
        consumer = self.consumer
        if consumer is None or consumer.task_consumer is None:
            return {"paused": on}
        for queue in self.queues:
            consuming = consumer.task_consumer.consuming_from(queue)
            if on and consuming:
                consumer.cancel_task_queue(queue)
            elif not on and not consuming and queue not in self.withheld:
                consumer.add_task_queue(queue)
        reply: dict[str, Any] = {"paused": on, "running": len(state.active_requests)}
        if on and hard:
            reply.update(self._terminate_running())
        log.warning("kill switch %s: %s", "on" if on else "off",
                    "no new task starts" if on else "consuming again")
        self.on_change()
        return reply

    def _terminate_running(self) -> dict[str, int]:
        """Kill the pool processes running tasks; their messages are re-queued by Celery."""
        killed = left = 0
        for request in list(state.active_requests):
            pid = getattr(request, "worker_pid", None)
            if pid and pid != os.getpid():
                request._catdog_terminated = True  # not a loss the quarantine counts
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
            else:  # solo and threads pools run tasks in this process: they cannot be cut short
                left += 1
        return {"terminated": killed, "left_running": left}


def register_control_command(switch: KillSwitch) -> None:
    """Teach this worker the ``catdog_killswitch`` remote-control command (for ``switch``)."""
    from celery.worker.control import control_command

    @control_command(name=KILLSWITCH_COMMAND, args=[("on", bool), ("hard", bool), ("at", float)],
                     signature="<on> [hard] [at]")
    def catdog_killswitch(panel: Any, on: bool = True, hard: bool = False,
                          at: float = 0.0) -> dict[str, Any]:
        """Pause (``on``) or resume this worker's task consumers."""
        return switch.apply(bool(on), bool(hard), float(at))
