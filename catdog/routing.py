"""Routing: which queue a task goes to, and which queues a device's worker consumes.

Queues (all plain Celery/kombu queues on the broker):

- ``catdog.any``                 every worker consumes it: tasks with no target and no requirement;
- ``catdog.device.<name>``       one per device: tasks pinned to that device (``pi4``, ``all:...``);
- ``catdog.cap.<cap>``           one per capability: ``cap:camera`` and ``requires=("camera",)``;
- ``catdog.caps.<a>+<b>``        one per capability *set* that tasks need (``requires=("a", "b")``,
                                 or ``requires=("a",)`` pinned with ``cap:b``), consumed only by
                                 devices that have every capability in it.

Work pulling does the balancing: with prefetch 1 an idle live device takes the next message.

A worker checks each message before it starts (:func:`serves`): one that reached a device lacking
what its task needs (sent by name to the wrong queue, or published by hand) is handed on to the
queue :func:`forward_queue` names, never run there.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import combinations
from typing import Any, cast

from catdog.errors import CatDogError, NoRoute
from catdog.inventory import Device, Inventory
from catdog.targets import Kind, Target

ANY_QUEUE = "catdog.any"


def device_queue(device: str) -> str:
    return f"catdog.device.{device}"


def capability_queue(capabilities: Iterable[str]) -> str:
    """The queue for a set of capabilities; a single one gets its own capability queue.

    >>> capability_queue(["camera"]), capability_queue(["gpio", "camera"])
    ('catdog.cap.camera', 'catdog.caps.camera+gpio')
    """
    caps = sorted(set(capabilities))
    if len(caps) == 1:
        return f"catdog.cap.{caps[0]}"
    return "catdog.caps." + "+".join(caps)


@dataclass(frozen=True)
class Route:
    """Where a call goes: one queue, or one device queue per device for a group."""

    queues: tuple[str, ...]
    group: bool = False

    @property
    def queue(self) -> str:
        return self.queues[0]


def plan(inventory: Inventory, requires: Iterable[str] = (), target: Target | str | None = None
         ) -> Route:
    """Resolve a call's target and requirements against the inventory, or raise NoRoute."""
    needed = frozenset(requires)
    if target is not None and Target.parse(target).kind is Kind.ANY:
        target = None  # any one live device: as if no target were given
    if target is None:
        if not needed:
            return Route((ANY_QUEUE,))
        _devices_having(inventory, needed, f"no device has {_names(needed)}")
        return Route((capability_queue(needed),))
    target = Target.parse(target)
    if target.kind is Kind.DEVICE:
        return Route((device_queue(_device(inventory, target.name, needed).name),))
    if target.kind is Kind.CAPABILITY:
        needed |= {target.name}
        _devices_having(inventory, needed, f"no device has {_names(needed)} (target {target})")
        return Route((capability_queue(needed),))
    if target.kind is Kind.EVERY_WITH:
        needed |= {target.name}
    devices = _devices_having(inventory, needed, f"no device has {_names(needed)} (target {target})")
    return Route(tuple(device_queue(d.name) for d in devices), group=True)


def serves(device: Device, requires: Iterable[str] = (), target: Target | str | None = None
           ) -> bool:
    """Whether ``device`` may run a task needing ``requires``, pinned to ``target`` (a group's
    member, ``all:X``, is one device having X). A target that does not parse is served: the task
    fails with the target's own error wherever it runs."""
    needed = set(requires)
    if target is not None:
        try:
            target = Target.parse(target)
        except CatDogError:
            return device.has(needed)
        if target.kind is Kind.DEVICE and target.name != device.name:
            return False
        if target.kind in (Kind.CAPABILITY, Kind.EVERY_WITH):
            needed.add(target.name)
    return device.has(needed)


