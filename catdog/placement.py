"""Placement: which device a target with predicates (``cap:camera&mem>=300``) goes to, now.

The producer reads the candidate devices' live records (:class:`~catdog.records.Live`, written
with each heartbeat) in one ``MGET``, and their static facts once per worker start
(:meth:`Placer.read`); it keeps the live ones (a heartbeat within the offline limit) whose facts
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
from catdog.records import Live, facts_key, live_key
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
    beat: Live | None = None


def candidates(inventory: Inventory, requires: Iterable[str], target: Target) -> list[Device]:
    """The devices the target without its predicates could reach (the route exists already)."""
    needed = set(requires)
    if target.kind is Kind.DEVICE:
        return [inventory.devices[target.name]]
    if target.kind in (Kind.CAPABILITY, Kind.EVERY_WITH):
        needed.add(target.name)
    return inventory.devices_with(needed)


def stand(device: Device, target: Target, live: Live | None, static: dict[str, Any],
          now: float) -> Standing:
    known = {**static, **(live.facts if live else {})}
    never = [c for c in target.where if c.never(known)]
    if never:
        why = ", ".join(shown(c, known, never=True) for c in never)
        return Standing(device, f"{why} (for good)", True)
    if live is None:
        return Standing(device, "offline (no heartbeat)")
    if not live.is_fresh(now):
        return Standing(device, f"offline (last heartbeat {live.age(now):.0f}s ago)")
    failed = [c for c in target.where if not c.holds(known)]
    if failed:
        return Standing(device, ", ".join(shown(c, known) for c in failed), beat=live)
    if live.degraded and not target.is_group and target.kind is not Kind.DEVICE:
        return Standing(device, f"degraded: {live.degraded}", beat=live)
    return Standing(device, beat=live)


class Placer:
    """Places calls for one process, counting what it placed since each device's heartbeat."""

    def __init__(self) -> None:
        self._placed: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()
        #: each device's static facts, as the worker that started at ``started`` recorded them
        self._static: dict[str, dict[str, Any]] = {}

    def read(self, devices: list[Device], read: Read) -> tuple[dict[str, Live],
                                                                 dict[str, dict[str, Any]]]:
        """Each device's live record, and its static facts: kept from an earlier call while
        the same worker runs, else read (a second round trip, at a worker's first call)."""
        names = [d.name for d in devices]
        found = [(n, r) for n, r in zip(names, read([live_key(n) for n in names]), strict=True)
                 if r]
        lives = dict(zip((n for n, _ in found), Live.loads_many([r for _, r in found]),
                         strict=True))
        kept = self._static

        def unknown(name: str) -> bool:
            if name in lives:  # kept facts are this worker's if it started when they say
                return bool(kept.get(name, {}).get("started") != lives[name].started)
            return name not in kept

        stale = [n for n in names if unknown(n)]
        if stale:  # (an offline device's, read once: it has not started since)
            for name, raw in zip(stale, read([facts_key(n) for n in stale]), strict=True):
                kept[name] = json.loads(raw) if raw else {}
        return lives, self._static

    def place(self, inventory: Inventory, requires: tuple[str, ...], target: Target,
              read: Read, timeout: float | None = None) -> Route:
        devices = candidates(inventory, requires, target)
        deadline = time.monotonic() + (timeout or 0.0)
        while True:
            lives, static = self.read(devices, read)
            now = time.time()
            standings = [stand(d, target, lives.get(d.name), static.get(d.name, {}), now)
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
        return (beat.paused, running / standing.device.concurrency, beat.facts.get("load") or 0.0,
                standing.device.name)


_client: dict[str, Any] = {}
_client_lock = threading.Lock()


def producer_client() -> Any:
    """This process's own Redis client on the app's broker, made once (a client per call, as
    kombu's channel makes one, would cost half a millisecond each time). The app's pool is
    asked first, which starts the embedded Redis where one serves."""
    with _client_lock:
        if "redis" not in _client:
            from catdog import broker
            from catdog.application import app

            with app.pool.acquire(block=True):
                pass
            _client["redis"] = broker.connect(str(app.conf.broker_url))
        return _client["redis"]


@contextlib.contextmanager
def broker_client() -> Iterator[Any]:
    """The producer's Redis client (:func:`producer_client`), translating a broker that does
    not answer into one line (:class:`~catdog.errors.BrokerUnreachable`)."""
    from catdog import broker
    from catdog.application import app

    client = producer_client()
    with broker.translated(str(app.conf.broker_url)):
        yield client


def broker_read(keys: list[str]) -> list[Any]:
    """``MGET`` on the producer's broker connection."""
    with broker_client() as client:
        return list(client.mget(keys))
