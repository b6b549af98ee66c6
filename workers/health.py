"""Health-aware pulling: a hot or throttled device stops taking shared work until it recovers.

On every heartbeat the worker judges the facts it just read (:mod:`workers.facts`): a
temperature over the device's ``health: {max_temp: 80}``, or throttling flags that say
under-voltage or throttled now (unless ``health: {throttled: false}``), make it *degraded*. A
degraded worker cancels its consumers of the shared queues (``catdog.any`` and the capability
queues: Celery's ``cancel_task_queue``, in the event-loop thread) and keeps consuming its own
device queue, so work pinned to it still runs; it consumes them again once the temperature is
:data:`RECOVER_BELOW_C` degrees under the limit (no flapping around it) and the flags are clear.
The heartbeat carries the reason, which ``fab status`` shows as the ``degraded`` state; the
producer's placement leaves a degraded device out of shared targets (:mod:`catdog.placement`).
The kill switch, turned off meanwhile, leaves the withheld queues alone
(:attr:`workers.killswitch.KillSwitch.withheld`).
"""

from __future__ import annotations

import logging
from typing import Any

from catdog.facts import DEGRADING_BITS, THROTTLE_NOW
from catdog.inventory import Device
from catdog.routing import device_queue
from workers.extension import Extension, Worker
from workers.killswitch import KillSwitch

log = logging.getLogger(__name__)

#: a device degraded by heat takes shared work again this many degrees under ``max_temp``
RECOVER_BELOW_C = 3.0


def reasons(health: dict[str, Any], facts: dict[str, Any], hot_already: bool) -> list[str]:
    """Why a device with ``health`` settings and ``facts`` is degraded ([]: it is not).

    >>> reasons({"max_temp": 80.0}, {"temp": 81.5, "throttled": 0x50005}, False)
    ['temperature 81.5C over max_temp 80', 'throttled now: under-voltage, throttled']
    >>> reasons({"max_temp": 80.0}, {"temp": 78.0}, True)  # not yet 3 C under it
    ['temperature 78.0C, not yet under 77 after max_temp 80']
    """
    found = []
    limit, temp = health.get("max_temp"), facts.get("temp")
    if limit is not None and temp is not None:
        if temp > limit:
            found.append(f"temperature {temp}C over max_temp {limit:g}")
        elif hot_already and temp >= limit - RECOVER_BELOW_C:
            found.append(f"temperature {temp}C, not yet under {limit - RECOVER_BELOW_C:g} "
                         f"after max_temp {limit:g}")
    flags = facts.get("throttled") or 0
    now = [THROTTLE_NOW[bit] for bit in DEGRADING_BITS if flags & (1 << bit)]
    if now and health.get("throttled", True):
        found.append(f"throttled now: {', '.join(now)}")
    return found


class Health(Extension):
    """Judges ``device``'s facts on each beat; withholds its shared queues while degraded."""

    def __init__(self, device: Device, switch: KillSwitch) -> None:
        self.device = device
        self.switch = switch
        self.reason = ""
        self.consumer: Any = None
        self.hub: Any = None
        self.shared: list[str] = []

    def on_start(self, worker: Worker) -> None:
        self.consumer, self.hub = worker.consumer, worker.hub
        self.shared = [q for q in worker.queues if q != device_queue(self.device.name)]

    def judge(self, facts: dict[str, Any]) -> str:
        """The reason the device is degraded now ("" when healthy); a change is applied to the
        consumers in the event-loop thread."""
        hot = self.reason.startswith("temperature")
        reason = "; ".join(reasons(dict(self.device.health), facts, hot))
        if bool(reason) != bool(self.reason):
            if self.hub is not None:
                self.hub.call_soon(self.apply, bool(reason))
            else:
                self.apply(bool(reason))
            log.warning("%s: %s", self.device.name, f"degraded, no shared work: {reason}"
                        if reason else "healthy again: taking shared work")
        self.reason = reason
        return reason

    def apply(self, degraded: bool) -> None:
        """Stop or resume consuming the shared queues (call in the event-loop thread)."""
        self.switch.withheld = set(self.shared) if degraded else set()
        consumer = self.consumer
        if consumer is None or consumer.task_consumer is None:
            return
        for queue in self.shared:
            consuming = consumer.task_consumer.consuming_from(queue)
            if degraded and consuming:
                consumer.cancel_task_queue(queue)
            elif not degraded and not consuming and not self.switch.engaged:
                consumer.add_task_queue(queue)