def forward_queue(inventory: Inventory, requires: Iterable[str] = (),
                  target: Target | str | None = None) -> str:
    """The queue to hand a misplaced message on to (one queue: a group member that reached the
    wrong device goes to one device having what it needs); raises NoRoute when none can."""
    needed = set(requires)
    if target is not None:
        target = Target.parse(target)
        if target.kind is Kind.EVERY_WITH:
            needed.add(target.name)
        if target.is_group:
            target = None
    return plan(inventory, needed, target).queue


def fleet_queues(inventory: Inventory) -> list[str]:
    """Every queue a call can be routed to with ``inventory``: ``catdog.any``, each device's, each
    capability's, and each set of capabilities some device has (a task can only be routed to a
    set one device has all of). A device with more than :data:`MAX_SET_CAPABILITIES` adds its
    pairs only. What ``celery purge`` empties."""
    queues = {ANY_QUEUE}
    for device in inventory.devices.values():
        queues.add(device_queue(device.name))
        queues.update(capability_queue([c]) for c in device.capabilities)
        queues.update(capability_queue(s) for s in _sets(device.capabilities))
    return sorted(queues)


MAX_SET_CAPABILITIES = 10


def declared_queues(inventory: Inventory) -> list[Any]:
    """:func:`fleet_queues` as Celery queues (``task_queues``), each with its own direct
    exchange, as Celery would create it on first use. Workers still consume exactly the queues
    given with ``--queues``."""
    from kombu import Exchange, Queue

    return [Queue(q, Exchange(q), q) for q in fleet_queues(inventory)]


def _sets(capabilities: Iterable[str]) -> Iterator[tuple[str, ...]]:
    caps = sorted(set(capabilities))
    largest = len(caps) if len(caps) <= MAX_SET_CAPABILITIES else 2
    for size in range(2, largest + 1):
        yield from combinations(caps, size)


def queue_keys(queue: str) -> list[str]:
    """The Redis lists of ``queue``: kombu keeps one per priority step (:mod:`catdog.settings`)."""
    from catdog import settings

    options = settings.broker_transport_options
    sep, steps = str(options["sep"]), cast(list[int], options["priority_steps"])
    return [queue] + [f"{queue}{sep}{p}" for p in steps if p]


def worker_queues(device: Device, declared: Iterable[Iterable[str]] = ()) -> list[str]:
    """Exactly the queues ``device``'s worker consumes.

    ``declared`` are the ``requires`` of the tasks the worker knows. A device consumes the queue of
    every set it satisfies among those sets and those sets plus one of its own capabilities (the
    sets ``.on("cap:X")`` can produce), so no multi-capability task can reach a device lacking one.
    """
    own = set(device.capabilities)
    queues = [device_queue(device.name), ANY_QUEUE]
    queues += [capability_queue([c]) for c in device.capabilities]
    sets: set[frozenset[str]] = set()
    for requires in declared:
        base = frozenset(requires)
        if not base <= own:
            continue
        sets.update(base | {c} for c in own)
        sets.add(base)
    queues += sorted(capability_queue(s) for s in sets if len(s) > 1)
    return queues


def _device(inventory: Inventory, name: str, needed: frozenset[str]) -> Device:
    device = inventory.devices.get(name)
    if device is None:
        raise NoRoute(f"no device named {name!r}", inventory.devices, inventory.capabilities)
    if not device.has(needed):
        missing = _names(needed - set(device.capabilities))
        raise NoRoute(f"device {name!r} lacks {missing}, which the task requires",
                      inventory.devices, inventory.capabilities)
    return device


def _devices_having(inventory: Inventory, needed: frozenset[str], why: str) -> list[Device]:
    devices = inventory.devices_with(needed)
    if not devices:
        raise NoRoute(why, inventory.devices, inventory.capabilities)
    return devices


def _names(capabilities: Iterable[str]) -> str:
    caps = sorted(capabilities)
    return "capability " + caps[0] if len(caps) == 1 else "all of capabilities " + ", ".join(caps)
