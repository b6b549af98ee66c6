"""The soak's fault schedule: which fault strikes when, and where, drawn from one seed.

Every ``every_s`` seconds one fault strikes. Each kind holds its device for a while (the fault
itself, then the healing: a relaunch, a rejoin), and no fault strikes a device that is still
held; at most one Redis kill is in flight. The first faults are one of each kind (in an order
the seed picks), so even a short soak sees every kind; the rest are drawn at random among the
kinds that can strike then. Given devices that boot (``booted``), that first reboot strikes one of
them (waiting, as other first faults go, until one is free): even a short soak power-cuts a device
whose unit must bring its worker back. The same seed and fleet give the same schedule.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

KILL_WORKER = "kill_worker"
KILL_REDIS = "kill_redis"
LINK_DOWN = "link_down"
STOP_WORKER = "stop_worker"
REBOOT = "reboot"
KINDS = (KILL_WORKER, KILL_REDIS, LINK_DOWN, STOP_WORKER, REBOOT)

#: how long each kind holds its device (or the broker): the fault, then the time its healing is
#: allowed (a relaunch, a device rejoining) before another fault may strike there
HELD_S = {KILL_WORKER: 20.0 + 20.0, KILL_REDIS: 3.0 + 10.0, LINK_DOWN: 20.0 + 15.0,
          STOP_WORKER: 15.0 + 5.0, REBOOT: 5.0 + 20.0}
#: the faults that need a device with a link of its own (a network namespace)
NEEDS_LINK = frozenset({LINK_DOWN})


@dataclass(frozen=True)
class Fault:
    at_s: float  # seconds after the soak's start
    kind: str
    device: str | None  # None for a Redis kill

    @property
    def until_s(self) -> float:
        return self.at_s + HELD_S[self.kind]


def plan(seed: int, duration_s: float, devices: list[str], linked: list[str],
         every_s: float = 10.0, booted: tuple[str, ...] = ()) -> list[Fault]:
    """The faults of a soak of ``duration_s`` seconds over ``devices`` (``linked``: those whose
    link can be cut; ``booted``: those that boot, the first reboot's), one every ``every_s``
    seconds from ``every_s`` on."""
    rng = random.Random(seed)
    first = list(KINDS)
    rng.shuffle(first)
    faults: list[Fault] = []
    at = every_s
    while at <= duration_s:
        free = [d for d in devices
                if all(f.device != d or f.until_s <= at for f in faults)]
        redis_free = all(f.kind != KILL_REDIS or f.until_s <= at for f in faults)
        first_boot = [d for d in free if d in booted] if REBOOT in first and booted else free
        possible = [k for k in KINDS if _can_strike(k, first_boot if k == REBOOT else free,
                                                    linked, redis_free)]
        wanted = [k for k in first if k in possible]
        if possible:
            kind = wanted[0] if wanted else rng.choice(possible)
            where = [d for d in (first_boot if kind == REBOOT else free)
                     if kind not in NEEDS_LINK or d in linked]
            if kind in first:
                first.remove(kind)
            faults.append(Fault(at, kind, None if kind == KILL_REDIS else rng.choice(where)))
        at += every_s
    return faults


def _can_strike(kind: str, free: list[str], linked: list[str], redis_free: bool) -> bool:
    if kind == KILL_REDIS:
        return redis_free
    if kind in NEEDS_LINK:
        return any(d in linked for d in free)
    return bool(free)
