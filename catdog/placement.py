"""Placement: which device a target with predicates (``cap:camera&mem>=300``) goes to, now.

The producer reads the candidate devices' heartbeats and static facts in one ``MGET``
(:func:`read_facts`), keeps the live ones (a heartbeat within the offline limit) whose facts
satisfy every clause, and pins the call to the least busy of them (running tasks per slot, then
load; a device this process placed on since its last heartbeat counts those too), or for
``all:``/``all`` to every one of them. Shared targets (``cap:``, ``any``) leave out a degraded
device (:mod:`workers.health`), as its worker stops pulling shared work.

No device satisfying them now: when every candidate's static facts fail a clause, it can never
happen (:class:`~catdog.errors.NoRoute`); otherwise the call waits up to ``timeout`` seconds for
one, re-reading every :data:`POLL_S`, then raises :class:`~catdog.errors.NoDeviceNow`. Both name
each device and why. Plain targets never come here (:meth:`catdog.fleet.Fleet.place`).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from catdog.errors import NoDeviceNow, NoRoute
from catdog.inventory import Device, Inventory
from catdog.predicates import shown
from catdog.records import Heartbeat, facts_key, heartbeat_key
from catdog.routing import Route, device_queue
from catdog.targets import Kind, Target

POLL_S = 0.25
#: reads the values of Redis keys (``MGET``)
Read = Callable[[list[str]], list[Any]]


@dataclass(frozen=True)
class Standing:
    """How one device stands for a target now: ``why`` it does not fit ("" when it does)."""

    device: Device
    why: str = ""
    never: bool = False
    beat: Heartbeat | None = None


def candidates(inventory: Inventory, requires: Iterable[str], target: Target) -> list[Device]:
    """The devices the target without its predicates could reach (the route exists already)."""
    needed = set(requires)
    if target.kind is Kind.DEVICE:
        return [inventory.devices[target.name]]
    if target.kind in (Kind.CAPABILITY, Kind.EVERY_WITH):
        needed.add(target.name)
    return inventory.devices_with(needed)


def read_facts(devices: list[Device], read: Read) -> tuple[dict[str, Heartbeat],
                                                           dict[str, dict[str, Any]]]:
    """Each device's heartbeat and static facts (those recorded), in one round trip."""
    names = [d.name for d in devices]
    raw = read([heartbeat_key(n) for n in names] + [facts_key(n) for n in names])
    beats = {n: Heartbeat.loads(r) for n, r in zip(names, raw[:len(names)], strict=True) if r}
    static = {n: json.loads(r) for n, r in zip(names, raw[len(names):], strict=True) if r}
    return beats, static


def stand(device: Device, target: Target, beat: Heartbeat | None, static: dict[str, Any],
          now: float) -> Standing:
    known = {**static, **(beat.facts if beat else {})}
    never = [c for c in target.where if c.never(known)]
    if never:
        return Standing(device, ", ".join(shown(c, known, never=True) for c in never) + " (for good)", True)
    if beat is None:
        return Standing(device, "offline (no heartbeat)")
    if not beat.is_fresh(now):
        return Standing(device, f"offline (last heartbeat {beat.age(now):.0f}s ago)")
    failed = [c for c in target.where if not c.holds(beat.facts)]
    if failed:
        return Standing(device, ", ".join(shown(c, beat.facts) for c in failed), beat=beat)
    if beat.degraded and not target.is_group and target.kind is not Kind.DEVICE:
        return Standing(device, f"degraded: {beat.degraded}", beat=beat)
    return Standing(device, beat=beat)


class Placer:
    """Places calls for one process, counting what it placed since each device's heartbeat."""

    def __init__(self) -> None:
        self._placed: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def place(self, inventory: Inventory, requires: tuple[str, ...], target: Target,
              read: Read, timeout: float | None = None) -> Route:
        devices = candidates(inventory, requires, target)
        deadline = time.monotonic() + (timeout or 0.0)
        while True:
            beats, static = read_facts(devices, read)
            now = time.time()
            standings = [stand(d, target, beats.get(d.name), static.get(d.name, {}), now)
                         for d in devices]
            fit = [s for s in standings if not s.why]
            if fit:
                return self._route(target, fit)
            failures = {s.device.name: s.why for s in standings}
            if all(s.never for s in standings):
                raise NoRoute(f"no device can ever satisfy {str(target)!r}: "
                              + "; ".join(f"{d}: {w}" for d, w in failures.items()),
                              inventory.devices, inventory.capabilities)
            if time.monotonic() + POLL_S > deadline:
                raise NoDeviceNow(str(target), failures)
            time.sleep(POLL_S)

    def _route(self, target: Target, fit: list[Standing]) -> Route:
        if target.is_group:
            return Route(tuple(device_queue(s.device.name) for s in fit), group=True)
        with self._lock:
            best = min(fit, key=self._busy)
            beat = best.beat
            assert beat is not None
            at, count = self._placed.get(best.device.name, (0.0, 0))
            self._placed[best.device.name] = (beat.time, count + 1 if at == beat.time else 1)
        return Route((device_queue(best.device.name),))

    def _busy(self, standing: Standing) -> tuple[bool, float, float, str]:
        beat = standing.beat
        assert beat is not None
        at, count = self._placed.get(standing.device.name, (0.0, 0))
        running = beat.active + (count if at == beat.time else 0)
        return (beat.paused, running / standing.device.concurrency, beat.load or 0.0,
                standing.device.name)


@contextlib.contextmanager
def broker_client() -> Iterator[Any]:
    """A Redis client on a connection of the app's broker pool (the producer's own)."""
    from catdog.application import app

    with app.pool.acquire(block=True) as conn, conn.default_channel.conn_or_acquire() as client:
        yield client


def broker_read(keys: list[str]) -> list[Any]:
    """``MGET`` on the producer's broker connection."""
    with broker_client() as client:
        return list(client.mget(keys))
