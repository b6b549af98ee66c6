"""``fab status``: one row per device from the workers' heartbeat records and the queues.

Reads a handful of Redis keys in one pipelined round trip; asks no worker anything and opens no
SSH connection (local devices' tmux panes are listed in one tmux call, to report a worker that
died). Workers refresh their heartbeat every 2 s; a device whose heartbeat is older than 8 s is
offline (Celery's monitoring guide uses 2 minutes for its own heartbeats).

``quarantined``: how many messages held in the quarantine the device lost at least once
(:mod:`catdog.quarantine`; None on a stopped fleet).

Without a client (a stopped fleet: its embedded Redis is not running) it reads nothing from Redis
and starts nothing: every device is offline, its backlog unknown (None).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis

from catdog.inventory import Device, Inventory
from catdog.quarantine import QUARANTINE_KEY, held_by_device
from catdog.records import AUTOSTART_KEY, Heartbeat, heartbeat_key
from catdog.resources import resource_key
from catdog.routing import device_queue, queue_keys
from ops import ownership
from ops.session import session_name
from ops.tmux import Pane, Tmux

OFFLINE, IDLE, BUSY, PAUSED, DEGRADED = "offline", "idle", "busy", "paused", "degraded"
FLEET_STOPPED = "fleet stopped (embedded Redis not running)"


def status(inventory: Inventory, devices: Sequence[Device], client: redis.Redis | None,
           now: float | None = None) -> list[dict[str, Any]]:
    """A row per device; ``client`` None: the fleet is stopped (nothing read from Redis)."""
    now = time.time() if now is None else now
    tmux = Tmux(inventory.tmux_socket)
    panes = tmux.panes() if any(d.is_local for d in devices) else {}
    foreign = {name: why for name, pane in panes.items()
               if (why := ownership.clash(inventory, tmux, name, pane))}
    if client is None:  # `quarantined` and `enabled` unknown: they are kept in Redis
        return [{**_row(d, None, None, now, panes, foreign, stopped=True), "quarantined": None,
                 "enabled": None, "resources": {}}
                for d in devices]
    pipe = client.pipeline(transaction=False)
    for d in devices:
        pipe.get(heartbeat_key(d.name))
        for key in queue_keys(device_queue(d.name)):
            pipe.llen(key)
    pipe.hvals(QUARANTINE_KEY)
    pipe.hkeys(AUTOSTART_KEY)  # the devices `fab enable` set up (:mod:`ops.autostart`)
    replies = pipe.execute()
    enabled = {k.decode() if isinstance(k, bytes) else str(k) for k in replies.pop()}
    held = held_by_device(replies.pop())
    per = 1 + len(queue_keys("q"))
    resources = _resources_held(client, devices, now)
    return [{**_row(d, replies[i * per], sum(replies[i * per + 1:(i + 1) * per]), now, panes,
                    foreign), "quarantined": held.get(d.name, 0), "enabled": d.name in enabled,
             "resources": resources.get(d.name, {})}
            for i, d in enumerate(devices)]


def _resources_held(client: redis.Redis, devices: Sequence[Device], now: float
                    ) -> dict[str, dict[str, dict[str, int]]]:
    """Units of each declared resource held now (leases not run out), by device; no round
    trip for a fleet that declares none."""
    wanted = [(d.name, name, count) for d in devices for name, count in d.resources.items()]
    if not wanted:
        return {}
    pipe = client.pipeline(transaction=False)
    for device, name, _ in wanted:
        pipe.zcount(resource_key(device, name), now, "+inf")
    found: dict[str, dict[str, dict[str, int]]] = {}
    for (device, name, count), held in zip(wanted, pipe.execute(), strict=True):
        found.setdefault(device, {})[name] = {"held": int(held), "of": count}
    return found


def _row(device: Device, raw: bytes | None, backlog: int | None, now: float,
         panes: dict[str, Pane], foreign: dict[str, str], stopped: bool = False
         ) -> dict[str, Any]:
    beat = Heartbeat.loads(raw) if raw else None
    age = round(beat.age(now), 1) if beat else None
    state, reason = _stopped(device, panes) if stopped else _state(device, beat, now, panes)
    if device.is_local and session_name(device.name) in foreign:  # another inventory's worker
        beat, age, state, reason = None, None, OFFLINE, foreign[session_name(device.name)]
    live = beat is not None and state != OFFLINE
    return {
        "device": device.name, "state": state, "reason": reason,
        "capabilities": list(device.capabilities),
        "active": beat.active if beat and state != OFFLINE else 0,
        "active_tasks": beat.active_names if beat and state != OFFLINE else [],
        "done": beat.done if beat else 0, "failed": beat.failed if beat else 0,
        "heartbeat_age_s": age, "backlog": backlog,
        "nodename": beat.nodename if beat else None,
        "load": beat.load if live and beat else None,
        "rss_mb": beat.rss_mb if live and beat else None,
        "mem_available_mb": beat.mem_available_mb if live and beat else None,
        "release": beat.release if live and beat else None,
        "facts": beat.facts if beat else {},
        "degraded": beat.degraded if live and beat else "",
    }


def _stopped(device: Device, panes: dict[str, Pane]) -> tuple[str, str]:
    pane = panes.get(session_name(device.name)) if device.is_local else None
    if pane is not None and not pane.dead:
        return OFFLINE, ("worker running, but the embedded Redis is not: `fab launch` starts it "
                         "again (the worker reconnects)")
    if pane is not None:
        return OFFLINE, f"worker exited with status {pane.dead_status}; {FLEET_STOPPED}"
    return OFFLINE, FLEET_STOPPED


def _state(device: Device, beat: Heartbeat | None, now: float, panes: dict[str, Pane]
           ) -> tuple[str, str]:
    if device.is_local:
        pane = panes.get(session_name(device.name))
        if pane is None:
            return OFFLINE, "not launched"
        if pane.dead:
            return OFFLINE, f"worker exited with status {pane.dead_status}"
    if beat is None:
        return OFFLINE, "no heartbeat"
    if not beat.is_fresh(now):
        return OFFLINE, f"last heartbeat {beat.age(now):.0f}s ago"
    running = f"running {', '.join(beat.active_names)}" if beat.active else ""
    if beat.paused:
        return PAUSED, "kill switch on" + (f"; still {running}" if running else "")
    if beat.degraded:  # (:mod:`workers.health`): takes only work pinned to it
        return DEGRADED, beat.degraded + (f"; {running}" if running else "")
    return (BUSY, running) if beat.active else (IDLE, "")
