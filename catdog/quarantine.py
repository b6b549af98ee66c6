"""The quarantine of poison tasks: messages whose worker was lost ``max_deliveries`` times.

At least once means a task whose worker dies runs again. A task that itself kills its worker
(out of memory, a crash in a C extension, ``os._exit``) would then run again for ever, taking
down one device after another. So workers count, per message, the deliveries whose worker was
lost (:mod:`workers.quarantine`), and once a message has lost ``max_deliveries`` workers it is
held here instead of running again. A task that fails by raising is not counted: Celery's own
retries handle it.

Shared by the workers (which write entries) and the coordinator (``fab quarantine``, ``fab
status``), in Redis beside the broker's own keys:

- ``catdog:delivery:<tag>``: one message's delivery record (JSON: the losses so far and the
  delivery now running, if any), kept a week at most and removed once the message settles
  (:mod:`catdog.records`, with ``max_deliveries``' default and check: what every worker needs
  for each task; this module is needed only to hold a message, and on the coordinator);
- ``catdog:quarantine``: a hash, task id -> :class:`Entry` (JSON), held until requeued or
  dropped. An entry keeps the very message as the broker stored it, so :func:`requeue` sends it
  again, unchanged but for a new delivery tag (its count starts again from nothing).
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from catdog.errors import CatDogError, UsageError
from catdog.records import DEFAULT_MAX_DELIVERIES, WORKER_LOST, delivery_key
from catdog.redis_scripts import RING_LUA

__all__ = ["DEFAULT_MAX_DELIVERIES", "QUARANTINE_KEY", "Entry", "Loss", "NotQuarantined",
           "Quarantined", "delivery_key", "drop", "entries", "hold", "requeue"]

log = logging.getLogger(__name__)

QUARANTINE_KEY = "catdog:quarantine"
#: every CatDog queue's Redis lists start so (:mod:`catdog.routing`): a requeue goes nowhere else
QUEUE_PREFIX = "catdog."


class Quarantined(CatDogError):
    """The result of a task held in quarantine (its caller's ``r.get()`` raises it)."""


class NotQuarantined(UsageError):
    """``--requeue`` or ``--drop`` of an id the quarantine does not hold."""


@dataclass
class Loss:
    """One delivery whose worker was lost: where, when, and how it ended (None: not known)."""

    device: str
    node: str = ""
    pid: int | None = None
    started: float | None = None
    lost: float | None = None
    how: str = WORKER_LOST
    exit_status: int | None = None
    signal: int | None = None
    #: the kernel's OOM killer: True, False, or None where the device does not let us read it
    oom: bool | None = None

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Loss:
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})


@dataclass
class Entry:
    """A quarantined message: what is known about it, and the message itself."""

    id: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    max_deliveries: int
    losses: list[Loss]
    held_at: float
    held_by: str
    #: the Redis lists the message is sent back to (its queue, at its priority)
    keys: list[str]
    queue: str = ""
    #: the message as the broker stored it (kombu's JSON payload)
    message: dict[str, Any] = field(default_factory=dict)

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), default=repr)

    @classmethod
    def loads(cls, data: str | bytes) -> Entry:
        raw: dict[str, Any] = json.loads(data)
        raw["losses"] = [Loss.of(loss) for loss in raw.get("losses") or []]
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})

    def summary(self) -> dict[str, Any]:
        """What ``fab quarantine --json`` shows (everything but the raw message)."""
        shown = asdict(self)
        del shown["message"]
        return shown

    @property
    def devices(self) -> list[str]:
        """Each device that lost it, once, in the order they did."""
        return list(dict.fromkeys(loss.device for loss in self.losses))


def hold(client: Any, entry: Entry) -> None:
    """Write ``entry`` (a message is acknowledged only after this returned)."""
    client.hset(QUARANTINE_KEY, entry.id, entry.dumps())


def _readable(raw_entries: list[bytes]) -> list[Entry]:
    """The entries that parse (one written by hand, or by another version, is left out)."""
    found = []
    for raw in raw_entries:
        try:
            found.append(Entry.loads(raw))
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("a quarantine entry that does not read as one is left out: %s", exc)
    return found


def entries(client: Any) -> list[Entry]:
    """Every held message, oldest first."""
    return sorted(_readable(client.hvals(QUARANTINE_KEY)), key=lambda e: (e.held_at, e.id))


def count_by_device(client: Any) -> dict[str, int]:
    """How many held messages each device lost at least once."""
    return held_by_device(client.hvals(QUARANTINE_KEY))


def held_by_device(raw_entries: list[bytes]) -> dict[str, int]:
    """:func:`count_by_device` of the entries as read (``HVALS``: ``fab status`` pipelines it)."""
    counts: dict[str, int] = {}
    for entry in _readable(raw_entries):
        for device in entry.devices:
            counts[device] = counts.get(device, 0) + 1
    return counts


def _entry(client: Any, task_id: str) -> Entry:
    raw = client.hget(QUARANTINE_KEY, task_id)
    if raw is None:
        held = sorted(k.decode() if isinstance(k, bytes) else str(k)
                      for k in client.hkeys(QUARANTINE_KEY))
        raise NotQuarantined(f"no quarantined message has id {task_id!r}; `fab quarantine` "
                             f"lists the held ones (ids: {', '.join(held) or 'none held'})")
    return Entry.loads(raw)


#: KEYS: the quarantine hash, the delivery record, the lists to push to; ARGV: id, message.
#: Pushes only if this call removed the entry (a requeue and a drop at once: one wins).
_REQUEUE = RING_LUA + """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2])
for i = 3, #KEYS do redis.call('LPUSH', KEYS[i], ARGV[2]); ring(KEYS[i]) end
return 1
"""


def requeue(client: Any, task_id: str) -> Entry:
    """Send the held message ``task_id`` again (a new delivery tag: its count starts from
    nothing), and release its entry; returns the entry."""
    entry = _entry(client, task_id)
    strange = [k for k in entry.keys if not k.startswith(QUEUE_PREFIX)]
    if strange or not entry.keys:
        raise UsageError(f"quarantined message {task_id!r} names no CatDog queue to go back to "
                         f"({', '.join(strange) or 'none'}); `fab quarantine --drop {task_id}` "
                         f"forgets it, and the task can be called anew")
    message = json.loads(json.dumps(entry.message))
    properties = message.setdefault("properties", {})
    old_tag = str(properties.get("delivery_tag", ""))
    properties["delivery_tag"] = str(uuid.uuid4())
    properties.get("delivery_info", {}).pop("redelivered", None)
    (message.get("headers") or {}).pop("redelivered", None)
    keys = [QUARANTINE_KEY, delivery_key(old_tag), *entry.keys]
    if not client.eval(_REQUEUE, len(keys), *keys, task_id, json.dumps(message)):
        _entry(client, task_id)  # gone meanwhile: said as for an unknown id
    return entry


def drop(client: Any, task_id: str) -> Entry:
    """Forget the held message ``task_id`` for good; returns its entry."""
    entry = _entry(client, task_id)
    if not client.hdel(QUARANTINE_KEY, task_id):
        _entry(client, task_id)
    return entry
