"""The kill switch from Python: stop the whole fleet from starting tasks, and let it go again.

``engage`` records the switch in Redis (so a worker started or restarted while it is on stays
paused) and then broadcasts it with Celery's remote control to the live workers, which cancel
their task queues and answer; it returns once they have. Tasks already running finish (``hard``:
they are terminated and their messages re-queued); queued tasks stay queued. ``release`` undoes
it the same way. ``current`` says whether it is on, who pulled it, when and why. A broker that does
not answer raises :class:`catdog.errors.BrokerUnreachable` within a few seconds::

    from catdog import killswitch
    killswitch.engage("camera firmware update")
    killswitch.current()        # Switch(on=True, reason='camera firmware update', by='ana@lab', ...)
    killswitch.release()

Each takes the fleet to work on as ``context`` (a :class:`catdog.context.FleetContext`, as
``ops.api`` builds one); without it, the process's fleet and app (the task API's default).
"""

from __future__ import annotations

import getpass
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from catdog.context import FleetContext, from_process
from catdog.errors import UsageError
from catdog.inventory import Inventory
from catdog.records import (
    KILLSWITCH_COMMAND,
    KILLSWITCH_KEY,
    Heartbeat,
    Switch,
    heartbeat_key,
    live_nodes,
)

#: how long to wait for the live workers' answers
REPLY_TIMEOUT_S = 1.5


@dataclass
class Report:
    switch: Switch
    #: one row per inventory device: device, state (paused, resumed, offline, no answer), detail
    devices: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**self.switch.__dict__, "devices": self.devices}


def who() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def current(context: FleetContext | None = None) -> Switch:
    """The switch as recorded in Redis (off if never set)."""
    context = context or from_process()
    client = context.answering()
    with context.translated():
        return Switch.loads(client.get(KILLSWITCH_KEY))


def engage(reason: str, *, hard: bool = False, by: str | None = None,
           timeout: float = REPLY_TIMEOUT_S, context: FleetContext | None = None) -> Report:
    """Turn the switch on: no device starts a task until :func:`release`."""
    if not reason.strip():
        raise UsageError("the kill switch needs a reason: --reason TEXT (who reads it later "
                         "will want to know why the fleet stopped)")
    return _set(Switch(on=True, reason=reason.strip(), by=by or who(), at=time.time(), hard=hard),
                timeout, context or from_process())


def release(*, by: str | None = None, timeout: float = REPLY_TIMEOUT_S,
            context: FleetContext | None = None) -> Report:
    """Turn the switch off: devices consume again."""
    return _set(Switch(on=False, by=by or who(), at=time.time()), timeout,
                context or from_process())


def devices_state(context: FleetContext | None = None) -> Report:
    """The switch, and whether each live device reports itself paused (from heartbeats)."""
    context = context or from_process()
    switch = current(context)
    client = context.answering()
    with context.translated():
        beats = _heartbeats(client, context.inventory)
    return Report(switch, [{"device": name, "state": _reported(beat, switch.on), "detail": ""}
                           for name, beat in beats.items()])


def _set(switch: Switch, timeout: float, context: FleetContext) -> Report:
    client = context.answering()
    with context.translated():
        return _record(client, switch, timeout, context)


def _record(client: redis.Redis, switch: Switch, timeout: float, context: FleetContext
            ) -> Report:
    client.set(KILLSWITCH_KEY, switch.dumps())  # first: a worker starting now reads it
    names = list(context.inventory.devices)
    live = live_nodes(client, names)
    replies: dict[str, Any] = {}
    if live:
        answers = context.app.control.broadcast(
            KILLSWITCH_COMMAND, arguments={"on": switch.on, "hard": switch.hard, "at": switch.at},
            destination=list(live.values()), reply=True, timeout=timeout) or []
        replies = {node: reply for answer in answers for node, reply in answer.items()}
    rows = []
    for name in names:
        node = live.get(name)
        reply = replies.get(node) if node else None
        if node is None:
            rows.append({"device": name, "state": "offline",
                         "detail": "reads the switch when it starts"})
        elif not isinstance(reply, dict):
            rows.append({"device": name, "state": "no answer",
                         "detail": f"no reply within {timeout:g}s; its heartbeat brings the "
                                   f"switch within a few seconds"})
        else:
            rows.append({"device": name, "state": "paused" if switch.on else "resumed",
                         "detail": _detail(reply)})
    return Report(switch, rows)


def _detail(reply: dict[str, Any]) -> str:
    parts = []
    if reply.get("terminated"):
        parts.append(f"{reply['terminated']} running task(s) terminated and re-queued")
    if reply.get("left_running"):
        parts.append(f"{reply['left_running']} running task(s) finish (solo/threads pool)")
    elif reply.get("running") and not reply.get("terminated") and reply.get("paused"):
        parts.append(f"{reply['running']} running task(s) finish")
    return "; ".join(parts)


def _heartbeats(client: redis.Redis, inventory: Inventory) -> dict[str, Heartbeat | None]:
    """Each inventory device's latest heartbeat (None when it has none)."""
    names = list(inventory.devices)
    raws = client.mget([heartbeat_key(n) for n in names]) if names else []
    return {n: Heartbeat.loads(raw) if raw else None for n, raw in zip(names, raws, strict=True)}


def _reported(beat: Heartbeat | None, on: bool) -> str:
    if beat is None or not beat.is_fresh(time.time()):
        return "offline"
    return "paused" if beat.paused else "running"
